"""Named jobs, their run tags, the nightly schedule and its follow-up sensor, on the tiny sweep."""

from __future__ import annotations

import datetime

import dagster as dg
import yaml
from dagster._core.test_utils import create_run_for_test

from screener_ssl.defs.schedules import NIGHTLY_RUNS_TAG, NIGHTLY_TAG, sweep_run_tags
from screener_ssl_tests.defs.project import load_defs

NIGHT = datetime.datetime(2026, 11, 27, 2, tzinfo=datetime.timezone.utc)
# The tiny sweep's base points; raw_features has no weights, so it is never finetuned.
BASE_KEYS = ["masked_recon|base", "vicreg|base", "raw_features|base"]
# sweep_file first: each sweep run observes the point it runs, so its assets record that version.
SWEEP_ASSETS = ["sweep_file", "ssl_schema", "pretrained_encoder", "probe_metrics"]


def _defs(**kw) -> dg.Definitions:
    return load_defs(**kw)


def test_every_sweep_asset_belongs_to_a_named_job_and_partitioned_runs_carry_the_sweep_tags(tiny_env):
    defs = _defs()
    sweep = defs.resources["settings"].load_sweep()
    jobs = {name: defs.resolve_job_def(name) for name in
            ("sweep_partition_job", "finetune_partition_job", "index_and_scan_job")}
    assets = {name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
              for name, job in jobs.items()}
    assert assets == {
        "sweep_partition_job": sorted(SWEEP_ASSETS),
        "finetune_partition_job": ["finetuned_classifier"],
        "index_and_scan_job": ["experiment_index", "market_scan"],
    }
    for name in ("sweep_partition_job", "finetune_partition_job"):
        tags = jobs[name].get_tags_for_partition_key("masked_recon|full", None)
        assert tags["dagster/partition"] == "masked_recon|full"
        assert tags.items() >= sweep_run_tags(sweep, "masked_recon|full").items()
        assert tags["screener_ssl/variant"] == "full" and tags["screener_ssl/sweep_fingerprint"] == sweep.fingerprint


def test_no_asset_waits_on_an_automation_sensor_and_the_followup_sensor_runs_by_default(tiny_env):
    defs = _defs()
    graph = defs.resolve_asset_graph()
    assert [k for k in graph.get_all_asset_keys() if graph.get(k).automation_condition is not None] == []
    sensors = {s.name: s for s in defs.get_repository_def().sensor_defs}
    assert set(sensors) == {"nightly_sweep_followup", "sweep_file_sensor", "stale_partitions_sensor"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())


def test_nightly_schedule_requests_one_named_tagged_run_per_partition_of_the_chosen_variants(tiny_env):
    defs = _defs(nightly_variants=["base"])
    sweep = defs.resources["settings"].load_sweep()
    schedule = defs.resolve_schedule_def("nightly_sweep")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.job_name == "sweep_partition_job"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, repository_def=defs.get_repository_def(), scheduled_execution_time=NIGHT,
        )
        requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == sweep.partition_keys("base") == BASE_KEYS
    for request in requests:
        assert request.job_name == "sweep_partition_job"
        assert request.run_key == f"20261127:{request.partition_key}"
        assert request.tags.items() >= sweep_run_tags(sweep, request.partition_key).items()
        assert request.tags[NIGHTLY_TAG] == "20261127" and request.tags[NIGHTLY_RUNS_TAG] == "3"
        assert request.tags["dagster/partition"] == request.partition_key
    every = _defs(nightly_variants=None).resolve_schedule_def("nightly_sweep")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, repository_def=_defs(nightly_variants=None).get_repository_def(),
            scheduled_execution_time=NIGHT,
        )
        assert [r.partition_key for r in every.evaluate_tick(context).run_requests] == sweep.partition_keys()
    custom = _defs(nightly_cron="30 3 * * 1-5").resolve_schedule_def("nightly_sweep")
    assert custom.cron_schedule == "30 3 * * 1-5"


def _night_run(instance, job_name: str, key: str | None, status: dg.DagsterRunStatus):
    """The night's run of ``job_name`` for ``key``, now in ``status`` (replacing an earlier state of it)."""
    for run in instance.get_runs(dg.RunsFilter(job_name=job_name, tags={NIGHTLY_TAG: "20261127"})):
        if run.tags.get("dagster/partition") == key:
            instance.delete_run(run.run_id)
    tags = {NIGHTLY_TAG: "20261127", NIGHTLY_RUNS_TAG: "3"}
    if key:
        tags["dagster/partition"] = key
    create_run_for_test(instance, job_name=job_name, status=status, tags=tags)


def _followup(defs, instance) -> list[tuple]:
    sensor = defs.resolve_sensor_def("nightly_sweep_followup")
    context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    return [(r.job_name, r.partition_key, r.run_key, r.tags) for r in sensor.evaluate_tick(context).run_requests or []]


def test_followup_finetunes_after_each_sweep_run_then_indexes_once_the_night_has_finished(tiny_env):
    defs = _defs(nightly_variants=["base"])
    sweep = defs.resources["settings"].load_sweep()
    S = dg.DagsterRunStatus
    with dg.instance_for_test() as instance:
        assert _followup(defs, instance) == []  # no night yet
        for key in BASE_KEYS[:2]:  # the schedule has submitted two of its three runs so far
            _night_run(instance, "sweep_partition_job", key, S.NOT_STARTED)
        assert _followup(defs, instance) == []
        _night_run(instance, "sweep_partition_job", "masked_recon|base", S.SUCCESS)
        _night_run(instance, "sweep_partition_job", "raw_features|base", S.SUCCESS)
        # masked_recon's encoder is trained: finetune it; raw_features has no weights; vicreg still queued.
        [(job, key, run_key, tags)] = _followup(defs, instance)
        assert (job, key, run_key) == ("finetune_partition_job", "masked_recon|base", "20261127:finetune:masked_recon|base")
        assert tags.items() >= sweep_run_tags(sweep, "masked_recon|base").items() and tags[NIGHTLY_TAG] == "20261127"
        _night_run(instance, "finetune_partition_job", "masked_recon|base", S.STARTED)
        _night_run(instance, "sweep_partition_job", "vicreg|base", S.FAILURE)
        assert _followup(defs, instance) == []  # a finetune run is still going: no index yet
        _night_run(instance, "finetune_partition_job", "masked_recon|base", S.SUCCESS)
        # Every run of the night has finished (vicreg failed, so it is not finetuned): index, then scan.
        assert [r[:3] for r in _followup(defs, instance)] == [("index_and_scan_job", None, "20261127:index")]
        _night_run(instance, "index_and_scan_job", None, S.NOT_STARTED)
        assert _followup(defs, instance) == []


def test_table_metadata_rounds_floats_for_reading_and_blanks_non_finite_cells():
    from screener_ssl.defs.metadata import table_value

    table = table_value(
        [{"a": 0.28686317853882, "b": 1623.1554886, "c": float("nan"), "d": 137216, "e": "x"}],
        [("a", "float", ""), ("b", "float", ""), ("c", "float", ""), ("d", "int", ""), ("e", "string", "")],
    )
    [record] = table.records
    assert record.data == {"a": 0.2869, "b": 1623.0, "c": None, "d": 137216, "e": "x"}


def test_sweep_jobs_leave_out_the_cross_partition_staleness_check(tiny_env):
    # Its op reads every partition's status: it checks the four partitioned assets, outside their jobs.
    defs = _defs()
    with dg.instance_for_test():  # building the repository reads the current instance's defs state
        graph = defs.resolve_asset_graph()
    keys = {k.asset_key.to_user_string() for k in graph.asset_check_keys if k.name == "partitions_current"}
    assert keys == {"ssl_schema", "pretrained_encoder", "probe_metrics", "finetuned_classifier"}
    for job in ("sweep_partition_job", "finetune_partition_job"):
        assert "partitions_current" not in defs.resolve_job_def(job).graph.node_names(), job


def test_a_stale_partition_message_names_the_job_that_reruns_it():
    from screener_ssl.defs.staleness import _evaluation_fields

    stale = {"vicreg|base": ["windowed_dataset: has a new data version"]}
    assert "(finetune_partition_job)" in _evaluation_fields("finetuned_classifier", 3, stale)["description"]
    assert "(sweep_partition_job)" in _evaluation_fields("probe_metrics", 3, stale)["description"]


def test_the_shipped_instances_leave_the_community_dialog_off(tmp_path):
    import shutil

    from screener_ssl_tests.defs.servers import REPO

    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert not instance.nux_enabled  # what the webserver asks before showing "Join the community"
    assert yaml.safe_load((REPO / "deploy" / "postgres" / "dagster.yaml").read_text())["nux"] == {"enabled": False}


def test_the_staleness_check_judges_only_with_the_code_locations_whole_graph(tiny_env):
    from types import SimpleNamespace

    from dagster._core.definitions.reconstruct import repository_def_from_target_def

    from screener_ssl.defs.staleness import _whole_graph

    defs = load_defs()
    assert _whole_graph(SimpleNamespace(repository_def=defs.get_repository_def())) is not None
    # A job executed on its own (e.g. a reconstructable job on Ray) has only its own assets: no verdict from it.
    alone = repository_def_from_target_def(defs.resolve_job_def("sweep_partition_job"))
    assert _whole_graph(SimpleNamespace(repository_def=alone)) is None
