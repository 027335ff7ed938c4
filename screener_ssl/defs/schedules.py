"""The sweep's named jobs, the nightly schedule that starts the sweep, and the sensor that finishes it.

Named jobs, so the Jobs page lists each and every run is named and tagged:

- ``data_job``: bars, shape features, windowed dataset and labels (the ``data`` group);
- ``sweep_partition_job``: schema, pretraining and probe of one ``objective|variant`` partition;
- ``finetune_partition_job``: the finetuned classifier of a partition whose objective has weights;
- ``index_and_scan_job``: the experiment index and leaderboard, then the market scan.

Every partitioned run carries :func:`sweep_run_tags` (from the jobs' partitioned config),
whoever launches it: the schedule, a backfill, the launchpad or ``python -m screener_ssl.cli``.

A schedule launches one job, and a queue orders runs by priority, not by completion, so the
nightly is two steps: the ``nightly_sweep`` schedule requests one sweep run per partition, and
the ``nightly_sweep_followup`` sensor (running by default) requests each finetune run once its
partition's sweep run has succeeded (it finetunes the encoder that run trained), then the index
and scan once every run of the night has finished, so the leaderboard includes all of them.
"""

import dagster as dg

from screener_ssl.defs.partitions import finetunable_keys, finetune_partitions, split_partition_key
from screener_ssl.defs.sensors import running_sensor
from screener_ssl.defs.staleness import staleness_check_keys
from screener_ssl.runs.sweep import Sweep

# sweep_file first: the run observes the sweep point it runs, so its assets record that version.
SWEEP_ASSETS = ["sweep_file", "ssl_schema", "pretrained_encoder", "probe_metrics"]
FINETUNE_ASSETS = ["finetuned_classifier"]
INDEX_ASSETS = ["experiment_index", "market_scan"]
DATA_JOB = "data_job"
SWEEP_JOB = "sweep_partition_job"
FINETUNE_JOB = "finetune_partition_job"
INDEX_JOB = "index_and_scan_job"
# The order a full refresh runs them in: each job's assets read the ones before.
PIPELINE_JOBS = (DATA_JOB, SWEEP_JOB, FINETUNE_JOB, INDEX_JOB)
# The night a run belongs to (YYYYMMDD) and how many sweep runs that night's schedule requested.
NIGHTLY_TAG = "screener_ssl/nightly"
NIGHTLY_RUNS_TAG = "screener_ssl/nightly_sweep_runs"
PARTITION_TAG = "dagster/partition"
# A step whose worker died (preempted node, OOM kill, lost Ray job) is retried; training resumes
# from its last checkpoint, so a retry costs at most checkpoint_every steps.
SWEEP_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=1)


def sweep_run_tags(sweep: Sweep, partition_key: str) -> dict[str, str]:
    """Tags of a sweep run, so runs are findable and filterable in the UI: objective, variant, seed, fingerprints."""
    objective, variant = split_partition_key(partition_key)
    point = sweep.point(objective, variant)
    return {
        "screener_ssl/objective": objective,
        "screener_ssl/variant": point.base_variant,
        "screener_ssl/point": variant,
        "screener_ssl/seed": str(point.train.seed),
        "screener_ssl/sweep_fingerprint": sweep.fingerprint,
        "screener_ssl/point_fingerprint": sweep.point_fingerprint(objective, variant),
    }


def build_sweep_jobs(sweep: Sweep, partitions: dg.PartitionsDefinition) -> list:
    """The named jobs of :data:`PIPELINE_JOBS`; the partitioned ones tag each run with its partition's :func:`sweep_run_tags`."""
    def tagged_config(partitions_def: dg.PartitionsDefinition) -> dg.PartitionedConfig:
        return dg.PartitionedConfig(
            partitions_def=partitions_def,
            run_config_for_partition_key_fn=lambda key: {},
            tags_for_partition_key_fn=lambda key: sweep_run_tags(sweep, key),
        )

    tagged = tagged_config(partitions)
    finetunable = finetune_partitions(partitions)
    # The sweep's staleness check reads every partition's status: no partition's run needs it.
    staleness_checks = dg.AssetSelection.checks(*staleness_check_keys())
    data_job = dg.define_asset_job(
        DATA_JOB, selection=dg.AssetSelection.groups("data"),
        description="Validated bars, shape features, the windowed dataset and the pattern labels.",
    )
    sweep_job = dg.define_asset_job(
        SWEEP_JOB,
        selection=dg.AssetSelection.assets(*SWEEP_ASSETS) - staleness_checks,
        partitions_def=partitions,
        config=tagged,
        op_retry_policy=SWEEP_RETRY_POLICY,
        description="Schema, pretraining and probe for one objective|variant partition.",
    )
    finetune_job = dg.define_asset_job(
        FINETUNE_JOB,
        selection=dg.AssetSelection.assets(*FINETUNE_ASSETS) - staleness_checks,
        partitions_def=finetunable,
        config=tagged_config(finetunable),
        op_retry_policy=SWEEP_RETRY_POLICY,
        description="Finetune a partition's newest pretrained encoder end to end, then probe it; only "
        "for objectives with weights (not raw_features, shape_free, minirocket).",
    )
    index_job = dg.define_asset_job(
        INDEX_JOB, selection=dg.AssetSelection.assets(*INDEX_ASSETS),
        description="Rebuild the consolidated index and leaderboard, then scan the market with the best run.",
    )
    return [data_job, sweep_job, finetune_job, index_job]


def nightly_keys(sweep: Sweep, variants: list[str] | None) -> list[str]:
    """The partitions of the chosen variants (all when None), in the sweep file's order."""
    return list(dict.fromkeys(k for v in (variants or [None]) for k in sweep.partition_keys(v)))


def build_nightly_schedule(sweep: Sweep, cron: str, variants: list[str] | None):
    """One named, tagged ``sweep_partition_job`` run per sweep point of the chosen variants."""
    keys = nightly_keys(sweep, variants)

    @dg.schedule(
        name="nightly_sweep",
        cron_schedule=cron,
        job_name=SWEEP_JOB,
        execution_timezone="UTC",
        description=f"{SWEEP_JOB} for every partition of variants {variants or 'all'} from {sweep.source} "
        f"({len(keys)} runs); nightly_sweep_followup then finetunes and rebuilds the index and scan.",
    )
    def nightly_sweep(context: dg.ScheduleEvaluationContext):
        stamp = context.scheduled_execution_time.strftime("%Y%m%d")
        for key in keys:
            yield dg.RunRequest(
                run_key=f"{stamp}:{key}", job_name=SWEEP_JOB, partition_key=key,
                tags={**sweep_run_tags(sweep, key), NIGHTLY_TAG: stamp, NIGHTLY_RUNS_TAG: str(len(keys))},
            )

    return nightly_sweep


def nightly_followup_requests(sweep: Sweep, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """What the latest night still needs: finetune runs for its succeeded finetunable partitions, then the index.

    The index and scan are requested once every sweep run the schedule requested that night and
    every finetune run has finished (succeeded or failed). Run keys name the night, so each is
    requested once.
    """
    nights = dict(instance.get_run_tags(tag_keys=[NIGHTLY_TAG])).get(NIGHTLY_TAG, set())
    if not nights:
        return []
    stamp = max(nights)
    runs = instance.get_runs(filters=dg.RunsFilter(tags={NIGHTLY_TAG: stamp}))
    sweep_runs = [r for r in runs if r.job_name == SWEEP_JOB]
    finetune_runs = {r.tags.get(PARTITION_TAG): r for r in runs if r.job_name == FINETUNE_JOB}
    if any(r.job_name == INDEX_JOB for r in runs):
        return []
    requests = []
    succeeded = [r.tags[PARTITION_TAG] for r in sweep_runs if r.status == dg.DagsterRunStatus.SUCCESS]
    for key in finetunable_keys([k for k in succeeded if k in sweep.partition_keys()]):
        if key not in finetune_runs:
            requests.append(dg.RunRequest(
                run_key=f"{stamp}:finetune:{key}", job_name=FINETUNE_JOB, partition_key=key,
                tags={**sweep_run_tags(sweep, key), NIGHTLY_TAG: stamp},
            ))
    expected = max((int(r.tags.get(NIGHTLY_RUNS_TAG, 0)) for r in sweep_runs), default=0)
    finished = all(r.is_finished for r in [*sweep_runs, *finetune_runs.values()])
    if not requests and finished and len({r.tags.get(PARTITION_TAG) for r in sweep_runs}) >= expected:
        requests.append(dg.RunRequest(run_key=f"{stamp}:index", job_name=INDEX_JOB, tags={NIGHTLY_TAG: stamp}))
    return requests


def build_nightly_followup_sensor(sweep: Sweep, jobs: list) -> dg.SensorDefinition:
    """``jobs``: the finetune and index jobs of :func:`build_sweep_jobs` (a sensor names the jobs it may launch)."""

    @running_sensor(
        "nightly_sweep_followup",
        every_seconds=60,
        jobs=[j for j in jobs if j.name in (FINETUNE_JOB, INDEX_JOB)],
        description=f"After nightly_sweep: {FINETUNE_JOB} for each finetunable partition whose sweep run "
        f"succeeded, then {INDEX_JOB} once every run of the night has finished.",
    )
    def nightly_sweep_followup(context: dg.SensorEvaluationContext):
        requests = nightly_followup_requests(sweep, context.instance)
        if not requests:
            return dg.SkipReason("no night waiting: its runs are still going, or its index was requested")
        return requests

    return nightly_sweep_followup
