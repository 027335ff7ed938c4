"""The project's command line: (re)materialize assets for every defined sweep partition, as named, tagged runs.

``dagster asset materialize --select probe_metrics`` needs one ``--partition "objective|variant"``
per call; this command runs a selection for every partition of the sweep file (or of some
variants, or of the keys given), one run of the asset's named job per partition, in this
process, recorded in the instance at ``DAGSTER_HOME``::

    screener-ssl partitions [--variant base]
    screener-ssl materialize --select probe_metrics [--variant base | --partition "vicreg|base" ...]
    screener-ssl backfill --job sweep_partition_job [--variant base | --partition KEY ...]
    screener-ssl pools [--free RUN_ID ...]

Before it runs anything, the command initializes the instance's storage (under a lock, so two
first commands cannot both create it) and frees the ``torch``/``duckdb`` pool slots of runs that
ended or were killed; a slot of a run that may still be alive is reported with its run id and
``screener-ssl pools --free RUN_ID``, the command that frees it (also before
``dagster asset materialize``, which does not check).

``backfill`` submits the partitions of one partitioned job to the instance's run queue instead
(``dagster job backfill``), for the daemon of ``dagster dev`` to launch. ``python -m screener_ssl.cli``
is the same command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from screener_ssl.defs.partitions import split_partition_key
from screener_ssl.defs.schedules import FINETUNE_JOB, PIPELINE_JOBS, SWEEP_JOB, finetunable_keys
from screener_ssl.instance import open_instance
from screener_ssl.run_launcher import free_run_slots, pool_slot_holders
from screener_ssl.defs.staleness import run_subset
from screener_ssl.runs.sweep import Sweep
from screener_ssl.store.environment import dagster_home

PARTITIONED_JOBS = (SWEEP_JOB, FINETUNE_JOB)


class CliError(ValueError):
    """A selection, variant or partition key the definitions do not have; the message lists those they do."""


@dataclass(frozen=True)
class PlannedRun:
    job: str
    assets: tuple[str, ...]
    partition: str | None = None

    def describe(self) -> str:
        return f"{self.job} [{','.join(self.assets)}]" + (f" {self.partition}" if self.partition else "")


def job_assets(defs: dg.Definitions) -> dict[str, list[str]]:
    """Each named job of the pipeline and its assets, in the pipeline's order (assets upstream first)."""
    order = [k.to_user_string() for k in defs.resolve_asset_graph().toposorted_asset_keys]
    return {
        name: sorted((k.to_user_string() for k in defs.resolve_job_def(name).asset_layer.selected_asset_keys),
                     key=order.index)
        for name in PIPELINE_JOBS
    }


def select_keys(sweep: Sweep, variants: list[str] | None, partitions: list[str] | None) -> tuple[list[str], bool]:
    """The partition keys asked for, and whether they were named one by one; unknown ones are an error."""
    defined = sweep.partition_keys()
    if partitions:
        for key in partitions:
            try:
                split_partition_key(key)
            except ValueError as exc:
                raise CliError(f"{exc}; defined keys: {', '.join(defined)}") from None
        unknown = [k for k in partitions if k not in defined]
        if unknown:
            raise CliError(
                f"partition {', '.join(map(repr, unknown))} is not defined by the sweep {sweep.source}; "
                f"defined keys: {', '.join(defined)}"
            )
        return list(dict.fromkeys(partitions)), True
    if variants:
        unknown = [v for v in variants if not sweep.partition_keys(v)]
        if unknown:
            declared = sorted({v for v in sweep.variants} | {p.base_variant for p in sweep.points.values()})
            raise CliError(
                f"variant {', '.join(map(repr, unknown))} is not defined by the sweep {sweep.source}; "
                f"defined variants: {', '.join(declared)}"
            )
        return list(dict.fromkeys(k for v in variants for k in sweep.partition_keys(v))), False
    return defined, False


def plan(
    defs: dg.Definitions, sweep: Sweep, select: list[str], variants: list[str] | None = None,
    partitions: list[str] | None = None,
) -> tuple[list[PlannedRun], list[str]]:
    """The runs that materialize ``select``: unpartitioned jobs before and after, per partition in between.

    Returns the runs in order and notes on what was left out (partitions that cannot be finetuned).
    """
    jobs = job_assets(defs)
    owner = {asset: job for job, assets in jobs.items() for asset in assets}
    unknown = [a for a in select if a not in owner]
    if unknown or not select:
        raise CliError(
            f"no asset {', '.join(map(repr, unknown)) or '(empty selection)'} in the definitions; "
            f"defined assets: {', '.join(a for assets in jobs.values() for a in assets)}"
        )
    wanted = {job: tuple(a for a in assets if a in select) for job, assets in jobs.items()}
    partitioned = [job for job in PIPELINE_JOBS if job in PARTITIONED_JOBS and wanted[job]]
    if (variants or partitions) and not partitioned:
        raise CliError(f"{', '.join(select)} are not partitioned; drop --variant/--partition")
    keys, named = select_keys(sweep, variants, partitions) if partitioned else ([], False)
    notes = []
    if wanted[FINETUNE_JOB]:
        finetunable = set(finetunable_keys(keys))
        skipped = [k for k in keys if k not in finetunable]
        if skipped and named:
            raise CliError(
                f"finetuned_classifier: {', '.join(skipped)} cannot be finetuned (the objective has no weights); "
                f"finetunable keys: {', '.join(finetunable_keys(sweep.partition_keys()))}"
            )
        if skipped:
            notes.append(f"finetuned_classifier skipped for {len(skipped)} partitions without weights: {', '.join(skipped)}")
    runs = []
    before, after = PIPELINE_JOBS[0], PIPELINE_JOBS[-1]
    if wanted[before]:
        runs.append(PlannedRun(before, wanted[before]))
    for key in keys:
        for job in partitioned:
            if job != FINETUNE_JOB or key in finetunable_keys([key]):
                runs.append(PlannedRun(job, wanted[job], key))
    if wanted[after]:
        runs.append(PlannedRun(after, wanted[after]))
    return runs, notes


def _failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            return f"{event.step_key}: {error.message.strip() if error else 'failed'}"
    return "the run failed"


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, runs: list[PlannedRun], log_level: str) -> int:
    """Execute ``runs`` in order; a failed partition skips its later runs, a failed data run stops everything."""
    failed: list[str] = []
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    for i, run in enumerate(runs, 1):
        if run.partition and run.partition in failed:
            print(f"[{i}/{len(runs)}] {run.describe()}: skipped, its partition failed earlier", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {run.describe()} ...", flush=True)
        started = time.perf_counter()
        result = run_subset(defs.resolve_job_def(run.job), list(run.assets)).execute_in_process(
            instance=instance, partition_key=run.partition, run_config=run_config, raise_on_error=False,
        )
        took = time.perf_counter() - started
        if result.success:
            print(f"[{i}/{len(runs)}] {run.describe()}: ok in {took:.0f}s (run {result.run_id})", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {run.describe()}: FAILED in {took:.0f}s (run {result.run_id}): {_failure(result)}",
              flush=True)
        failed.append(run.partition or run.job)
        if run.job == PIPELINE_JOBS[0]:
            print("the data assets failed; nothing downstream was run", file=sys.stderr)
            return 1
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"{len(runs)} runs succeeded")
    return 0


def backfill_command(sweep: Sweep, job: str, keys: list[str]) -> list[str]:
    """``dagster job backfill`` for ``keys`` of ``job`` (partition keys hold no commas: the sweep writes '_')."""
    if job == FINETUNE_JOB:
        keep = finetunable_keys(keys)
        if not keep:
            raise CliError(f"none of {', '.join(keys)} can be finetuned; finetunable keys: "
                           f"{', '.join(finetunable_keys(sweep.partition_keys()))}")
        keys = keep
    return [
        sys.executable, "-m", "dagster", "job", "backfill", "-m", "screener_ssl.definitions", "-j", job,
        "--partitions", ",".join(keys), "--noprompt",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="screener-ssl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def partition_options(p: argparse.ArgumentParser) -> None:
        which = p.add_mutually_exclusive_group()
        which.add_argument("--variant", action="append", help="only the points of this variant (repeatable)")
        which.add_argument("--partition", action="append", help='one key "objective|variant" (repeatable)')

    listing = sub.add_parser("partitions", help="list the sweep's partition keys and the jobs that run them")
    listing.add_argument("--variant", action="append", help="only the points of this variant (repeatable)")
    run = sub.add_parser("materialize", help="run an asset selection for every chosen partition, here and now")
    run.add_argument("--select", required=True, help="comma-separated asset names, e.g. probe_metrics")
    partition_options(run)
    run.add_argument("--log-level", default="INFO", help="Dagster console log level (default INFO)")
    queue = sub.add_parser("backfill", help="submit a partitioned job's runs to the instance's run queue")
    queue.add_argument("--job", required=True, choices=PARTITIONED_JOBS)
    partition_options(queue)
    pools = sub.add_parser("pools", help="list the runs holding pool slots; free those of killed runs")
    pools.add_argument("--free", action="append", default=[], metavar="RUN_ID",
                       help="mark this run failed and give its pool slots back (repeatable)")
    return parser


def pools_command(run_ids: list[str]) -> int:
    """Free dead runs' slots, then the runs named; print who still holds a slot."""
    instance = open_instance()
    for run_id in run_ids:
        if instance.get_run_by_id(run_id) is None and not any(h.run_id == run_id for h in pool_slot_holders(instance)):
            print(f"screener-ssl: error: no run {run_id} in the instance at {dagster_home()}",
                  file=sys.stderr)
            return 2
        free_run_slots(instance, run_id, "freed with screener-ssl pools --free")
        print(f"freed the pool slots of run {run_id}")
    holders = pool_slot_holders(instance)
    for holder in holders:
        print(holder.describe())
    if not holders:
        print("no pool slot is held")
    return 0


def main(argv: list[str] | None = None, defs: dg.Definitions | None = None) -> int:
    args = _parser().parse_args(argv)
    dagster_home(default=Path.cwd())
    if args.command == "pools":
        return pools_command(args.free)
    if defs is None:
        from screener_ssl.definitions import defs
    sweep: Sweep = defs.resources["settings"].load_sweep()
    try:
        if args.command == "partitions":
            keys, _ = select_keys(sweep, args.variant, None)
            finetunable = set(finetunable_keys(keys))
            for key in keys:
                print(f"{key}\t{SWEEP_JOB + ', ' + FINETUNE_JOB if key in finetunable else SWEEP_JOB}")
            return 0
        if args.command == "backfill":
            keys, _ = select_keys(sweep, args.variant, args.partition)
            command = backfill_command(sweep, args.job, keys)
            print(f"submitting {args.job} for {len(command[-2].split(','))} partitions to the run queue of "
                  f"{dagster_home()}")
            return subprocess.run(command).returncode
        select = [a.strip() for a in args.select.split(",") if a.strip()]
        runs, notes = plan(defs, sweep, select, args.variant, args.partition)
    except CliError as exc:
        print(f"screener-ssl: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note)
    print(f"{len(runs)} runs into the instance at DAGSTER_HOME={dagster_home()} (sweep {sweep.source})")
    return materialize(defs, open_instance(), runs, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
