"""A run launcher whose run workers the run monitor can check, so a killed run frees its pool slot.

Dagster's ``DefaultRunLauncher`` cannot tell the run monitor whether a run's process is
alive, so a run whose process was killed (``kill -9`` of ``dagster asset materialize``, an
out-of-memory kill) stays STARTED and keeps its concurrency slot in the ``torch`` or
``duckdb`` pool forever. This launcher launches exactly like the default one and adds the
health check: a STARTED run is FAILED when every process that recorded itself in the run's
engine events (run worker, step workers; ``pid`` metadata) is gone from this host. The run
monitor then marks it failed and, after ``free_slots_after_run_end_seconds``, frees its slots
(``dagster.yaml``, section ``run_monitoring``). Before a launch it creates the slots of the
project's pools if they are missing (:func:`initialize_pools`), so two runs launched together on
a fresh instance cannot each create a slot of a pool of limit 1.

It is meant for a single-host instance (``dagster dev`` with local storage): pids are looked
up on the machine the monitor runs on.

Without the daemon nothing runs the monitor, so the command line checks the pools itself
before it launches anything (:func:`release_dead_runs_slots`): the slots of runs that ended or
whose processes are all gone are given back at once; a slot of a run that may still be alive is
reported with the run id and the command that frees it (``screener-ssl pools --free RUN_ID``).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

# Allowed gap between a process's start and the run's start before a pid counts as reused.
_PID_REUSE_SLACK_S = 5.0


def _proc_start_time(pid: int) -> float | None:
    """Epoch seconds at which process ``pid`` started (Linux /proc); None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Field 22 of /proc/<pid>/stat (index 19 after the command name) is the start in clock ticks.
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, not_started_after: float | None = None) -> bool:
    """True when ``pid`` runs here, is not a zombie and (when known) started before ``not_started_after``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    status = Path(f"/proc/{pid}/status")
    try:
        if any(line.startswith("State:") and "Z" in line.split()[1] for line in status.read_text().splitlines()):
            return False  # killed, not yet reaped: it holds nothing
    except OSError:
        pass
    started = _proc_start_time(pid)
    if not_started_after is not None and started is not None and started > not_started_after + _PID_REUSE_SLACK_S:
        return False  # the pid was reused by a newer process
    return True


class MonitoredRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` plus a run-worker health check from the pids the run recorded."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def run_pids(self, run: DagsterRun) -> list[int]:
        """Pids from the run's engine events (``pid`` metadata), in the order they were logged."""
        return _run_pids(self._instance, run.run_id)

    def launch_run(self, context: LaunchRunContext) -> None:
        """Launch as the default launcher does, the project's pools created first (see :func:`initialize_pools`)."""
        with instance_lock(self._instance.root_directory):
            initialize_pools(self._instance)
        super().launch_run(context)

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pids = self.run_pids(run)
        if not pids:
            # Nothing recorded yet (still starting): the start timeout covers that case.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no pid recorded yet")
        record = self._instance.get_run_record_by_id(run.run_id)
        started = record.start_time if record is not None else None
        alive = [pid for pid in pids if process_alive(pid, started)]
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"processes {alive} alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"every process of run {run.run_id} is gone (pids {pids}); it was killed"
        )


# --------------------------------------------------------------------------- pool slots on the CLI path

POOLS = ("torch", "duckdb")  # the project's pools (dagster.yaml, defs/ssl, defs/probe, defs/data)
INIT_LOCK = ".screener_ssl-instance.lock"  # in DAGSTER_HOME: storage and pools are created under it
_PROCESS_LOCK = threading.Lock()  # the file lock serializes processes; this, a launcher's threads


def initialize_pools(instance: DagsterInstance, pools: tuple[str, ...] = POOLS) -> None:
    """Create the slots of every pool in ``pools`` that has none yet, at the instance's default limit.

    A pool already set up (by an earlier call, a run, or a limit a
    user set in the UI or with ``dagster instance concurrency set``) is left as it is.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or instance.global_op_concurrency_default_limit is None:
        return
    existing = set(storage.get_concurrency_keys())
    for pool in pools:
        if pool not in existing:
            storage.initialize_concurrency_limit_to_default(pool)


@contextmanager
def instance_lock(home: str | Path) -> Iterator[None]:
    """The exclusive lock in ``home`` under which storage and pools are created (one process at a time)."""
    with _PROCESS_LOCK, open(Path(home) / INIT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class PoolSlotHolder:
    """A run holding slots of a concurrency pool, and whether it can still be running."""

    pool: str
    run_id: str
    steps: tuple[str, ...]
    status: str  # the run's status, or "DELETED"
    verdict: str  # "finished", "dead" (every process gone), "alive", or "unknown"
    detail: str

    def describe(self) -> str:
        return (f"pool {self.pool!r}: run {self.run_id} ({self.status}) holds a slot for step(s) "
                f"{', '.join(self.steps)}; {self.detail}")


def _single_host(instance) -> bool:
    """Pids mean something only on the host of a local (SQLite) instance."""
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

    return isinstance(instance.run_storage, SqliteRunStorage)


def _run_pids(instance, run_id: str) -> list[int]:
    pids: list[int] = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        raw = metadata.get("pid")
        text = getattr(raw, "value", raw)
        if text is not None and str(text).isdigit() and int(text) not in pids:
            pids.append(int(text))
    return pids


def pool_slot_holders(instance, pools: tuple[str, ...] = POOLS) -> list[PoolSlotHolder]:
    """Every run holding a slot of ``pools`` (and any other pool with claims), with a verdict on its liveness."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = []
    for pool in sorted(set(pools) | set(storage.get_concurrency_keys())):
        steps_by_run: dict[str, list[str]] = {}
        for slot in storage.get_concurrency_info(pool).claimed_slots:
            steps_by_run.setdefault(slot.run_id, []).append(slot.step_key)
        for run_id, steps in sorted(steps_by_run.items()):
            record = instance.get_run_record_by_id(run_id)
            if record is None:
                holders.append(PoolSlotHolder(pool, run_id, tuple(steps), "DELETED", "finished",
                                              "the run no longer exists"))
                continue
            run = record.dagster_run
            status = run.status.value
            if run.is_finished:
                holders.append(PoolSlotHolder(pool, run_id, tuple(steps), status, "finished",
                                              "the run has ended, its slot was never given back"))
                continue
            pids = _run_pids(instance, run_id)
            if not pids or not _single_host(instance):
                why = "it recorded no process yet" if not pids else "its processes run on another host"
                holders.append(PoolSlotHolder(
                    pool, run_id, tuple(steps), status, "unknown",
                    f"{why}, so whether it still runs cannot be told from here. If it is dead, free it with "
                    f"`screener-ssl pools --free {run_id}` (marks the run failed, frees its slots); until then "
                    f"steps in pool {pool!r} wait for it",
                ))
                continue
            alive = [pid for pid in pids if process_alive(pid, record.start_time)]
            if alive:
                holders.append(PoolSlotHolder(pool, run_id, tuple(steps), status, "alive",
                                              f"process(es) {alive} alive; steps in pool {pool!r} wait for it"))
            else:
                holders.append(PoolSlotHolder(pool, run_id, tuple(steps), status, "dead",
                                              f"every process of it is gone (pids {pids}): it was killed"))
    return holders


def free_run_slots(instance, run_id: str, reason: str) -> None:
    """Mark ``run_id`` failed (unless it has ended) and give every pool slot it holds back."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, reason)
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def release_dead_runs_slots(instance, log: Callable[[str], None] = print) -> list[PoolSlotHolder]:
    """Free the pool slots of runs that ended or were killed; report (``log``) those of runs that may be alive.

    Returns the holders left in place (alive or unknown). Runs whose processes are all gone are
    marked failed first, as the run monitor would; a killed run therefore never blocks the
    ``torch`` or ``duckdb`` pool of the next command without a word.
    """
    left = []
    freed: set[str] = set()
    for holder in pool_slot_holders(instance):
        if holder.verdict in ("finished", "dead"):
            if holder.run_id not in freed:
                free_run_slots(instance, holder.run_id, f"freed by the screener-ssl CLI: {holder.detail}")
                freed.add(holder.run_id)
            log(f"freed: {holder.describe()}")
        else:
            left.append(holder)
            log(holder.describe())
    return left
