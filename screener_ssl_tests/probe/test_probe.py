"""The frozen-encoder probe end to end on a tiny synthetic market, and the raw_window baseline backbone."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from screener_ssl.data import dataset as ds
from screener_ssl.data.synthetic import SyntheticMarketConfig
from screener_ssl.data.windows import WindowSpec, split_calendar_positions
from screener_ssl.probe.head import HEAD_FILE, ProbeHead
from screener_ssl.probe.plots import PNG_SIGNATURE
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.positions import event_prefix_decisions
from screener_ssl.probe.probe import (
    METRICS_FILE,
    PLOT_FILES,
    PREDICTIONS_FILE,
    embed_decisions,
    run_probe,
    write_probe_artifacts,
)
from screener_ssl.ssl.backbones import BackboneConfig, SSLBackbone, build_backbone
from screener_ssl.ssl.backbones.raw_window import RawWindowBackbone
from screener_ssl.ssl.encoder import Encoder, load_encoder

CHANNELS = 6
SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
# Small but fast: fewer bootstrap resamples and stability windows than the defaults.
FAST = dict(n_boot=20, stability_windows=16, stability_augs=3)


class NoiseBackbone(SSLBackbone):
    """Seeded random features, independent of the input: the probe must find nothing in them."""

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__(input_channels, config)
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape[0], x.shape[1], self.embed_dim, generator=self.gen)


def raw_encoder(patch_len: int = 4) -> Encoder:
    # lags = 8 * patch_len; 4 gives 32 = window_max: the whole censored window.
    backbone = build_backbone(BackboneConfig(kind="raw_window", patch_len=patch_len), CHANNELS)
    return Encoder(backbone, normalization="none")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> ds.Dataset:
    root = tmp_path_factory.mktemp("probe_market")
    market = SyntheticMarketConfig(n_tickers=24, n_days=500, seed=0, difficulty=0.2)
    ds.ingest_bars(root, "synthetic", market)
    ds.build_features(root, SPEC.volume_lookback)
    ds.build_windowed_dataset(root, SPEC)
    ds.build_labels(root, "synthetic", SPEC)
    return ds.load_dataset(root)


@pytest.fixture(scope="module")
def raw_result(dataset):
    logs: list[str] = []
    result = run_probe(raw_encoder(), dataset, ProbeConfig(**FAST), log=logs.append)
    return result, logs


def macro_prevalence(metrics: dict) -> float:
    return float(np.mean([metrics["prevalence"]["test"][p] for p in metrics["macro"]["patterns"]]))


# --------------------------------------------------------------------------- raw_window backbone


def test_raw_window_shape_and_content() -> None:
    backbone = build_backbone(BackboneConfig(kind="raw_window", patch_len=2, embed_dim=8), input_channels=3)
    assert isinstance(backbone, RawWindowBackbone) and backbone.lags == 16
    assert backbone.embed_dim == 16 * 2 * 3  # the true width, not config.embed_dim
    assert not list(backbone.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 20, 3, generator=gen)
    observed = torch.rand(4, 20, 3, generator=gen) > 0.3
    out = backbone(x, observed)
    assert out.shape == (4, 20, backbone.embed_dim)
    inputs = SSLBackbone.model_inputs(x, observed)  # [B, T, 2C]
    # The last step is the last 16 steps' inputs, oldest first.
    torch.testing.assert_close(out[:, -1], inputs[:, -16:].reshape(4, -1), rtol=0, atol=0)
    # Step 5 has only 6 steps behind it: zero padding on the left, then those steps.
    step5 = out[:, 5].reshape(4, 16, 6)
    assert (step5[:, :10] == 0).all()
    torch.testing.assert_close(step5[:, 10:], inputs[:, :6], rtol=0, atol=0)


@settings(max_examples=25, deadline=None)
@given(t=st.integers(0, 23), steps=st.integers(1, 24), seed=st.integers(0, 10_000))
def test_raw_window_is_causal(t: int, steps: int, seed: int) -> None:
    t = min(t, steps - 1)
    backbone = build_backbone(BackboneConfig(kind="raw_window", patch_len=1), input_channels=CHANNELS)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, steps, CHANNELS, generator=gen)
    observed = torch.rand(2, steps, CHANNELS, generator=gen) > 0.2
    future = torch.arange(steps).view(1, -1, 1) > t
    x_new = torch.where(future, 10.0 * torch.randn(x.shape, generator=gen), x)
    observed_new = torch.where(future, ~observed, observed)
    before, after = backbone(x, observed), backbone(x_new, observed_new)
    assert torch.equal(before[:, : t + 1], after[:, : t + 1])
    if t + 1 < steps:  # the perturbation is visible later, so the check above could fail
        assert not torch.equal(before[:, t + 1 :], after[:, t + 1 :])


def test_raw_window_encoder_saves_and_loads(tmp_path) -> None:
    encoder = raw_encoder()
    encoder.save(tmp_path)
    loaded = load_encoder(tmp_path)
    X = np.random.default_rng(0).normal(size=(3, 32, CHANNELS)).astype(np.float32)
    np.testing.assert_array_equal(loaded.encode(X), encoder.encode(X))
    assert loaded.embed_dim == 32 * 2 * CHANNELS


# --------------------------------------------------------------------------- the probe


def test_raw_features_probe_beats_prevalence(raw_result) -> None:
    result, logs = raw_result
    metrics = result.metrics
    assert metrics["macro"]["auprc"] > 2 * macro_prevalence(metrics)
    assert metrics["n_windows"] == {"train": 5952, "val": 1512, "test": 2400}  # every window, under the limits
    assert metrics["config"]["encoder"]["embed_dim"] == 384
    assert any("macro AUPRC" in line for line in logs) and any("train windows" in line for line in logs)
    assert set(metrics["timings"]) >= {"embed_train", "fit_head", "val", "test", "events", "report", "total"}


def test_noise_encoder_probe_stays_near_prevalence(dataset, raw_result) -> None:
    encoder = Encoder(NoiseBackbone(CHANNELS, BackboneConfig(embed_dim=16)), normalization="none")
    metrics = run_probe(encoder, dataset, ProbeConfig(**FAST), log=lambda _: None).metrics
    assert metrics["macro"]["auprc"] < 3 * macro_prevalence(metrics)
    assert metrics["macro"]["auprc"] < raw_result[0].metrics["macro"]["auprc"] / 1.5


def test_thresholds_reach_the_target_precision_on_val(raw_result) -> None:
    result, _ = raw_result
    head, metrics = result.head, result.metrics
    val = result.predictions.filter(pl.col("split") == "val")
    finite = [p for p in head.patterns if not math.isnan(head.thresholds[p])]
    assert finite, "no pattern reached the target precision: the check below would be vacuous"
    for p in head.patterns:
        report = metrics["head"]["val_thresholds"][p]
        if p not in finite:
            assert not report["achievable"] and metrics["head"]["thresholds"][p] is None
            continue
        alert = val.get_column(f"score_{p}").to_numpy() >= head.thresholds[p]
        labels = val.get_column(f"label_{p}").to_numpy()
        assert alert.any() and labels[alert].mean() >= head.target_precision
        assert report["achievable"] and report["threshold"] == head.thresholds[p]


def test_predictions_frame_matches_the_index(dataset, raw_result) -> None:
    result, _ = raw_result
    pred = result.predictions
    patterns = dataset.patterns
    expected = ["ticker", "date", "split", "decision_row"] + [
        c for p in patterns for c in (f"label_{p}", f"score_{p}")
    ]
    assert pred.columns == expected
    assert pred.schema["date"] == pl.Date and pred.schema["decision_row"] == pl.Int64
    assert pred.get_column("split").value_counts().sort("split").rows() == [("test", 2400), ("val", 1512)]
    test_pos = dataset.index.rows_of("test")
    test = pred.filter(pl.col("split") == "test")
    np.testing.assert_array_equal(test.get_column("decision_row").to_numpy(), dataset.index.decision_row[test_pos])
    np.testing.assert_array_equal(
        test.select([f"label_{p}" for p in patterns]).to_numpy(), dataset.labels[test_pos]
    )
    tickers = np.asarray(dataset.store.tickers)[dataset.index.ticker_id[test_pos]]
    assert test.get_column("ticker").to_list() == tickers.tolist()


def test_run_probe_is_deterministic_given_the_seed(dataset) -> None:
    config = ProbeConfig(
        head="mlp", mlp_hidden=8, max_train_windows=1500, max_val_windows=800, max_test_windows=900,
        train_windows_per_dim=0, **FAST
    )
    # The last 8 bars only (D = 96): determinism needs no accuracy, and the mlp fits 4x faster.
    a = run_probe(raw_encoder(patch_len=1), dataset, config, log=lambda _: None)
    b = run_probe(raw_encoder(patch_len=1), dataset, config, log=lambda _: None)
    strip = lambda m: json.dumps({k: v for k, v in m.items() if k != "timings"}, sort_keys=True)  # noqa: E731
    assert strip(a.metrics) == strip(b.metrics)
    assert a.predictions.equals(b.predictions)
    assert a.metrics["n_windows"] == {"train": 1500, "val": 800, "test": 900}
    c = run_probe(raw_encoder(patch_len=1), dataset, config.model_copy(update={"seed": 1}), log=lambda _: None)
    assert strip(c.metrics) != strip(a.metrics)


def test_artifacts_are_written_and_valid(dataset, raw_result, tmp_path) -> None:
    result, _ = raw_result
    paths = write_probe_artifacts(result, tmp_path / "run")
    assert set(paths) == {METRICS_FILE, PREDICTIONS_FILE, HEAD_FILE, *PLOT_FILES.values()}
    for name in PLOT_FILES.values():
        assert paths[name].read_bytes().startswith(PNG_SIGNATURE)
    metrics = json.loads(paths[METRICS_FILE].read_text())
    assert metrics["macro"]["auprc"] == pytest.approx(result.metrics["macro"]["auprc"])
    assert set(metrics) >= {"config", "per_pattern", "macro", "n_windows", "timings"}
    pred = pl.read_parquet(paths[PREDICTIONS_FILE])
    assert pred.equals(result.predictions)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
    # The saved head re-scores val windows exactly as the probe did.
    head = ProbeHead.load(tmp_path / "run")
    val_pos = dataset.index.rows_of("val")[:50]
    emb = embed_decisions(raw_encoder(), dataset, dataset.index.decision_row[val_pos], dataset.ticker_start(val_pos))
    scores = pred.filter(pl.col("split") == "val").head(50).select([f"score_{p}" for p in head.patterns]).to_numpy()
    # Equal up to float rounding: the probe embedded these windows in bigger batches, and the
    # backbone's convolutions block their sums by batch size (oneDNN), so the last bits may differ.
    np.testing.assert_allclose(head.predict_proba(emb), scores, rtol=1e-9, atol=1e-12)


def test_event_prefix_decisions_stay_in_the_event_and_its_ticker(dataset, raw_result) -> None:
    events = event_prefix_decisions(dataset, (0.2, 0.4, 0.6, 0.8, 1.0))
    rows = events.decision_row  # [E, F]
    assert rows.shape[0] > 0 and rows.shape[1] == 5
    assert (rows <= events.end_row[:, None] + 1).all()
    np.testing.assert_array_equal(rows[:, -1], events.end_row + 1)  # the full pattern is first visible at end + 1
    assert (rows > events.start_row[:, None]).all() and (np.diff(rows, axis=1) >= 0).all()
    offsets = dataset.store.offsets
    assert (rows >= offsets[events.ticker_id][:, None]).all()
    assert (rows < offsets[events.ticker_id + 1][:, None]).all()
    day_split = split_calendar_positions(dataset.index.calendar.shape[0], dataset.spec)
    days = np.searchsorted(dataset.index.calendar, dataset.store.dates[rows])
    assert (day_split[days] == 2).all()
    assert raw_result[0].metrics["events"]["test"] == rows.shape[0]
    curve = raw_result[0].metrics["per_pattern"][dataset.patterns[0]]["earliest_detection"]
    assert sorted(curve) == ["0.2", "0.4", "0.6", "0.8", "1.0"]


def test_bad_inputs_are_clear_errors(dataset) -> None:
    wrong = Encoder(build_backbone(BackboneConfig(kind="raw_window", patch_len=1), 4), normalization="none")
    with pytest.raises(ValueError, match="4 input channels.*6 features"):
        run_probe(wrong, dataset, ProbeConfig(**FAST))
    unlabeled = ds.Dataset(
        store=dataset.store, index=dataset.index, spec=dataset.spec, info=dataset.info,
        labels=None, patterns=(), events=None,
    )
    with pytest.raises(ValueError, match="labels"):
        run_probe(raw_encoder(), unlabeled, ProbeConfig(**FAST))
    with pytest.raises(ValueError, match="prefix_fracs"):
        ProbeConfig(prefix_fracs=(0.5, 0.2))


def test_raw_features_probe_matches_an_independent_val_tuned_logistic_regression(dataset, raw_result) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    metrics = raw_result[0].metrics
    assert metrics["n_windows"]["train"] == len(dataset.index.rows_of("train"))  # the same rows: every window
    grid = metrics["config"]["probe"]["C_grid"]
    encoder = raw_encoder()

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        pos = dataset.index.rows_of(split)
        emb = embed_decisions(encoder, dataset, dataset.index.decision_row[pos], dataset.ticker_start(pos))
        return emb, dataset.labels[pos]

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = features("train"), features("val"), features("test")
    test_ap = []
    for p, name in enumerate(dataset.patterns):
        if not y_test[:, p].any():
            continue
        best = max(
            (make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x_train, y_train[:, p])
             for c in grid),
            key=lambda model: average_precision_score(y_val[:, p], model.decision_function(x_val)),
        )
        test_ap.append(average_precision_score(y_test[:, p], best.decision_function(x_test)))
        assert metrics["head"]["fit_info"]["C"][name] in grid
    reference = float(np.mean(test_ap))
    macro = metrics["macro"]
    assert macro["ci_low"] <= reference <= macro["ci_high"], (reference, macro["auprc"], macro["ci_low"])
    assert metrics["bootstrap"]["scheme"] == "ticker_time_block" and metrics["bootstrap"]["block_days"] == 20
    assert set(metrics["val"]["per_pattern"]) == set(dataset.patterns) and metrics["val"]["macro_auprc"] > 0


def test_reference_encoders_are_probed_beside_the_run_and_written_to_their_own_dir(dataset, tmp_path) -> None:
    from screener_ssl.runs.probe import probe_reference_encoders
    from screener_ssl_tests.ssl.test_chart_distill import small_objective

    objective = small_objective()
    objective.eval()
    objective.save_artifacts(tmp_path)  # the chart teacher beside the (here untrained) student
    macro = probe_reference_encoders(tmp_path, "chart_distill", dataset, ProbeConfig(**FAST), log=lambda _m: None)
    assert list(macro) == ["teacher"] and 0.0 <= macro["teacher"]["auprc"] <= 1.0
    written = json.loads((tmp_path / "teacher" / METRICS_FILE).read_text())
    assert written["macro"]["auprc"] == macro["teacher"]["auprc"]
    assert probe_reference_encoders(tmp_path, "masked_recon", dataset, ProbeConfig(**FAST)) == {}
