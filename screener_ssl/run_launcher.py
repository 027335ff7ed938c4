"""A run launcher whose run workers the run monitor can check, so a killed run frees its pool slot.

Dagster's ``DefaultRunLauncher`` cannot tell the run monitor whether a run's process is
alive, so a run whose process was killed (``kill -9`` of ``dagster asset materialize``, an
out-of-memory kill) stays STARTED and keeps its concurrency slot in the ``torch`` or
``duckdb`` pool forever. This launcher launches exactly like the default one and adds the
health check: a STARTED run is FAILED when every process that recorded itself in the run's
engine events (run worker, step workers; ``pid`` metadata) is gone from this host. The run
monitor then marks it failed and, after ``free_slots_after_run_end_seconds``, frees its slots
(``dagster.yaml``, section ``run_monitoring``).

It is meant for a single-host instance (``dagster dev`` with local storage): pids are looked
up on the machine the monitor runs on.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
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
        pids: list[int] = []
        for record in self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
            raw = metadata.get("pid")
            text = getattr(raw, "value", raw)
            if text is not None and str(text).isdigit() and int(text) not in pids:
                pids.append(int(text))
        return pids

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
