"""The probe's train matrix stays inside its memory budget: the per-dimension rule cannot lift
the train window count past it, and a width the budget cannot hold at all is refused up front."""

from __future__ import annotations

import pytest

from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.positions import MIN_TRAIN_WINDOWS, train_window_count


def test_the_per_dimension_rule_lifts_the_cap_inside_the_budget():
    config = ProbeConfig(max_train_windows=1_000, train_windows_per_dim=20)
    assert train_window_count(config, 64, log=lambda _m: None) == 1_280  # 20 x 64 > 1,000
    assert train_window_count(config, 16, log=lambda _m: None) == 1_000


def test_a_wide_embedding_is_capped_at_the_budget_and_says_so():
    # MiniRocket's width: 20 x 9,996 rows would be 15 GiB of float32.
    messages = []
    config = ProbeConfig(max_train_windows=40_000, train_windows_per_dim=20, train_matrix_budget_gib=2.0)
    n = train_window_count(config, 9_996, log=messages.append)
    assert n == (2 * 2**30) // (4 * 9_996)
    assert n * 9_996 * 4 <= 2 * 2**30
    assert len(messages) == 1 and "capped" in messages[0] and "train_matrix_budget_gib=2.0" in messages[0]
    # The budget binds on max_train_windows too.
    tight = ProbeConfig(max_train_windows=40_000, train_windows_per_dim=0, train_matrix_budget_gib=0.01)
    assert train_window_count(tight, 256, log=lambda _m: None) * 256 * 4 <= 0.01 * 2**30


def test_a_budget_too_small_for_any_matrix_is_a_clear_error():
    config = ProbeConfig(train_matrix_budget_gib=1e-6)  # 1 KiB
    with pytest.raises(ValueError, match=f"{MIN_TRAIN_WINDOWS} windows x D=9996 .* train_matrix_budget_gib"):
        train_window_count(config, 9_996)


def test_run_probe_embeds_no_more_train_windows_than_the_budget_holds(tmp_path):
    """End to end: a wide embedding under a small budget is capped, not held whole."""
    import numpy as np

    from screener_ssl.data import dataset as ds
    from screener_ssl.data.synthetic import SyntheticMarketConfig
    from screener_ssl.data.windows import WindowSpec
    from screener_ssl.probe.probe import run_probe
    from screener_ssl.ssl.backbones import BackboneConfig, build_backbone
    from screener_ssl.ssl.encoder import Encoder

    spec = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
    ds.ingest_bars(tmp_path, "synthetic", SyntheticMarketConfig(n_tickers=10, n_days=400, seed=0, difficulty=0.2))
    ds.build_features(tmp_path, spec.volume_lookback)
    ds.build_windowed_dataset(tmp_path, spec)
    ds.build_labels(tmp_path, "synthetic", spec)
    dataset = ds.load_dataset(tmp_path)
    encoder = Encoder(build_backbone(BackboneConfig(kind="raw_window", patch_len=4), dataset.spec.n_features),
                      normalization="none")
    dim = encoder.embed_dim
    budget_rows = 300
    config = ProbeConfig(max_train_windows=10, train_windows_per_dim=50, n_boot=5, stability_windows=0,
                         train_matrix_budget_gib=budget_rows * 4 * dim / 2**30)
    assert 50 * dim > budget_rows and dataset.index.counts()["train"] > budget_rows  # the rule would lift it past
    logs: list[str] = []
    result = run_probe(encoder, dataset, config, log=logs.append)
    assert result.metrics["n_windows"]["train"] <= budget_rows
    assert any("capped" in m for m in logs)
    assert np.isfinite(result.metrics["macro"]["auprc"])


def _peak_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_head_never_copies_a_wide_matrix_whole_to_float64(monkeypatch):
    """Scoring and fitting a wide head allocate blocks, not float64 copies of the whole matrix
    (MiniRocket's 60,000 x 9,996 test windows would be 4.8 GB per copy); the scores are unchanged."""
    import numpy as np

    from screener_ssl.probe import head as head_module
    from screener_ssl.probe.head_fit import fit_probe_head

    rng = np.random.default_rng(0)
    n, d = 12_000, 300
    emb = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random((n, 2)) < 0.2).astype(np.uint8)
    head = fit_probe_head(emb[:2_000], y[:2_000], ("a", "b"), C=0.1)
    float64_copy = n * d * 8
    monkeypatch.setattr(head_module, "SCORE_BLOCK_ROWS", 1_000)
    peak = _peak_bytes(lambda: head.predict_proba(emb))
    assert peak < 0.5 * float64_copy, f"scoring held {peak / 2**20:.1f} MiB, a float64 copy is {float64_copy / 2**20:.1f} MiB"
    # Blockwise is bit for bit what one block gives.
    blockwise = head.predict_proba(emb)
    monkeypatch.setattr(head_module, "SCORE_BLOCK_ROWS", n)
    np.testing.assert_array_equal(blockwise, head.predict_proba(emb))
    # The fit holds one float64 copy of the train matrix (standardized in place), not two.
    peak_fit = _peak_bytes(lambda: fit_probe_head(emb, y, ("a", "b"), C=0.1))
    assert peak_fit < 2.5 * float64_copy, f"fitting held {peak_fit / 2**20:.1f} MiB for a {float64_copy / 2**20:.1f} MiB copy"
