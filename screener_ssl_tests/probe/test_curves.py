"""Budget curves end to end on a tiny market: a trained run keeps its encoder snapshots, the probe step
scores each on the main probe's rows, the index carries the curve and the leaderboard reads it."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch

from screener_ssl.data import dataset as ds
from screener_ssl.data.windows import WindowSpec
from screener_ssl.probe.curves import (
    CURVE_KEY,
    PLOT_FILE,
    STILL_RISING_TOLERANCE,
    budget_curve,
    last_rise,
    light_probe,
    probe_rows,
    record_budget_curve,
    still_rising,
)
from screener_ssl.probe.plots import PNG_SIGNATURE
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.probe import METRICS_FILE, run_probe, write_probe_artifacts
from screener_ssl.runs.pretrain import pretrain_partition
from screener_ssl.runs.sweep import SweepPoint
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig
from screener_ssl.ssl.checks import no_lookahead_report
from screener_ssl.ssl.encoder import load_encoder
from screener_ssl.ssl.snapshots import CURVE_DIR, load_snapshot, read_manifest, snapshot_encoders
from screener_ssl.ssl.trainer import TrainConfig
from screener_ssl.tracking.index import build_index
from screener_ssl.tracking.leaderboard import format_leaderboard, leaderboard, leaderboard_records
from screener_ssl_tests.markets import synthetic_dataset

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
SMALL = BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2)
PROBE = ProbeConfig(max_train_windows=600, max_val_windows=400, max_test_windows=400, n_boot=5,
                    stability_windows=0, C_grid=(0.1, 1.0))
QUIET = lambda _m: None  # noqa: E731


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve_market")
    return root, synthetic_dataset(root, SPEC, n_tickers=12, n_days=400)


def _point(objective: str, steps: int = 10, **train) -> SweepPoint:
    return SweepPoint(
        objective=objective, variant="tiny", backbone=SMALL,
        train=TrainConfig(steps=steps, batch_size=16, threads=1, log_every=50, checkpoint_every=4, **train),
        augment=AugmentConfig(), objective_config={}, probe=PROBE.model_dump(mode="json"),
    )


@pytest.fixture(scope="module")
def runs(market):
    root, dataset = market
    return {name: pretrain_partition(dataset, _point(name), root, log=QUIET)
            for name in ("masked_recon", "supervised", "random_init")}


def test_trained_runs_keep_snapshots_at_the_curve_steps_and_fixed_encoders_none(market, runs):
    root, _ = market
    for name in ("masked_recon", "supervised"):
        run_dir = runs[name].run_dir
        entries = read_manifest(run_dir)
        assert [(e["step"], e["windows_seen"]) for e in entries] == [(1, 16), (3, 48), (10, 160)]
        assert all((run_dir / CURVE_DIR / e["file"]).is_file() for e in entries)
        # The last snapshot is the run's encoder; an early one is not (training moved it).
        final = load_encoder(run_dir).backbone.state_dict()
        last, first = load_snapshot(run_dir, entries[-1]), load_snapshot(run_dir, entries[0])
        assert all(torch.equal(last[k], v) for k, v in final.items())
        assert not all(torch.equal(first[k], v) for k, v in final.items())
    assert read_manifest(runs["random_init"].run_dir) == []
    assert not list((root / "checkpoints").glob("*.curve"))  # moved into the run dirs, nothing left behind
    assert _point("vicreg", curve_fracs=()).train.curve_fracs == ()


def test_snapshots_are_causal_encoders_like_the_final_one(runs):
    bars = ds.load_clean_bars(runs["masked_recon"].run_dir.parents[3])
    for name in ("masked_recon", "supervised"):
        run_dir = runs[name].run_dir
        final = load_encoder(run_dir)
        snapshots = snapshot_encoders(run_dir, final)
        assert sorted(snapshots) == [1, 3, 10]
        for step, snapshot in snapshots.items():
            assert snapshot.normalization == final.normalization and snapshot.pooling == final.pooling
            report = no_lookahead_report(snapshot, bars, SPEC, n_windows=8)
            assert report["windows_checked"] > 0 and report["passed"], (name, step, report)


def test_curve_is_recorded_and_its_last_point_is_the_main_probe(market, runs):
    _, dataset = market
    run_dir = runs["masked_recon"].run_dir
    encoder = load_encoder(run_dir)
    result = run_probe(encoder, dataset, PROBE, log=QUIET)
    png = record_budget_curve(result, run_dir, encoder, dataset, PROBE, log=QUIET)
    write_probe_artifacts(result, run_dir)
    assert png.startswith(PNG_SIGNATURE) and (run_dir / PLOT_FILE).read_bytes() == png
    curve = json.loads((run_dir / METRICS_FILE).read_text())[CURVE_KEY]
    assert [p["step"] for p in curve] == [1, 3, 10] and [p["windows_seen"] for p in curve] == [16, 48, 160]
    assert [p["source"] for p in curve] == ["light_probe", "light_probe", "probe"]
    assert curve[-1]["val_macro_auprc"] == result.metrics["val"]["macro_auprc"]
    assert curve[-1]["test_macro_auprc"] == result.metrics["macro"]["auprc"]
    assert all(0.0 < p["val_macro_auprc"] <= 1.0 and 0.0 < p["test_macro_auprc"] <= 1.0 for p in curve)
    # The light probe scores the main probe's rows with its head: on the final encoder it gives the main
    # probe's val and test macro AUPRC (so an early point is comparable with the last).
    rows = probe_rows(dataset, PROBE, encoder.embed_dim)
    main = pl.read_parquet(run_dir / "probe_predictions.parquet")
    assert np.array_equal(np.sort(dataset.index.decision_row[rows.test]),
                          np.sort(main.filter(pl.col("split") == "test").get_column("decision_row").to_numpy()))
    light = light_probe(encoder, dataset, PROBE, rows)
    assert light["val_macro_auprc"] == pytest.approx(result.metrics["val"]["macro_auprc"], abs=1e-9)
    assert light["test_macro_auprc"] == pytest.approx(result.metrics["macro"]["auprc"], abs=1e-9)
    # Without the main probe's metrics every snapshot is probed, the last one giving the same numbers.
    again = budget_curve(run_dir, encoder, dataset, PROBE, log=QUIET)
    assert again[-1]["source"] == "light_probe"
    assert again[-1]["val_macro_auprc"] == pytest.approx(curve[-1]["val_macro_auprc"], abs=1e-9)
    assert again[0]["val_macro_auprc"] == curve[0]["val_macro_auprc"]  # seeded: the same every time
    # A fixed encoder has no curve.
    fixed = load_encoder(runs["random_init"].run_dir)
    assert record_budget_curve(run_probe(fixed, dataset, PROBE, log=QUIET), runs["random_init"].run_dir, fixed,
                               dataset, PROBE, log=QUIET) is None


def test_still_rising_rule():
    curve = [{"step": s, "val_macro_auprc": v} for s, v in ((10, 0.10), (30, 0.20), (100, 0.2049))]
    assert last_rise(curve) == pytest.approx(0.0049)
    assert still_rising(last_rise(curve)) == "no"
    assert still_rising(STILL_RISING_TOLERANCE + 1e-6) == "yes" and still_rising(STILL_RISING_TOLERANCE) == "no"
    assert still_rising(-0.02) == "no"
    assert last_rise(json.dumps(list(reversed(curve)))) == pytest.approx(0.0049)  # ordered by step
    assert last_rise(curve[:1]) is None and last_rise(None) is None and still_rising(None) is None


def _curve(values):
    return json.dumps([{"step": s, "windows_seen": 64 * s, "val_macro_auprc": v, "test_macro_auprc": v - 0.01}
                       for s, v in zip((30, 90, 300), values)])


def test_leaderboard_still_rising_on_a_constructed_index(tmp_path):
    rows = []
    # objective, variant, seed, val curve (last = the run's val AUPRC); None = a fixed encoder
    spec = [
        ("vicreg", "base-s0", 0, (0.10, 0.15, 0.170)),   # rises 0.020 and 0.010: mean 0.015 -> yes
        ("vicreg", "base-s1", 1, (0.10, 0.16, 0.170)),
        ("byol", "base", 0, (0.10, 0.20, 0.203)),        # rises 0.003 -> no
        ("cpc", "base", 0, (0.30, 0.25, 0.20)),          # falls -> no
        ("random_init", "base", 0, None),
    ]
    for i, (objective, variant, seed, curve) in enumerate(spec):
        val = curve[-1] if curve else 0.05
        row = {
            "model_type": objective, "run_id": f"r{i}", "run_dir": str(tmp_path / f"r{i}"),
            "experiment.objective": objective, "experiment.variant": variant, "experiment.backbone": "tcn",
            "run_meta.seed": seed, "probe_metrics.macro.auprc": val, "probe_metrics.val.macro_auprc": val,
        }
        if curve:
            row["probe_metrics.budget_curve"] = _curve(curve)
        rows.append(row)
    board = leaderboard(pl.DataFrame(rows), baselines={"random_init"}, n_boot=10)
    by = {r["objective"]: r for r in board.iter_rows(named=True)}
    assert by["vicreg"]["curve_rise"] == pytest.approx(0.015) and by["vicreg"]["still_rising"] == "yes"
    assert by["byol"]["curve_rise"] == pytest.approx(0.003) and by["byol"]["still_rising"] == "no"
    assert by["cpc"]["still_rising"] == "no"
    assert by["random_init"]["still_rising"] is None and by["random_init"]["budget_curve"] is None
    mean = json.loads(by["vicreg"]["budget_curve"])  # the seed-mean curve the sweep plot draws
    assert [p["windows_seen"] for p in mean] == [1920, 5760, 19200]
    assert [round(p["val_macro_auprc"], 6) for p in mean] == [0.10, 0.155, 0.17]
    records = {r["objective"]: r for r in leaderboard_records(board)}
    assert records["vicreg"]["still_rising"] == "yes" and records["random_init"]["still_rising"] is None
    text = format_leaderboard(board)
    assert "rising" in text.splitlines()[0]
    assert any(line.split()[1] == "vicreg" and " yes " in line for line in text.splitlines()[2:])


def test_the_index_carries_the_curve_for_the_leaderboard(market, runs):
    root, dataset = market
    run_dir = runs["supervised"].run_dir
    encoder = load_encoder(run_dir)
    result = run_probe(encoder, dataset, PROBE, log=QUIET)
    record_budget_curve(result, run_dir, encoder, dataset, PROBE, log=QUIET)
    write_probe_artifacts(result, run_dir)
    index = build_index(root / "models")
    row = index.filter(pl.col("run_dir") == str(run_dir)).row(0, named=True)
    curve = json.loads(row[f"probe_metrics.{CURVE_KEY}"])
    assert [p["step"] for p in curve] == [1, 3, 10]
    board = leaderboard(index, n_boot=10)
    supervised = board.filter(pl.col("objective") == "supervised").row(0, named=True)
    rise = curve[-1]["val_macro_auprc"] - curve[-2]["val_macro_auprc"]
    assert math.isclose(supervised["curve_rise"], rise)
    assert supervised["still_rising"] == ("yes" if rise > STILL_RISING_TOLERANCE else "no")
