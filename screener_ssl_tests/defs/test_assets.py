"""The real asset graph on a tiny synthetic market: data assets, one partition end to end, index, schedule, lineage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl_tests.defs.project import load_defs

DATA_ASSETS = ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]
PARTITION_ASSETS = ["ssl_schema", "pretrained_encoder", "probe_metrics"]
# What one probe materialization may add to the event log: numbers, a table, paths, a small preview per plot.
MAX_PROBE_METADATA_BYTES = 64_000


def _defs(**kw) -> dg.Definitions:
    return load_defs(**kw)


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


def test_the_warehouse_resource_is_a_duckdb_resource_on_the_data_dirs_warehouse(tiny_env):
    from dagster_duckdb import DuckDBResource

    from screener_ssl.data.dataset import WAREHOUSE

    warehouse = _defs().resources["warehouse"]
    assert isinstance(warehouse, DuckDBResource)
    db = Path(tiny_env["SCREENER_SSL_DATA_DIR"]).resolve() / WAREHOUSE
    assert Path(warehouse.database) == db
    with warehouse.get_connection() as con:
        query = "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        assert con.execute(query).fetchone()[0] == str(db)


def test_partitions_are_exactly_the_sweeps_points_and_follow_the_sweep_file(tiny_env):
    from screener_ssl.defs.partitions import split_partition_key

    sweep = ScreenerSettings.from_env().load_sweep()
    keys = _defs().resolve_asset_graph().get(dg.AssetKey("probe_metrics")).partitions_def.get_partition_keys()
    assert sorted(keys) == sorted(f"{o}|{v}" for o, v in sweep.points) and len(keys) == len(sweep.points) == 4
    assert "vicreg|full" not in keys  # no product of objectives x variants
    # The finetuned classifier and its job: only the partitions whose objective has weights to finetune.
    defs = _defs()
    finetuned = defs.resolve_asset_graph().get(dg.AssetKey("finetuned_classifier")).partitions_def.get_partition_keys()
    assert finetuned == [k for k in keys if not k.startswith("raw_features|")] and len(finetuned) == 3
    assert defs.resolve_job_def("finetune_partition_job").partitions_def.get_partition_keys() == finetuned
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
    data = _materialize(defs, instance, DATA_ASSETS)
    _assert_tables_described(data)
    result = _materialize(defs, instance, PARTITION_ASSETS, "masked_recon|base")
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["no_lookahead"] and checks["schema_matches_dataset"] and checks["schema_matches"]
    lookahead = next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_lookahead")
    assert lookahead.metadata["snapshots_checked"].value == 3  # the budget curve's snapshots are checked too
    assert {e.partition for e in result.get_asset_check_evaluations()} == {"masked_recon|base"}
    _assert_probe_metadata_small_with_plots_as_files(result.asset_materializations_for_node("probe_metrics")[0])
    run_dir = Path(result.asset_materializations_for_node("pretrained_encoder")[0].metadata["run_dir"].value)
    for name in ("run_meta.json", "experiment.json", "schema.json", "encoder.pt", "pretrain_config.json",
                 "probe_metrics.json", "probe_predictions.parquet"):
        assert (run_dir / name).exists(), name
    assert run_dir.parent.name == "_pretrain" and run_dir.parent.parent.name == "ssl_tcn_masked_recon"
    # A trained run's budget curve: snapshots in the run dir, the curve in probe_metrics.json, its plot.
    probe_meta = result.asset_materializations_for_node("probe_metrics")[0].metadata
    assert _is_png_file(probe_meta["budget_curve"].value) and "data:image/png" in probe_meta["budget_curve_preview"].value
    assert [p["source"] for p in probe_meta["budget_curve_points"].value][-1] == "probe"
    assert json.loads((run_dir / "probe_metrics.json").read_text())["budget_curve"] == probe_meta["budget_curve_points"].value
    _materialize(defs, instance, PARTITION_ASSETS, "raw_features|base")
    _assert_checks_recorded_per_partition(instance, ["masked_recon|base", "raw_features|base"])
    index_result = _materialize(defs, instance, ["experiment_index"])
    models = Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "models"
    index = pl.read_parquet(models / "_index.parquet")
    assert index.height == 2
    assert {"probe_metrics.macro.auprc", "pretrain_config.metrics.final_loss", "schema.window_spec.window_max"} <= set(index.columns)
    index_meta = index_result.asset_materializations_for_node("experiment_index")[0].metadata
    _assert_leaderboard_is_a_table(index_meta, index)
    scan = _materialize(defs, instance, ["market_scan"]).asset_materializations_for_node("market_scan")[0].metadata
    assert scan["tickers_scored"].value == 10 and scan["skipped"].value == 0
    assert scan["dagster/row_count"].value == 10 * 7
    assert [c.name for c in scan["dagster/column_schema"].schema.columns] == [
        "ticker", "date", "pattern", "score", "alert", "rank"
    ]
    assert _is_png_file(scan["alerted_charts"].value)
    scores = pl.read_parquet(Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "scans" / "market_scan_latest.parquet")
    assert scores.height == 10 * 7 and set(scores.columns) >= {"ticker", "date", "pattern", "score", "alert"}


def _is_png_file(path: str) -> bool:
    return Path(path).is_file() and Path(path).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _assert_tables_described(result) -> None:
    """Bars carry their column schema and row count; the windowed dataset and labels their row counts."""
    bars = result.asset_materializations_for_node("ohlcv_bars")[0].metadata
    columns = {c.name: c.type for c in bars["dagster/column_schema"].schema.columns}
    assert {"ticker": "string", "date": "date", "open": "float64", "close": "float64"}.items() <= columns.items()
    assert bars["dagster/row_count"].value == bars["clean_rows"].value == 10 * 420
    assert bars["dagster/table_name"].value == "warehouse.main.bars"
    windowed = result.asset_materializations_for_node("windowed_dataset")[0].metadata
    assert windowed["dagster/row_count"].value == sum(windowed["windows"].value.values())
    labels = result.asset_materializations_for_node("pattern_labels")[0].metadata
    assert labels["dagster/row_count"].value == labels["events"].value > 0
    prevalence = labels["prevalence"]
    assert isinstance(prevalence, dg.TableMetadataValue)
    assert [c.name for c in prevalence.schema.columns] == ["pattern", "train", "val", "test"]
    assert all(0.0 <= r.data["test"] <= 1.0 for r in prevalence.records)


def _assert_probe_metadata_small_with_plots_as_files(materialization) -> None:
    from dagster._serdes import serialize_value

    meta = materialization.metadata
    assert len(serialize_value(meta)) < MAX_PROBE_METADATA_BYTES, {k: len(serialize_value(v)) for k, v in meta.items()}
    for key in ("pr_curves", "earliest_detection", "reliability"):
        assert isinstance(meta[key], dg.PathMetadataValue) and _is_png_file(meta[key].value), key
        assert Path(meta[key].value).parent == Path(meta["run_dir"].value)
        # ... and each shows as a picture: a small inline preview beside the file.
        preview = meta[f"{key}_preview"]
        assert isinstance(preview, dg.MarkdownMetadataValue) and "](data:image/png;base64," in preview.value, key
    # The alert figures are means over the reachable patterns; the count stands right before them.
    reachable = meta["reachable_patterns"].value
    assert re.fullmatch(r"\d+ of 7 reachable at precision 0\.8", reachable), reachable
    keys = list(meta)
    assert keys.index("reachable_patterns") + 1 == keys.index("alerts_per_day_per_ticker")
    per_pattern = meta["per_pattern"]
    assert isinstance(per_pattern, dg.TableMetadataValue) and len(per_pattern.records) >= 1
    assert {c.name: c.type for c in per_pattern.schema.columns}["auprc"] == "float"
    # A pattern without test positives has an undefined AUPRC: an empty cell (null), never NaN in the JSON.
    defined = [r.data for r in per_pattern.records if r.data["auprc"] is not None]
    # (A percentile bootstrap CI need not contain the point estimate on a tiny test split.)
    assert defined and all(0.0 <= d["auprc"] <= 1.0 and d["ci_low"] <= d["ci_high"] for d in defined)


def _assert_checks_recorded_per_partition(instance, partitions: list[str]) -> None:
    """Each check execution is stored with its partition; the latest per partition is that partition's own."""
    from dagster._core.event_api import PartitionKeyFilter

    storage = instance.event_log_storage
    for asset, check in [("pretrained_encoder", "no_lookahead"), ("pretrained_encoder", "schema_matches_dataset"),
                         ("pretrained_encoder", "no_collapse"), ("probe_metrics", "schema_matches")]:
        key = dg.AssetCheckKey(dg.AssetKey(asset), check)
        history = storage.get_asset_check_execution_history(key, limit=10)
        assert sorted(r.partition for r in history) == sorted(partitions), (key, [r.partition for r in history])
        latest = {p: storage.get_latest_asset_check_execution_by_key([key], PartitionKeyFilter(key=p))[key]
                  for p in partitions}
        assert {p: r.evaluation.partition for p, r in latest.items()} == {p: p for p in partitions}
        assert len({r.run_id for r in latest.values()}) == len(partitions)


def _assert_leaderboard_is_a_table(meta, index: pl.DataFrame) -> None:
    board = meta["leaderboard"]
    assert isinstance(board, dg.TableMetadataValue)
    columns = {c.name: c.type for c in board.schema.columns}
    assert columns["objective"] == "string" and columns["test_auprc"] == "float" and columns["n_seeds"] == "int"
    assert {r.data["objective"] for r in board.records} == {"masked_recon", "raw_features"}
    assert [r.data["rank"] for r in board.records] == [1, 2]
    assert meta["dagster/row_count"].value == index.height
    assert [c.name for c in meta["dagster/column_schema"].schema.columns] == index.columns
    assert _is_png_file(meta["auprc_chart"].value)
    # The verdict first: a narrow table of the decisive columns, the report, then the whole board, whose
    # first columns decide and whose rows say their kind.
    assert list(meta)[:3] == ["verdict", "report", "leaderboard"]
    verdict = meta["verdict"]
    assert [c.name for c in verdict.schema.columns] == [
        "#", "objective", "variant", "kind", "current", "test AUPRC [95% CI]", "rising", "vs masked_recon",
        "vs minirocket", "vs best baseline"]
    first = verdict.records[0].data
    assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", first["test AUPRC [95% CI]"])
    assert [r.data["objective"] for r in verdict.records] == [r.data["objective"] for r in board.records]
    assert max(len(key) for key in meta) <= len("dagster/column_schema")  # the UI's label column stays narrow
    assert [c.name for c in board.schema.columns][:9] == [
        "rank", "objective", "variant", "kind", "current", "test_auprc", "test_ci_low", "test_ci_high", "still_rising"]
    assert {r.data["objective"]: r.data["kind"] for r in board.records} == {
        "masked_recon": "objective", "raw_features": "baseline"}
    assert all(r.data["current"] is True for r in board.records)
    report = Path(meta["report"].value)
    assert report.name == "_report.html" and report.parent == Path(meta["parquet"].value).parent
    page = report.read_text()
    # each run's three probe plots, masked_recon's budget curve, the bar chart and the sweep's budget curves
    assert page.count("<img") == 2 * 3 + 1 + 2
    parquet = pl.read_parquet(meta["leaderboard_parquet"].value)
    assert parquet.columns[:5] == ["rank", "objective", "variant", "kind", "current"]
    assert all(f'data-run-id="{run_id}"' in page for run_id in parquet.get_column("run_id"))
    assert _is_png_file(meta["budget_curves"].value)  # masked_recon trains; raw_features has no curve
    assert {r.data["objective"]: r.data["still_rising"] in ("yes", "no") for r in board.records} == {
        "masked_recon": True, "raw_features": False}


def test_every_asset_has_kinds_an_owner_and_a_group_and_partitioned_checks():
    from screener_ssl.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert len(keys) >= 10
    for key in keys:
        node = graph.get(key)
        # An observable source asset (sweep_file) cannot carry owners in Dagster 1.13; kinds and group it can.
        owners = [] if node.is_observable else ["team:screener-ssl"]
        assert node.kinds and node.owners == owners, (key, node.kinds, node.owners)
        assert node.group_name in {"data", "ssl", "probe", "scan"}, (key, node.group_name)
    assert graph.get(dg.AssetKey("pretrained_encoder")).kinds == {"torch"}
    assert "duckdb" in graph.get(dg.AssetKey("ohlcv_bars")).kinds
    for check_key in graph.asset_check_keys:
        asset = graph.get(check_key.asset_key)
        spec = graph.get_check_spec(check_key)
        if check_key.name == "partitions_current":  # about the asset as a whole: which partitions are stale
            assert spec.partitions_def is None and asset.partitions_def is not None, check_key
            continue
        assert spec.partitions_def == asset.partitions_def, check_key
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert {"no_lookahead", "schema_matches_dataset"} <= blocking


def test_undefined_variant_fails_with_a_clear_error(tiny_env):
    # vicreg has no 'full' variant, so no such partition exists: Dagster refuses it before any run.
    defs = _defs()
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(Exception, match="partition with key `vicreg\\|full`"):
        dg.materialize(list(defs.assets), selection=["ssl_schema"], partition_key="vicreg|full",
                       instance=instance, resources=defs.resources)


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
    failed = next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_lookahead")
    assert failed.partition == "raw_features|base"
    assert result.asset_materializations_for_node("pretrained_encoder")
    assert not result.asset_materializations_for_node("probe_metrics")


def test_the_index_says_where_its_verdict_is():
    description = _defs().resolve_assets_def("experiment_index").descriptions_by_key[dg.AssetKey("experiment_index")]
    assert "Events tab" in description and "leaderboard" in description and "_report.html" in description
