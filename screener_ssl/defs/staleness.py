"""Stale sweep partitions, visible on the asset's own card.

Dagster's graph and catalog ask for an asset's stale status without a partition, and
for a partitioned asset its resolver answers "fresh" by construction: after a window
setting changes, ``ssl_schema``, ``pretrained_encoder``, ``probe_metrics`` and
``finetuned_classifier`` would look current on every card although their partitions
were computed on the old dataset. So each of them carries one more check,
``partitions_current``: it fails when any materialized partition is
stale, naming each one and its root causes as Dagster's own stale-status resolver
reports them. ``stale_partitions_sensor`` (on by default) re-evaluates it without a run
whenever the set of stale partitions changes, so the badge turns red as soon as
the upstream change lands; the check also runs on demand from the asset's Checks tab.
The sweep jobs leave it out: a partition's run does not need the others' status.
"""


import hashlib
import json

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from screener_ssl.defs.metadata import table_value

CHECK_NAME = "partitions_current"
PARTITIONED_SWEEP_ASSETS = ("ssl_schema", "pretrained_encoder", "probe_metrics", "finetuned_classifier")
STALE_ROWS_SHOWN = 200  # the metadata table lists at most this many partitions; the count is always whole


def staleness_check_keys() -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(dg.AssetKey(name), CHECK_NAME) for name in PARTITIONED_SWEEP_ASSETS]


def stale_resolver(instance: dg.DagsterInstance, asset_graph) -> CachingStaleStatusResolver:
    """Dagster's stale-status resolver (the one behind the UI's badges); it caches what it read, so share it."""
    return CachingStaleStatusResolver(instance, asset_graph, LoadingContextForTest(instance))


def stale_partitions(
    instance: dg.DagsterInstance, asset_graph, asset: str, resolver: "CachingStaleStatusResolver | None" = None
) -> "tuple[int, dict[str, list[str]]]":
    """(materialized partitions, {stale partition: its root causes}) of ``asset``, by Dagster's resolver."""
    key = dg.AssetKey(asset)
    materialized = sorted(instance.get_materialized_partitions(key))
    resolver = resolver or stale_resolver(instance, asset_graph)
    stale: dict[str, list[str]] = {}
    for partition in materialized:
        if resolver.get_status(key, partition) != StaleStatus.STALE:
            continue
        causes = resolver.get_stale_root_causes(key, partition)
        stale[partition] = sorted(
            {f"{c.key.asset_key.to_user_string()}{f' [{c.key.partition_key}]' if c.key.partition_key else ''}: "
             f"{c.reason}" for c in causes}
        ) or ["stale"]
    return len(materialized), stale


def _evaluation_fields(asset: str, n_materialized: int, stale: dict[str, list[str]]) -> dict:
    rows = [{"partition": p, "causes": "; ".join(c)} for p, c in sorted(stale.items())[:STALE_ROWS_SHOWN]]
    if stale:
        head = ", ".join(sorted(stale)[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        description = (
            f"{len(stale)} of {n_materialized} materialized partitions of {asset} are stale ({head}): "
            "rerun them (their sweep job) before reading the leaderboard"
        )
    else:
        description = f"all {n_materialized} materialized partitions of {asset} are current"
    return dict(
        passed=not stale,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "materialized_partitions": n_materialized,
            "stale_partitions": len(stale),
            "stale": table_value(rows, [("partition", "string", "objective|variant"),
                                        ("causes", "string", "root causes, as Dagster's stale status gives them")]),
        },
    )


def build_staleness_checks() -> list[dg.AssetChecksDefinition]:
    """One op checking all four assets. A materialization run that selects one of them picks the check
    up too (Dagster adds an asset's checks to a subset); there it yields nothing, so the sensor's
    evaluation stands and the run pays one no-op step. Executed on its own (the Checks tab), it evaluates."""

    @dg.multi_asset_check(
        name=CHECK_NAME,
        can_subset=True,
        specs=[
            dg.AssetCheckSpec(
                CHECK_NAME, asset=asset, blocking=False,
                description=f"Every materialized partition of {asset} is current (none stale); fails naming the "
                "stale ones. Kept up to date by stale_partitions_sensor.",
            )
            for asset in PARTITIONED_SWEEP_ASSETS
        ],
    )
    def partitions_current(context: dg.AssetCheckExecutionContext):
        op_context = context.op_execution_context
        if op_context.run.asset_selection:
            context.log.info(f"{CHECK_NAME}: left to stale_partitions_sensor in a run that materializes assets")
            return
        try:
            asset_graph = op_context.repository_def.asset_graph  # the whole graph: staleness needs every ancestor
        except Exception:
            context.log.warning(f"{CHECK_NAME}: no repository in this run (executed in process); nothing evaluated, "
                                "stale_partitions_sensor's result stands")
            return
        resolver = stale_resolver(context.instance, asset_graph)
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.asset_key.to_user_string()):
            asset = check_key.asset_key.to_user_string()
            n_materialized, stale = stale_partitions(context.instance, asset_graph, asset, resolver)
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key, check_name=CHECK_NAME, **_evaluation_fields(asset, n_materialized, stale)
            )

    return [partitions_current]


def staleness_evaluations(
    instance: dg.DagsterInstance, asset_graph, cursor: "str | None"
) -> "tuple[list[dg.AssetCheckEvaluation], str]":
    """The sensor's tick: an evaluation for each asset whose stale set changed since ``cursor``, and the new cursor."""
    seen = json.loads(cursor) if cursor else {}
    current, events = {}, []
    resolver = stale_resolver(instance, asset_graph)  # the four assets share their upstream
    for asset in PARTITIONED_SWEEP_ASSETS:
        n_materialized, stale = stale_partitions(instance, asset_graph, asset, resolver)
        digest = hashlib.sha256(json.dumps([n_materialized, stale], sort_keys=True).encode()).hexdigest()[:16]
        current[asset] = digest
        if seen.get(asset) != digest:
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(asset), check_name=CHECK_NAME, **_evaluation_fields(asset, n_materialized, stale)
                )
            )
    return events, json.dumps(current, sort_keys=True)


def build_stale_partitions_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="stale_partitions_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-evaluates partitions_current on each partitioned sweep asset (no run) when its set of stale "
        "partitions changes, so the asset's card shows a failed check while any partition is stale.",
    )
    def stale_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        events, cursor = staleness_evaluations(context.instance, context.repository_def.asset_graph, context.cursor)
        for event in events:
            context.log.info(f"{event.asset_key.to_user_string()}: {event.description}")
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return stale_partitions_sensor
