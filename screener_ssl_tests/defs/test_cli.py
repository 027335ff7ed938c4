"""``python -m screener_ssl.cli``: a selection for every defined partition as named, tagged runs; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from screener_ssl.cli import main
from screener_ssl.defs.schedules import sweep_run_tags
from screener_ssl.pipeline import PlannedRun, plan
from screener_ssl_tests.defs.project import load_defs
from screener_ssl_tests.defs.conftest import TINY_SWEEP

REPO = Path(__file__).resolve().parents[2]
DATA_ASSETS = ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]
SWEEP_ASSETS = ("ssl_schema", "pretrained_encoder", "probe_metrics")
# Two points, one of them untrained, so a run for every partition stays quick.
TWO_POINT_OBJECTIVES = """
objectives:
  masked_recon:
    variants: {base: {train: {steps: 3}}}
  raw_features:
    variants: {base: {}}
"""


def _defs() -> dg.Definitions:
    return load_defs()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "screener_ssl.cli", *args], env={**os.environ, **env},
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )


def test_plan_covers_every_defined_partition_in_pipeline_order(tiny_env):
    defs = _defs()
    sweep = defs.resources["settings"].load_sweep()
    runs, notes = plan(defs, sweep, ["probe_metrics"])
    assert runs == [PlannedRun("sweep_partition_job", ("probe_metrics",), k) for k in sweep.partition_keys()]
    assert notes == []
    runs, notes = plan(defs, sweep, ["experiment_index", "finetuned_classifier", "pretrained_encoder", "ohlcv_bars"],
                       variants=["base"])
    assert [r.describe() for r in runs] == [
        "data_job [ohlcv_bars]",
        "sweep_partition_job [pretrained_encoder] masked_recon|base",
        "finetune_partition_job [finetuned_classifier] masked_recon|base",
        "sweep_partition_job [pretrained_encoder] vicreg|base",
        "finetune_partition_job [finetuned_classifier] vicreg|base",
        "sweep_partition_job [pretrained_encoder] raw_features|base",
        "index_and_scan_job [experiment_index]",
    ]
    assert notes == ["finetuned_classifier skipped for 1 partitions without weights: raw_features|base"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--select", "probe_metric"], "no asset 'probe_metric' in the definitions; defined assets: ohlcv_bars"),
        (["--select", "probe_metrics", "--partition", "vicreg|full"],
         "partition 'vicreg|full' is not defined by the sweep .*; defined keys: masked_recon\\|base, masked_recon\\|full, "
         "vicreg\\|base, raw_features\\|base"),
        (["--select", "probe_metrics", "--partition", "vicreg"], "not of the form 'objective\\|variant'"),
        (["--select", "probe_metrics", "--variant", "large"], "variant 'large' is not defined .*; defined variants: base, full"),
        (["--select", "finetuned_classifier", "--partition", "raw_features|base"],
         "raw_features\\|base cannot be finetuned .*finetunable keys: masked_recon\\|base, masked_recon\\|full, vicreg\\|base"),
        (["--select", "experiment_index", "--variant", "base"], "experiment_index are not partitioned"),
    ],
)
def test_an_unknown_asset_partition_or_variant_is_refused_naming_the_defined_ones(tiny_env, capsys, args, message):
    import re

    assert main(["materialize", *args], defs=_defs()) == 2
    assert re.search(message, capsys.readouterr().err)


def test_cli_reruns_probe_metrics_for_every_defined_partition_as_tagged_sweep_job_runs(tiny_env):
    sweep_file = Path(tiny_env["SCREENER_SSL_SWEEP"])
    sweep_file.write_text(TINY_SWEEP.split("objectives:")[0] + TWO_POINT_OBJECTIVES)
    defs = _defs()
    sweep = defs.resources["settings"].load_sweep()
    keys = sweep.partition_keys()
    assert keys == ["masked_recon|base", "raw_features|base"]
    scratch = dg.DagsterInstance.ephemeral()
    dg.materialize(list(defs.assets), selection=DATA_ASSETS, instance=scratch, resources=defs.resources)
    for key in keys:
        dg.materialize(list(defs.assets), selection=["ssl_schema", "pretrained_encoder"], partition_key=key,
                       instance=scratch, resources=defs.resources)

    proc = _cli(tiny_env, "materialize", "--select", "probe_metrics", "--log-level", "WARNING")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "[1/2] sweep_partition_job [probe_metrics] masked_recon|base: ok" in proc.stdout
    assert "[2/2] sweep_partition_job [probe_metrics] raw_features|base: ok" in proc.stdout

    with dg.DagsterInstance.from_config(tiny_env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(keys)
        for run in runs:
            assert run.job_name == "sweep_partition_job" and run.status == dg.DagsterRunStatus.SUCCESS
            # The run is the named job's subset: the probe and its own checks, not the sweep-wide staleness check.
            messages = [r.message or "" for r in instance.all_logs(run.run_id)]
            assert not [m for m in messages if "did not yield" in m or "partitions_current" in m], run.run_id
            assert run.tags.items() >= sweep_run_tags(sweep, run.tags["dagster/partition"]).items()
        for key in keys:
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("probe_metrics"), asset_partitions=[key]), limit=5
            ).records
            run_dir = Path(record.asset_materialization.metadata["run_dir"].value)
            assert 0.0 <= json.loads((run_dir / "probe_metrics.json").read_text())["macro"]["auprc"] <= 1.0


def test_backfill_submits_one_tagged_sweep_job_run_per_partition_to_the_run_queue(tiny_env):
    defs = _defs()
    sweep = defs.resources["settings"].load_sweep()
    proc = _cli(tiny_env, "backfill", "--job", "sweep_partition_job", "--variant", "base")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # No daemon in the test: the runs wait in the queue, as they would for `dagster dev` to launch them.
    with dg.DagsterInstance.from_config(tiny_env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(sweep.partition_keys("base"))
        for run in runs:
            assert run.job_name == "sweep_partition_job" and run.status == dg.DagsterRunStatus.QUEUED
            assert run.tags.items() >= sweep_run_tags(sweep, run.tags["dagster/partition"]).items()


def test_dagster_asset_materialize_evaluates_the_staleness_check_it_brings_along(tiny_env):
    """Dagster adds partitions_current to a subset of its assets: there it judges, after the asset landed."""
    sweep_file = Path(tiny_env["SCREENER_SSL_SWEEP"])
    sweep_file.write_text(TINY_SWEEP.split("objectives:")[0] + TWO_POINT_OBJECTIVES)
    defs = _defs()
    scratch = dg.DagsterInstance.ephemeral()
    dg.materialize(list(defs.assets), selection=DATA_ASSETS, instance=scratch, resources=defs.resources)
    dg.materialize(list(defs.assets), selection=["ssl_schema", "pretrained_encoder"], partition_key="raw_features|base",
                   instance=scratch, resources=defs.resources)

    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "screener_ssl.definitions",
         "--select", "probe_metrics", "--partition", "raw_features|base"],
        env={**os.environ, **tiny_env}, capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with dg.DagsterInstance.from_config(tiny_env["DAGSTER_HOME"]) as instance:
        [run] = instance.get_runs()
        messages = [r.message or "" for r in instance.all_logs(run.run_id)]
        assert not [m for m in messages if "did not yield" in m]
        key = dg.AssetCheckKey(dg.AssetKey("probe_metrics"), "partitions_current")
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        assert latest.run_id == run.run_id and latest.evaluation.passed
        assert latest.evaluation.description == "all 1 materialized partitions of probe_metrics are current"
