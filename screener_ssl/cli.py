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
from pathlib import Path

import dagster as dg

from screener_ssl.defs.schedules import FINETUNE_JOB, SWEEP_JOB, finetunable_keys
from screener_ssl.instance import open_instance
from screener_ssl.pipeline import PARTITIONED_JOBS, PlanError, load_definitions, materialize, plan, select_keys
from screener_ssl.run_launcher import free_run_slots, pool_slot_holders
from screener_ssl.runs.sweep import Sweep
from screener_ssl.store.environment import dagster_home

def backfill_command(sweep: Sweep, job: str, keys: list[str]) -> list[str]:
    """``dagster job backfill`` for ``keys`` of ``job`` (partition keys hold no commas: the sweep writes '_')."""
    if job == FINETUNE_JOB:
        keep = finetunable_keys(keys)
        if not keep:
            raise PlanError(f"none of {', '.join(keys)} can be finetuned; finetunable keys: "
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
        defs = load_definitions()
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
    except PlanError as exc:
        print(f"screener-ssl: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note)
    print(f"{len(runs)} runs into the instance at DAGSTER_HOME={dagster_home()} (sweep {sweep.source})")
    return materialize(defs, open_instance(), runs, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
