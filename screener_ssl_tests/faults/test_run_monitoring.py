"""A run whose process is killed gives its pool slot back (run monitor + the project's dagster.yaml)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.monitoring import concurrency as slot_monitor
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

REPO = Path(__file__).resolve().parents[2]

BLOCKER = """
import sys, time
import dagster as dg

@dg.asset(pool="torch")
def blocker():
    open(sys.argv[1], "w").write("started")
    time.sleep(600)

with dg.DagsterInstance.get() as instance:
    dg.materialize([blocker], instance=instance)
"""


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def test_killed_run_is_failed_by_the_monitor_and_frees_its_pool_slot(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    script, marker = tmp_path / "blocker.py", tmp_path / "started"
    script.write_text(BLOCKER)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marker)], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: marker.exists() or proc.poll() is not None, 45, "the run to start its step")
        assert proc.poll() is None, "the blocking run exited before it could be killed"
        instance = dg.DagsterInstance.from_config(str(home))
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED
        assert instance.event_log_storage.get_concurrency_info("torch").active_slot_count == 1
        # While the process lives the health check says so: a live run is never reaped.
        assert instance.run_launcher.check_run_worker_health(run).status.value == "RUNNING"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    logger = logging.getLogger("run_monitoring_test")
    with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as context:
        list(execute_run_monitoring_iteration(context, logger))
        run = instance.get_run_by_id(run.run_id)
        assert run.status == DagsterRunStatus.FAILURE, "the monitor did not notice the killed run"

        # The slot is held until free_slots_after_run_end_seconds have passed since the failure.
        assert instance.event_log_storage.get_concurrency_info("torch").active_slot_count == 1
        wait_s = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=wait_s + 1)
        original = slot_monitor.get_current_datetime
        slot_monitor.get_current_datetime = lambda: later
        try:
            list(slot_monitor.execute_concurrency_slots_iteration(context, logger))
        finally:
            slot_monitor.get_current_datetime = original
    assert instance.event_log_storage.get_concurrency_info("torch").active_slot_count == 0
    instance.dispose()
