"""The MiniRocket baseline: causal by the same end-to-end check as every encoder, probed unchanged, chunked, saved."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from screener_ssl.data import dataset as ds
from screener_ssl.data.synthetic import SyntheticMarketConfig
from screener_ssl.data.windows import WindowSpec, gather_windows
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.probe import run_probe
from screener_ssl.ssl.checks import no_lookahead_report
from screener_ssl.ssl.encoder import load_encoder
from screener_ssl.ssl.minirocket import (
    MiniRocketConfig,
    MiniRocketEncoder,
    fit_minirocket_on_dataset,
    load_minirocket,
)
from screener_ssl_tests.conftest import random_walk_bars

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
CHANNELS = 6
SMALL = MiniRocketConfig(n_kernels=168, fit_windows=200, chunk_size=64, seed=0)


def _windows(n: int = 64, seed: int = 0):
    bars = random_walk_bars(n_tickers=2, n_days=200, seed=seed)
    from screener_ssl.data.features import compute_shape_features

    feats = compute_shape_features(bars.filter(pl.col("ticker") == "T000"), volume_lookback=SPEC.volume_lookback)
    rows = np.linspace(SPEC.min_history, feats.values.shape[0] - 1, n).astype(np.int64)
    return gather_windows(
        feats.values, np.zeros(n, dtype=np.int64), rows, SPEC.window_max, open_known=SPEC.open_known_mask
    )


@pytest.fixture(scope="module")
def fitted() -> MiniRocketEncoder:
    x, observed = _windows(96)
    return MiniRocketEncoder(SMALL, CHANNELS).fit_prepared(x, observed)


def test_features_ignore_the_future_and_the_decision_bars_unknown_fields(fitted):
    # Bars -> features -> censored window -> MiniRocket: perturbing bars after d and bar d's
    # close/high/low/volume must leave every feature bit-identical.
    report = no_lookahead_report(fitted, random_walk_bars(n_tickers=3, n_days=120), SPEC, n_windows=12)
    assert report["passed"] and report["windows_checked"] == 12


def test_the_check_catches_a_decision_bar_leak(fitted):
    leaky = SPEC.model_copy(update={"open_known_features": ("gap", "log_return")})
    report = no_lookahead_report(fitted, random_walk_bars(n_tickers=3, n_days=120), leaky, n_windows=12)
    assert not report["passed"] and report["max_abs_embedding_change"] > 0


def test_features_are_float32_chunk_invariant_and_seeded(fitted):
    x, observed = _windows(50, seed=1)
    whole = fitted.encode_prepared(x, observed)
    assert whole.dtype == np.float32 and whole.shape == (50, fitted.embed_dim)
    assert fitted.embed_dim == 168  # a multiple of 84 kernels, one PPV feature each
    chunked = MiniRocketEncoder(SMALL.model_copy(update={"chunk_size": 7}), CHANNELS)
    chunked.fit_prepared(*_windows(96))
    np.testing.assert_array_equal(chunked.encode_prepared(x, observed), whole)
    assert fitted.cost["windows_transformed"] >= 50
    assert fitted.cost["peak_rss_mb"] > 0 and fitted.n_parameters > 0


def test_mask_channels_are_part_of_the_input(fitted):
    x, observed = _windows(8)
    no_mask = MiniRocketEncoder(SMALL.model_copy(update={"include_mask": False}), CHANNELS)
    no_mask.fit_prepared(*_windows(96))
    assert no_mask.embed_dim == fitted.embed_dim
    assert not np.array_equal(no_mask.encode_prepared(x, observed), fitted.encode_prepared(x, observed))


def test_save_and_load_round_trip(fitted, tmp_path):
    x, observed = _windows(16)
    fitted.save(tmp_path)
    spec = json.loads((tmp_path / "encoder.json").read_text())
    assert spec["kind"] == "minirocket" and spec["embed_dim"] == fitted.embed_dim
    for loaded in (load_minirocket(tmp_path), load_encoder(tmp_path)):
        assert isinstance(loaded, MiniRocketEncoder)
        np.testing.assert_array_equal(loaded.encode_prepared(x, observed), fitted.encode_prepared(x, observed))


def test_bad_inputs_are_clear_errors(fitted):
    x, observed = _windows(4)
    with pytest.raises(ValueError, match="per-timestep"):
        fitted.encode_prepared(x, observed, per_timestep=True)
    with pytest.raises(ValueError, match=r"\[N, T, 6\]"):
        fitted.encode_prepared(x[:, :, :5], observed[:, :, :5])
    with pytest.raises(ValueError, match=">= 9 steps"):
        fitted.encode_prepared(x[:, -8:], observed[:, -8:])
    with pytest.raises(RuntimeError, match="not fitted"):
        MiniRocketEncoder(SMALL, CHANNELS).encode_prepared(x, observed)
    with pytest.raises(ValueError, match="pooling"):
        fitted.with_pooling("max")


def test_probe_scores_minirocket_unchanged_and_records_its_cost(tmp_path):
    root = tmp_path / "market"
    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=16, n_days=400, seed=0, difficulty=0.2))
    ds.build_features(root, SPEC.volume_lookback)
    ds.build_windowed_dataset(root, SPEC)
    ds.build_labels(root, "synthetic", SPEC)
    dataset = ds.load_dataset(root)
    encoder = fit_minirocket_on_dataset(dataset, SMALL)
    assert encoder.cost["fit_windows"] == min(SMALL.fit_windows, len(dataset.index.rows_of("train")))
    result = run_probe(encoder, dataset, ProbeConfig(n_boot=10, stability_windows=8, stability_augs=2), log=lambda _: None)
    metrics = result.metrics
    assert metrics["config"]["encoder"]["kind"] == "minirocket"
    assert metrics["config"]["encoder"]["n_kernels"] == SMALL.n_kernels
    assert np.isfinite(metrics["macro"]["auprc"])
    cost = metrics["cost"]
    assert cost["embed_dim"] == encoder.embed_dim and "embed" in metrics["timings"]
    # train + val + test + event prefixes, every one through the same gather
    n = metrics["n_windows"]
    assert cost["windows_embedded"] >= n["train"] + n["val"] + n["test"]


def test_pipeline_fits_minirocket_as_a_run_with_its_cost(tmp_path):
    from screener_ssl.runs.pretrain import model_type, pretrain_partition
    from screener_ssl.runs.sweep import load_sweep

    root = tmp_path / "market"
    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=12, n_days=300, seed=1, difficulty=0.2))
    ds.build_features(root, SPEC.volume_lookback)
    ds.build_windowed_dataset(root, SPEC)
    dataset = ds.load_dataset(root, with_labels=False)
    base = load_sweep().point("minirocket", "base")
    point = base.model_copy(update={"objective_config": {"n_kernels": 168, "fit_windows": 100}})
    assert base.objective_config["n_kernels"] == 840  # the demo size is what the sweep file says
    outcome = pretrain_partition(dataset, point, root, log=lambda _: None)
    assert model_type(point) == "ssl_tcn_minirocket" and (outcome.run_dir / "minirocket.npz").exists()
    assert not (outcome.run_dir / "minirocket.pkl").exists()
    config = json.loads((outcome.run_dir / "pretrain_config.json").read_text())
    cost = config["cost"]
    assert cost["windows_seen"] == 100
    assert cost["minirocket"]["fit_windows"] == 100 and cost["minirocket"]["peak_rss_mb"] > 0
    assert config["objective_config"]["n_kernels"] == 168 and config["objective_config"]["seed"] == point.train.seed
    loaded = load_encoder(outcome.run_dir)
    assert isinstance(loaded, MiniRocketEncoder) and loaded.embed_dim == 168
    assert not outcome.collapse["effective_rank"] < 2
