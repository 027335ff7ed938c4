"""The real asset graph on a tiny synthetic market: data assets, one partition end to end, index, schedule, lineage."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from screener_ssl.definitions import build_definitions
from screener_ssl.defs.resources import ScreenerSettings

DATA_ASSETS = ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]
PARTITION_ASSETS = ["ssl_schema", "pretrained_encoder", "probe_metrics"]


def _defs(**kw) -> dg.Definitions:
    return build_definitions(ScreenerSettings.from_env(), **kw)


def _materialize(defs, instance, selection, partition=None):
    result = dg.materialize(
        list(defs.assets), selection=selection, partition_key=partition, instance=instance, resources=defs.resources
    )
    assert result.success
    return result


def test_definitions_load_with_the_documented_assets_and_partition_keys(tiny_env):
    defs = _defs()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(DATA_ASSETS + PARTITION_ASSETS + ["finetuned_classifier", "experiment_index"]) <= keys
    partitions = graph.get(dg.AssetKey("pretrained_encoder")).partitions_def
    assert "masked_recon|base" in partitions.get_partition_keys()
    assert defs.resolve_job_def("sweep_partition_job") is not None


def test_partitions_are_exactly_the_sweeps_points_and_follow_the_sweep_file(tiny_env):
    from screener_ssl.defs.partitions import split_partition_key

    sweep = ScreenerSettings.from_env().load_sweep()
    keys = _defs().resolve_asset_graph().get(dg.AssetKey("probe_metrics")).partitions_def.get_partition_keys()
    assert sorted(keys) == sorted(f"{o}|{v}" for o, v in sweep.points) and len(keys) == len(sweep.points) == 4
    assert "vicreg|full" not in keys  # no product of objectives x variants
    assert split_partition_key("vicreg|base") == ("vicreg", "base")
    with pytest.raises(ValueError, match="objective\\|variant"):
        split_partition_key("vicreg")
    path = Path(tiny_env["SCREENER_SSL_SWEEP"])
    path.write_text(path.read_text().replace("vicreg:\n    variants: {base: {}}", "vicreg:\n    variants: {base: {}, wide: {}}"))
    keys = _defs().resolve_asset_graph().get(dg.AssetKey("probe_metrics")).partitions_def.get_partition_keys()
    assert "vicreg|wide" in keys and len(keys) == 5


def test_data_assets_materialize_and_checks_pass(tiny_env):
    defs = _defs()
    result = _materialize(defs, dg.DagsterInstance.ephemeral(), DATA_ASSETS)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"bars_valid": True}
    meta = result.asset_materializations_for_node("ohlcv_bars")[0].metadata
    assert meta["input_rows"].value == meta["clean_rows"].value == 10 * 420
    windows = result.asset_materializations_for_node("windowed_dataset")[0].metadata["windows"].value
    assert set(windows) == {"train", "val", "test"} and min(windows.values()) > 0
    root = Path(tiny_env["SCREENER_SSL_DATA_DIR"])
    assert (root / "warehouse.duckdb").exists() and (root / "bars" / "quarantine.parquet").exists()


def test_bad_bars_are_quarantined_and_counted(tiny_env, tmp_path, monkeypatch):
    from screener_ssl.data.synthetic import SyntheticMarketConfig, generate_market

    bars = generate_market(SyntheticMarketConfig(n_tickers=10, n_days=420, seed=1)).bars
    broken = bars.with_row_index("i").with_columns(
        high=pl.when(pl.col("i") == 5).then(pl.col("low") * 0.5).otherwise(pl.col("high")),
        close=pl.when(pl.col("i") == 7).then(float("nan")).otherwise(pl.col("close")),
    ).drop("i")
    path = tmp_path / "bars.parquet"
    broken.write_parquet(path)
    monkeypatch.setenv("SCREENER_SSL_BARS", str(path))
    defs = _defs()
    result = _materialize(defs, dg.DagsterInstance.ephemeral(), ["ohlcv_bars"])
    meta = result.asset_materializations_for_node("ohlcv_bars")[0].metadata
    assert meta["quarantined_rows"].value == 2
    assert meta["rejected_by_reason"].value["high_below_low"] == 1
    assert meta["rejected_by_reason"].value["null_or_non_finite"] == 1
    quarantine = pl.read_parquet(Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "bars" / "quarantine.parquet")
    assert quarantine.height == 2


def test_one_partition_end_to_end_through_probe_and_index(tiny_env):
    defs = _defs()
    instance = dg.DagsterInstance.ephemeral()
    _materialize(defs, instance, DATA_ASSETS)
    result = _materialize(defs, instance, PARTITION_ASSETS, "masked_recon|base")
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["no_lookahead"] and checks["schema_matches_dataset"] and checks["schema_matches"]
    run_dir = Path(result.asset_materializations_for_node("pretrained_encoder")[0].metadata["run_dir"].value)
    for name in ("run_meta.json", "experiment.json", "schema.json", "encoder.pt", "pretrain_config.json",
                 "probe_metrics.json", "probe_predictions.parquet"):
        assert (run_dir / name).exists(), name
    assert run_dir.parent.name == "_pretrain" and run_dir.parent.parent.name == "ssl_tcn_masked_recon"
    _materialize(defs, instance, PARTITION_ASSETS, "raw_features|base")
    index_result = _materialize(defs, instance, ["experiment_index"])
    models = Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "models"
    index = pl.read_parquet(models / "_index.parquet")
    assert index.height == 2
    assert {"probe_metrics.macro.auprc", "pretrain_config.metrics.final_loss", "schema.window_spec.window_max"} <= set(index.columns)
    board = index_result.asset_materializations_for_node("experiment_index")[0].metadata["leaderboard"].value
    assert "masked_recon" in board and "raw_features" in board
    scan = _materialize(defs, instance, ["market_scan"]).asset_materializations_for_node("market_scan")[0].metadata
    assert scan["tickers_scored"].value == 10 and scan["skipped"].value == 0
    scores = pl.read_parquet(Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "scans" / "market_scan_latest.parquet")
    assert scores.height == 10 * 7 and set(scores.columns) >= {"ticker", "date", "pattern", "score", "alert"}


def test_undefined_variant_fails_with_a_clear_error(tiny_env):
    # vicreg has no 'full' variant, so no such partition exists: Dagster refuses it before any run.
    defs = _defs()
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(Exception, match="partition with key `vicreg\\|full`"):
        dg.materialize(list(defs.assets), selection=["ssl_schema"], partition_key="vicreg|full",
                       instance=instance, resources=defs.resources)


def test_nightly_schedule_requests_every_partition_then_the_index(tiny_env):
    defs = _defs(nightly_variants=["base"])
    schedule = defs.resolve_schedule_def("nightly_sweep")
    assert schedule.cron_schedule == "0 2 * * *"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, repository_def=defs.get_repository_def(),
            scheduled_execution_time=datetime.datetime(2026, 11, 27, 2, tzinfo=datetime.timezone.utc),
        )
        requests = list(schedule.evaluate_tick(context).run_requests)
    keys = [r.partition_key for r in requests[:-1]]
    assert keys == ["masked_recon|base", "vicreg|base", "raw_features|base"]
    assert requests[0].run_key == "20261127:masked_recon|base"
    # Each run observes the sweep file first, so its assets record the sweep point they ran.
    assert all([k.to_user_string() for k in r.asset_selection] == ["sweep_file", *PARTITION_ASSETS] for r in requests[:-1])
    assert requests[-1].asset_selection == [dg.AssetKey("experiment_index")] and requests[-1].partition_key is None
    custom = _defs(nightly_cron="30 3 * * 1-5").resolve_schedule_def("nightly_sweep")
    assert custom.cron_schedule == "30 3 * * 1-5"


def _stale(defs, instance, key: str, partition: str | None = None):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    # The resolver the UI uses to show "unsynced".
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(dg.AssetKey(key), partition)


def test_lineage_marks_downstream_unsynced_after_spec_or_code_change(tiny_env, monkeypatch):
    from dagster._core.definitions.data_version import StaleStatus

    with dg.instance_for_test() as instance:
        defs = _defs()
        _materialize(defs, instance, DATA_ASSETS)
        _materialize(defs, instance, ["ssl_schema", "pretrained_encoder"], "masked_recon|base")
        assert _stale(defs, instance, "pretrained_encoder", "masked_recon|base") == StaleStatus.FRESH

        # An objective's code changes -> its code version changes -> the encoder is unsynced.
        import screener_ssl.defs.ssl.assets as ssl_assets

        monkeypatch.setattr(ssl_assets, "SSL_CODE_VERSION", "changed-objective-code")
        changed = _defs()
        assert _stale(changed, instance, "pretrained_encoder", "masked_recon|base") == StaleStatus.STALE
        monkeypatch.undo()
        for key, value in tiny_env.items():
            monkeypatch.setenv(key, value)

        # The window spec changes -> windowed_dataset gets a new data version -> downstream unsynced.
        sweep = Path(tiny_env["SCREENER_SSL_SWEEP"])
        sweep.write_text(sweep.read_text().replace("label_horizon: 5", "label_horizon: 3"))
        defs = _defs()
        _materialize(defs, instance, ["windowed_dataset"])
        assert _stale(defs, instance, "pretrained_encoder", "masked_recon|base") == StaleStatus.STALE
        assert _stale(defs, instance, "pattern_labels") == StaleStatus.STALE


def test_cli_materializes_probe_metrics_for_a_partition(tiny_env):
    defs = _defs()
    _materialize(defs, dg.DagsterInstance.ephemeral(), DATA_ASSETS)
    env = {**os.environ, **tiny_env}
    base = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "screener_ssl.definitions"]
    for selection in ("ssl_schema,pretrained_encoder", "probe_metrics"):
        proc = subprocess.run(
            [*base, "--select", selection, "--partition", "masked_recon|base"],
            env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "models" / "ssl_tcn_masked_recon" / "_pretrain").iterdir())
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "probe_metrics.json").read_text())
    assert 0.0 <= metrics["macro"]["auprc"] <= 1.0


def test_a_failing_blocking_check_stops_its_partitions_downstream(tiny_env, monkeypatch):
    import screener_ssl.defs.ssl.assets as ssl_assets

    monkeypatch.setattr(ssl_assets, "no_lookahead_report", lambda *a, **k: {"passed": False, "max_abs_diff": 1.0})
    defs = _defs()
    instance = dg.DagsterInstance.ephemeral()
    _materialize(defs, instance, DATA_ASSETS)
    result = dg.materialize(
        list(defs.assets), selection=["ssl_schema", "pretrained_encoder", "probe_metrics"],
        partition_key="raw_features|base", instance=instance, resources=defs.resources, raise_on_error=False,
    )
    assert not result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["no_lookahead"] is False
    assert result.asset_materializations_for_node("pretrained_encoder")
    assert not result.asset_materializations_for_node("probe_metrics")
