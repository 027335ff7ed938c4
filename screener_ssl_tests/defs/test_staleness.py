"""Staleness as Dagster reports it, after real upstream changes: a window setting, one sweep point's steps."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl.defs.staleness import staleness_evaluations
from screener_ssl_tests.defs.project import load_defs

DATA_ASSETS = ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]
SWEEP_RUN = ["sweep_file", "ssl_schema", "pretrained_encoder", "probe_metrics"]
PARTITIONED = ["ssl_schema", "pretrained_encoder", "probe_metrics"]
POINTS = ["masked_recon|base", "raw_features|base"]


def _defs() -> dg.Definitions:
    return load_defs()


def _materialize(defs, instance, selection, partition=None):
    result = dg.materialize(
        list(defs.assets), selection=selection, partition_key=partition, instance=instance, resources=defs.resources
    )
    assert result.success
    return result


def _status(defs, instance, key, partition=None):
    # The resolver behind the UI's stale badges and GraphQL's staleStatus.
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(dg.AssetKey(key), partition), resolver.get_stale_causes(dg.AssetKey(key), partition)


def _check(result, name):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


class _Tick(dict):
    cursor: str | None = None


def _stale_check_tick(defs, instance, cursor):
    """One tick of stale_partitions_sensor: {asset: its partitions_current evaluation}, with the new cursor."""
    events, new_cursor = staleness_evaluations(instance, defs.resolve_asset_graph(), cursor)
    tick = _Tick({e.asset_key.to_user_string(): e for e in events})
    tick.cursor = new_cursor
    return tick


def _sensor_tick(defs, instance, cursor):
    """One tick of the real stale_partitions_sensor, with the definitions' resources: {asset: evaluation}."""
    sensor = defs.resolve_sensor_def("stale_partitions_sensor")
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources, definitions=defs))
    tick = _Tick({e.asset_key.to_user_string(): e for e in result.asset_events})
    tick.cursor = result.cursor
    return tick


def build_sweep_state(defs, instance) -> None:
    """Data assets, two sweep points through the probe (each run observes the sweep file first), the index."""
    _materialize(defs, instance, DATA_ASSETS)
    for point in POINTS:
        _materialize(defs, instance, SWEEP_RUN, point)
    index = _materialize(defs, instance, ["experiment_index"])
    assert _check(index, "index_current").passed
    for key in PARTITIONED:
        for point in POINTS:
            assert _status(defs, instance, key, point)[0] == StaleStatus.FRESH, (key, point)
    assert _status(defs, instance, "experiment_index")[0] == StaleStatus.FRESH


def test_a_window_change_marks_every_dependent_partition_and_the_index_stale(tiny_env):
    with dg.instance_for_test() as instance:
        defs = _defs()
        build_sweep_state(defs, instance)

        fresh = _stale_check_tick(defs, instance, None)
        assert {a: e.passed for a, e in fresh.items()} == {a: True for a in PARTITIONED + ["finetuned_classifier"]}
        sensor_fresh = _sensor_tick(defs, instance, None)
        assert sensor_fresh["experiment_index"].passed
        assert [r.data["current"] for r in sensor_fresh["experiment_index"].metadata["leaderboard"].records] == [True] * 2

        sweep = Path(tiny_env["SCREENER_SSL_SWEEP"])
        sweep.write_text(sweep.read_text().replace("label_horizon: 5", "label_horizon: 3"))
        defs = _defs()
        _materialize(defs, instance, ["windowed_dataset"])
        for key in PARTITIONED:
            for point in POINTS:
                status, causes = _status(defs, instance, key, point)
                assert status == StaleStatus.STALE, (key, point)
                assert any(c.dependency and c.dependency.asset_key == dg.AssetKey("windowed_dataset") for c in causes)
        assert _status(defs, instance, "experiment_index")[0] == StaleStatus.STALE

        # The card-level signal: Dagster calls a partitioned asset fresh without a partition, so the
        # sensor fails each one's partitions_current check, naming the stale partitions and the cause.
        stale = _stale_check_tick(defs, instance, fresh.cursor)
        assert sorted(stale) == sorted(PARTITIONED)  # finetuned_classifier: nothing materialized, nothing changed
        for key in PARTITIONED:
            evaluation = stale[key]
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
            rows = [r.data for r in evaluation.metadata["stale"].records]
            assert sorted(r["partition"] for r in rows) == POINTS
            assert all("windowed_dataset: has a new data version" in r["causes"] for r in rows)
            assert all(p in evaluation.description for p in POINTS)
            instance.report_runless_asset_event(evaluation)
        assert _stale_check_tick(defs, instance, stale.cursor) == {}  # unchanged: nothing re-reported

        # The leaderboard reads stale without a rebuild: the sensor re-evaluates index_current from the
        # index and board on disk, each row's current column false, and says so once.
        sensor_stale = _sensor_tick(defs, instance, sensor_fresh.cursor)
        board_check = sensor_stale["experiment_index"]
        assert not board_check.passed and board_check.check_name == "index_current"
        assert board_check.description.startswith("2 of 2 leaderboard rows are out of date")
        records = [r.data for r in board_check.metadata["leaderboard"].records]
        assert [r["current"] for r in records] == [False, False] and list(records[0])[:5] == [
            "rank", "objective", "variant", "kind", "current"]
        assert "experiment_index" not in _sensor_tick(defs, instance, sensor_stale.cursor)
        instance.report_runless_asset_event(board_check)  # as the sensor daemon stores it: the card's check
        key = dg.AssetCheckKey(dg.AssetKey("experiment_index"), "index_current")
        stored = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        assert stored.evaluation is not None and not stored.evaluation.passed
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("probe_metrics"), "partitions_current")]
        )
        assert latest  # stored where the UI reads a check's latest result

        # Rebuilt on the new dataset without rerunning the probes, the index says which rows are old.
        check = _check(_materialize(defs, instance, ["experiment_index"]), "index_current")
        assert not check.passed
        rows = check.metadata["rows"].value
        assert sorted(r["partition"] for r in rows) == POINTS
        assert all(any(reason.startswith("dataset ") for reason in r["reasons"]) for r in rows)
        assert all(p in check.description for p in POINTS)


def test_editing_one_sweep_points_steps_marks_only_that_partition_and_the_index_stale(tiny_env):
    with dg.instance_for_test() as instance:
        defs = _defs()
        build_sweep_state(defs, instance)
        sensor = defs.resolve_sensor_def("sweep_file_sensor")

        def tick(cursor):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
            result = sensor(context)
            for event in result.asset_events:  # stored as the sensor daemon stores them
                instance.report_runless_asset_event(event)
            return result

        first = tick(None)  # the daemon's first tick: the versions the runs already observed
        assert sorted(e.partition for e in first.asset_events) == sorted(ScreenerSettings.from_env().load_sweep().partition_keys())
        for point in POINTS:
            assert _status(defs, instance, "pretrained_encoder", point)[0] == StaleStatus.FRESH
        assert _status(defs, instance, "experiment_index")[0] == StaleStatus.FRESH

        sweep = Path(tiny_env["SCREENER_SSL_SWEEP"])
        text = sweep.read_text()
        edited = text.replace("masked_recon:\n    variants: {base: {}", "masked_recon:\n    variants: {base: {train: {steps: 5}}")
        assert edited != text
        sweep.write_text(edited)
        defs = _defs()
        second = tick(first.cursor)
        assert [e.partition for e in second.asset_events] == ["masked_recon|base"]
        for key in PARTITIONED:
            status, causes = _status(defs, instance, key, "masked_recon|base")
            assert status == StaleStatus.STALE, key
            assert any(c.dependency and c.dependency.asset_key == dg.AssetKey("sweep_file") for c in causes)
            assert _status(defs, instance, key, "raw_features|base")[0] == StaleStatus.FRESH, key
        assert _status(defs, instance, "experiment_index")[0] == StaleStatus.STALE
        assert tick(second.cursor).asset_events == []  # nothing new: nothing observed

        check = _check(_materialize(defs, instance, ["experiment_index"]), "index_current")
        assert not check.passed
        [row] = check.metadata["rows"].value
        assert row["partition"] == "masked_recon|base" and row["reasons"][0].startswith("sweep point ")

        # Rerunning the edited point makes it, and then the index, current again.
        _materialize(defs, instance, SWEEP_RUN, "masked_recon|base")
        for key in PARTITIONED:
            assert _status(defs, instance, key, "masked_recon|base")[0] == StaleStatus.FRESH, key
        assert _check(_materialize(defs, instance, ["experiment_index"]), "index_current").passed
        assert _status(defs, instance, "experiment_index")[0] == StaleStatus.FRESH
