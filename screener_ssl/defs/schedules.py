"""The nightly sweep: one run per objective x variant partition, then the index."""

import dagster as dg

from screener_ssl.defs.partitions import split_partition_key
from screener_ssl.runs.sweep import Sweep

# sweep_file first: the run observes the sweep point it runs, so its assets record that version.
SWEEP_ASSETS = ["sweep_file", "ssl_schema", "pretrained_encoder", "probe_metrics"]
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


def build_sweep_jobs(partitions: dg.PartitionsDefinition) -> tuple:
    sweep_job = dg.define_asset_job(
        "sweep_partition_job",
        selection=dg.AssetSelection.assets(*SWEEP_ASSETS),
        partitions_def=partitions,
        op_retry_policy=SWEEP_RETRY_POLICY,
        description="Schema, pretraining and probe for one objective|variant partition.",
    )
    index_job = dg.define_asset_job(
        "experiment_index_job", selection=dg.AssetSelection.assets("experiment_index"),
        description="Rebuild the consolidated index and leaderboard.",
    )
    return sweep_job, index_job


def build_nightly_schedule(sweep: Sweep, cron: str, variants: list[str] | None):
    """One explicit request per sweep point of the chosen variants (a subset of the job's partitions), then the index."""

    @dg.schedule(
        name="nightly_sweep",
        cron_schedule=cron,
        target=dg.AssetSelection.assets(*SWEEP_ASSETS, "experiment_index"),
        execution_timezone="UTC",
        description=f"Every partition of variants {variants or 'all'} from {sweep.source}, then the index.",
    )
    def nightly_sweep(context: dg.ScheduleEvaluationContext):
        stamp = context.scheduled_execution_time.strftime("%Y%m%d")
        keys = [k for v in (variants or [None]) for k in sweep.partition_keys(v)]
        for key in keys:
            yield dg.RunRequest(
                run_key=f"{stamp}:{key}", partition_key=key, tags={"sweep": stamp},
                asset_selection=[dg.AssetKey(a) for a in SWEEP_ASSETS],
            )
        # Lowest priority: the queue launches it after the partition runs ahead of it.
        yield dg.RunRequest(
            run_key=f"{stamp}:index", asset_selection=[dg.AssetKey("experiment_index")],
            tags={"sweep": stamp, "dagster/priority": "-1"},
        )

    return nightly_sweep
