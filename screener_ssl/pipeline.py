"""Plan and launch the pipeline's runs: the one runner behind ``screener-ssl materialize`` and ``make demo``.

A run is a :class:`PlannedRun`: one named job (``defs/schedules.py``), limited to some of its
assets, for one sweep partition or none. :func:`plan` turns an asset selection into the runs
that materialize it, in the pipeline's order (the data job, then each partition's jobs, then the
index); :func:`launch` executes one run in this process, recorded in the instance;
:func:`materialize` executes a plan in order, reporting each run; :func:`run_partitions` executes
the sweep job for many partitions, several at once in worker processes when asked, each with as
many torch threads as its point asks for (``train.threads``).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import dagster as dg

from screener_ssl.defs.partitions import split_partition_key
from screener_ssl.defs.schedules import FINETUNE_JOB, PIPELINE_JOBS, SWEEP_JOB, finetunable_keys
from screener_ssl.defs.staleness import run_subset
from screener_ssl.runs.sweep import Sweep
from screener_ssl.store.environment import project_variables, set_worker_thread_counts

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PARTITIONED_JOBS = (SWEEP_JOB, FINETUNE_JOB)
TORCH_POOL = "torch"  # the pool of the training and probing steps (defs/ssl, defs/probe)


class PlanError(ValueError):
    """A selection, variant or partition key the definitions do not have; the message lists those they do."""


@dataclass(frozen=True)
class PlannedRun:
    """A run of ``job`` limited to ``assets`` (every asset of the job when empty), for ``partition`` or none."""

    job: str
    assets: tuple[str, ...]
    partition: str | None = None

    def describe(self) -> str:
        return f"{self.job} [{','.join(self.assets)}]" + (f" {self.partition}" if self.partition else "")


def load_definitions() -> dg.Definitions:
    """The project's definitions as ``dagster`` loads them (the defs folder), for this process's settings.

    Loaded once per set of ``SCREENER_SSL_*`` variables (the settings resource reads its configuration from them).
    """
    return _definitions(tuple(sorted(project_variables().items())))


@functools.lru_cache(maxsize=4)
def _definitions(settings_variables: tuple[tuple[str, str], ...]) -> dg.Definitions:
    return dg.load_from_defs_folder(project_root=PROJECT_ROOT)


# --------------------------------------------------------------------------- planning


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
                raise PlanError(f"{exc}; defined keys: {', '.join(defined)}") from None
        _require_defined(sweep, "partition", [k for k in partitions if k not in defined], "keys", defined)
        return list(dict.fromkeys(partitions)), True
    if variants:
        declared = sorted({v for v in sweep.variants} | {p.base_variant for p in sweep.points.values()})
        _require_defined(sweep, "variant", [v for v in variants if not sweep.partition_keys(v)], "variants", declared)
        return list(dict.fromkeys(k for v in variants for k in sweep.partition_keys(v))), False
    return defined, False


def _require_defined(sweep: Sweep, kind: str, unknown: list[str], listed: str, defined: list[str]) -> None:
    """A :class:`PlanError` naming the ``unknown`` ones and the ``defined`` ones, when there are unknown ones."""
    if unknown:
        raise PlanError(
            f"{kind} {', '.join(map(repr, unknown))} is not defined by the sweep {sweep.source}; "
            f"defined {listed}: {', '.join(defined)}"
        )


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
        raise PlanError(
            f"no asset {', '.join(map(repr, unknown)) or '(empty selection)'} in the definitions; "
            f"defined assets: {', '.join(a for assets in jobs.values() for a in assets)}"
        )
    wanted = {job: tuple(a for a in assets if a in select) for job, assets in jobs.items()}
    partitioned = [job for job in PIPELINE_JOBS if job in PARTITIONED_JOBS and wanted[job]]
    if (variants or partitions) and not partitioned:
        raise PlanError(f"{', '.join(select)} are not partitioned; drop --variant/--partition")
    keys, named = select_keys(sweep, variants, partitions) if partitioned else ([], False)
    notes = []
    if wanted[FINETUNE_JOB]:
        finetunable = set(finetunable_keys(keys))
        skipped = [k for k in keys if k not in finetunable]
        if skipped and named:
            raise PlanError(
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


# --------------------------------------------------------------------------- launching


def run_config(log_level: str) -> dict:
    """Run config whose console logger keeps ``log_level`` and above (INFO: training progress, not step bookkeeping)."""
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}


def launch(
    defs: dg.Definitions, instance: dg.DagsterInstance, run: PlannedRun, *, log_level: str = "INFO",
    tags: dict[str, str] | None = None, raise_on_error: bool = False,
) -> dg.ExecuteInProcessResult:
    """Execute ``run`` in this process, recorded in ``instance``."""
    job = defs.resolve_job_def(run.job)
    if run.assets:
        job = run_subset(job, list(run.assets))
    return job.execute_in_process(
        partition_key=run.partition,
        instance=instance,
        run_config=run_config(log_level),
        tags=tags,
        raise_on_error=raise_on_error,
    )


def failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step of ``result`` and its error."""
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            return f"{event.step_key}: {error.message.strip() if error else 'failed'}"
    return "the run failed"


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, runs: list[PlannedRun], log_level: str) -> int:
    """Execute ``runs`` in order; a failed partition skips its later runs, a failed data run stops everything."""
    failed: list[str] = []
    for i, run in enumerate(runs, 1):
        if run.partition and run.partition in failed:
            print(f"[{i}/{len(runs)}] {run.describe()}: skipped, its partition failed earlier", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {run.describe()} ...", flush=True)
        started = time.perf_counter()
        result = launch(defs, instance, run, log_level=log_level)
        took = time.perf_counter() - started
        if result.success:
            print(f"[{i}/{len(runs)}] {run.describe()}: ok in {took:.0f}s (run {result.run_id})", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {run.describe()}: FAILED in {took:.0f}s (run {result.run_id}): {failure(result)}",
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


# --------------------------------------------------------------------------- partitions at once


def run_partition(key: str, tags: dict[str, str], log_level: str) -> tuple[str, float, float]:
    """One sweep partition as a run of ``sweep_partition_job`` in this process: (key, wall s, CPU s).

    The worker of :func:`run_partitions`: it loads the definitions and the instance itself (DAGSTER_HOME
    and the settings come from the environment it inherits). A failed run raises.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = launch(load_definitions(), dg.DagsterInstance.get(), PlannedRun(SWEEP_JOB, (), key),
                    log_level=log_level, tags=tags, raise_on_error=True)
    if not result.success:
        raise SystemExit(f"run of {SWEEP_JOB} for partition {key} failed")
    return key, time.perf_counter() - wall, time.process_time() - cpu


def max_point_threads(sweep: Sweep, keys: list[str]) -> int:
    return max((sweep.point(*split_partition_key(key)).train.threads for key in keys), default=1)


def concurrent_partitions(requested: int, cores: int, threads: int) -> int:
    """Partitions run at once: as asked, but never more torch threads than cores."""
    return max(1, min(requested, cores // max(threads, 1)))


@contextlib.contextmanager
def pool_slots(instance: dg.DagsterInstance, pool: str, slots: int) -> Iterator[None]:
    """``pool`` holds at least ``slots`` slots while the block runs, then its limit is as before.

    The instance's pools let one torch step run at a time (dagster.yaml) so two multi-threaded
    runs cannot oversubscribe the cores; concurrent partitions are single-threaded.
    """
    storage = instance.event_log_storage
    if slots <= 1 or not storage.supports_global_concurrency_limits:
        yield
        return
    before = storage.get_concurrency_info(pool)
    if before.limit is not None and before.limit >= slots:
        yield
        return
    storage.set_concurrency_slots(pool, slots)
    try:
        yield
    finally:
        if before.limit is None or before.using_default_limit:
            storage.delete_concurrency_limit(pool)  # back to the instance's default limit
        else:
            storage.set_concurrency_slots(pool, before.limit)


def run_partitions(
    keys: list[str], jobs: int, threads: int, instance: dg.DagsterInstance,
    tags: Callable[[str], dict[str, str]], done: Callable[[int, str, float, float], None], log_level: str = "INFO",
) -> None:
    """Every key through :func:`run_partition`, ``jobs`` at a time (in this process when 1).

    ``tags(key)``: the tags of the key's run; ``done(i, key, wall s, CPU s)`` is called as each finishes.
    """
    if jobs <= 1:
        for i, key in enumerate(keys, 1):
            done(i, *run_partition(key, tags(key), log_level))
        return
    with pool_slots(instance, TORCH_POOL, jobs), ProcessPoolExecutor(
        max_workers=jobs, mp_context=get_context("spawn"), initializer=set_worker_thread_counts, initargs=(threads,)
    ) as pool:
        pending: set[Future] = {pool.submit(run_partition, key, tags(key), log_level) for key in keys}
        finished = 0
        while pending:
            complete, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in complete:
                finished += 1
                done(finished, *future.result())
