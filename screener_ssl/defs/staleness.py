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

The leaderboard is stale in the same way the moment a window setting or a sweep point
changes, although the index is not rebuilt: the same sensor re-evaluates
``experiment_index``'s ``index_current`` check when the set of out-of-date leaderboard rows
changes (read from ``_index.parquet`` and ``_leaderboard.parquet`` against the fingerprints on
disk now, :mod:`screener_ssl.tracking.currency`), and its result carries the leaderboard
with each row's ``current`` column, so a stale board reads stale on the asset's card and
Checks tab without a rebuild.
"""


import hashlib
import json

import dagster as dg
import polars as pl
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from screener_ssl.data.dataset import WINDOWED_DIR
from screener_ssl.defs.metadata import table_value
from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl.defs.sensors import running_sensor
from screener_ssl.defs.sweep_file import point_fingerprints
from screener_ssl.tracking.board import leaderboard_records, table_schema
from screener_ssl.tracking.currency import leaderboard_rows, out_of_date_rows, with_currency
from screener_ssl.tracking.index import INDEX_PARQUET

CHECK_NAME = "partitions_current"
INDEX_ASSET = "experiment_index"
INDEX_CHECK = "index_current"
LEADERBOARD_PARQUET = "_leaderboard.parquet"
PARTITIONED_SWEEP_ASSETS = ("ssl_schema", "pretrained_encoder", "probe_metrics", "finetuned_classifier")
# The job that reruns a stale partition of each asset (the names of screener_ssl.defs.schedules' jobs).
RERUN_JOB = {"finetuned_classifier": "finetune_partition_job"}
STALE_ROWS_SHOWN = 200  # the metadata table lists at most this many partitions; the count is always whole


def staleness_check_keys() -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(dg.AssetKey(name), CHECK_NAME) for name in PARTITIONED_SWEEP_ASSETS]


def run_subset(job: dg.JobDefinition, assets: "list[str]") -> dg.JobDefinition:
    """``job`` limited to ``assets`` and their own checks, without ``partitions_current``.

    Dagster adds every check of the selected assets to a subset (``asset_selection`` alone
    would bring ``partitions_current`` back into a named job that leaves it out); a run of this
    subset materializes the assets and runs their checks, nothing else.
    """
    keys = {dg.AssetKey(a) for a in assets}
    checks = {k for k in job.asset_layer.asset_graph.asset_check_keys if k.asset_key in keys and k.name != CHECK_NAME}
    return job.get_subset(asset_selection=keys, asset_check_selection=checks)


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
            f"rerun them ({RERUN_JOB.get(asset, 'sweep_partition_job')}) before reading the leaderboard"
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


def _whole_graph(op_context):
    """The code location's asset graph when the run has it: one holding every asset the staleness of the
    sweep depends on, executable (a job run on its own has only its job's assets, or no repository)."""
    try:
        graph = op_context.repository_def.asset_graph
    except Exception:
        return None
    needed = [dg.AssetKey(a) for a in (*PARTITIONED_SWEEP_ASSETS, "windowed_dataset", "pattern_labels")]
    keys = graph.get_all_asset_keys()
    return graph if all(k in keys and graph.get(k).is_materializable for k in needed) else None


def build_staleness_checks() -> list[dg.AssetChecksDefinition]:
    """One op checking all four assets. A materialization run that selects one of them picks the check
    up too (Dagster adds an asset's checks to a subset: ``dagster asset materialize``, the UI's
    Materialize button); it runs after the assets it checks, so there it evaluates them as they are
    once the run's materializations landed, like a run from the Checks tab. Only a run without the
    code location's whole graph (a job executed in process) cannot judge: it says so and yields
    nothing, leaving the sensor's evaluation standing. The named jobs, ``screener-ssl materialize``
    and the demo leave it out (:func:`run_subset`)."""

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
        asset_graph = _whole_graph(context.op_execution_context)  # staleness needs every ancestor
        if asset_graph is None:
            context.log.warning(f"{CHECK_NAME}: this run has not the code location's whole asset graph (a job "
                                "executed on its own); nothing evaluated, stale_partitions_sensor's result stands")
            return
        resolver = stale_resolver(context.instance, asset_graph)
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.asset_key.to_user_string()):
            asset = check_key.asset_key.to_user_string()
            n_materialized, stale = stale_partitions(context.instance, asset_graph, asset, resolver)
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key, check_name=CHECK_NAME, **_evaluation_fields(asset, n_materialized, stale)
            )

    return [partitions_current]


def current_fingerprints(settings: ScreenerSettings) -> "tuple[str | None, dict[str, str]]":
    """The windowed dataset's fingerprint on disk now (None without one) and every sweep point's now."""
    dataset_json = settings.root / WINDOWED_DIR / "dataset.json"
    dataset = json.loads(dataset_json.read_text())["dataset_fingerprint"] if dataset_json.exists() else None
    return dataset, point_fingerprints(settings.load_sweep())


def index_current_fields(index: pl.DataFrame, board: pl.DataFrame, settings: ScreenerSettings) -> dict:
    """``index_current``'s outcome: the leaderboard's out-of-date rows by run, and the board with ``current``."""
    dataset, points = current_fingerprints(settings)
    stale = out_of_date_rows(index, dataset, points)
    named = [f"{r['partition']} {r['model_type']} {r['run_id']}: {'; '.join(r['reasons'])}" for r in stale]
    board = with_currency(board, index, dataset, points)
    n_stale = board.filter(pl.col("current").not_()).height if board.height else 0
    head = f"{n_stale} of {board.height} leaderboard rows are out of date (column current); " if n_stale else ""
    return dict(
        passed=not stale,
        description=(f"{head}out of date: " + " | ".join(named)) if stale else "every leaderboard row is current",
        metadata={
            "out_of_date_rows": len(stale),
            "rows_checked": leaderboard_rows(index).height,
            "dataset_fingerprint": dataset or "none",
            # The board as it reads now: each row's current column against the fingerprints on disk.
            "leaderboard": table_value(leaderboard_records(board), table_schema(board)),
            "rows": dg.MetadataValue.json(stale),
        },
    )


def _index_evaluation(settings: ScreenerSettings) -> "tuple[str, dg.AssetCheckEvaluation] | None":
    """(digest of the out-of-date set, evaluation) of ``index_current`` from the files the index wrote."""
    models = settings.root / "models"
    if not (models / INDEX_PARQUET).is_file():
        return None
    index = pl.read_parquet(models / INDEX_PARQUET)
    board_file = models / LEADERBOARD_PARQUET
    board = pl.read_parquet(board_file) if board_file.is_file() else pl.DataFrame()
    fields = index_current_fields(index, board, settings)
    state = [fields["metadata"]["rows"].value, [r.data.get("current") for r in fields["metadata"]["leaderboard"].records]]
    digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, dg.AssetCheckEvaluation(asset_key=dg.AssetKey(INDEX_ASSET), check_name=INDEX_CHECK, **fields)


def staleness_evaluations(
    instance: dg.DagsterInstance, asset_graph, cursor: "str | None", settings: "ScreenerSettings | None" = None
) -> "tuple[list[dg.AssetCheckEvaluation], str]":
    """The sensor's tick: an evaluation for each asset whose stale set changed since ``cursor``, and the new cursor.

    With ``settings``, ``experiment_index``'s ``index_current`` too, when its set of out-of-date rows changed.
    """
    seen = json.loads(cursor) if cursor else {}
    current, events = {}, []
    if settings is not None:
        index = _index_evaluation(settings)
        if index is not None:
            digest, event = index
            current[f"{INDEX_ASSET}:{INDEX_CHECK}"] = digest
            if seen.get(f"{INDEX_ASSET}:{INDEX_CHECK}") != digest:
                events.append(event)
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
    @running_sensor(
        "stale_partitions_sensor",
        every_seconds=60,
        description="Re-evaluates partitions_current on each partitioned sweep asset (no run) when its set of stale "
        "partitions changes, and experiment_index's index_current when its set of out-of-date leaderboard rows "
        "changes, so a card shows a failed check while anything it reports is stale.",
    )
    def stale_partitions_sensor(context: dg.SensorEvaluationContext, settings: ScreenerSettings) -> dg.SensorResult:
        events, cursor = staleness_evaluations(
            context.instance, context.repository_def.asset_graph, context.cursor, settings
        )
        for event in events:
            context.log.info(f"{event.asset_key.to_user_string()}: {event.description}")
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return stale_partitions_sensor
