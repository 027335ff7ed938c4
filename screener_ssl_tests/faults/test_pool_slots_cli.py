"""The command line frees the pool slot of a killed run, or names the run and the command that frees it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.utils import make_new_run_id

from screener_ssl import cli
from screener_ssl.instance import open_instance
from screener_ssl.run_launcher import pool_slot_holders
from screener_ssl_tests.faults.test_run_monitoring import BLOCKER, REPO, _wait_for


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def _torch_slots(instance) -> int:
    return instance.event_log_storage.get_concurrency_info("torch").active_slot_count


def test_a_killed_runs_slot_is_freed_by_the_cli_and_a_live_ones_is_kept(home, tmp_path, capsys):
    script, marker = tmp_path / "blocker.py", tmp_path / "started"
    script.write_text(BLOCKER)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: marker.exists() or proc.poll() is not None, 45, "the run to start its step")
        assert proc.poll() is None, "the blocking run exited before it could be killed"
        instance = dg.DagsterInstance.from_config(str(home))
        (run,) = instance.get_runs()
        (holder,) = pool_slot_holders(instance)
        assert (holder.pool, holder.run_id, holder.verdict) == ("torch", run.run_id, "alive")
        assert cli.main(["pools"]) == 0
        assert f"run {run.run_id} (STARTED) holds a slot" in capsys.readouterr().out
        assert _torch_slots(instance) == 1  # a live run keeps its slot
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    # What `screener-ssl materialize` and the demo do before launching anything.
    open_instance(log=print)
    out = capsys.readouterr().out
    assert f"freed: pool 'torch': run {run.run_id} (STARTED)" in out and "it was killed" in out
    assert _torch_slots(instance) == 0
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    instance.dispose()


def _run_holding_a_slot(instance, status: DagsterRunStatus, pool: str = "duckdb") -> str:
    run_id = make_new_run_id()
    instance.add_run(DagsterRun(job_name="experiment_index_job", run_id=run_id, status=status))
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(pool)  # as a run's first claim does (dagster.yaml: 1 slot)
    claim = storage.claim_concurrency_slot(pool, run_id, "experiment_index")
    assert claim.slot_status.value == "CLAIMED"
    return run_id


def test_a_slot_of_a_run_that_cannot_be_checked_is_named_with_the_fix(home, capsys):
    instance = open_instance(log=print)
    run_id = _run_holding_a_slot(instance, DagsterRunStatus.STARTED)
    capsys.readouterr()
    open_instance(log=print)
    out = capsys.readouterr().out
    assert f"pool 'duckdb': run {run_id} (STARTED) holds a slot for step(s) experiment_index" in out
    assert f"screener-ssl pools --free {run_id}" in out
    assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 1
    assert cli.main(["pools", "--free", run_id]) == 0
    assert "no pool slot is held" in capsys.readouterr().out
    assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 0
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    instance.dispose()


def test_a_finished_runs_leftover_slot_is_freed_at_once(home, capsys):
    instance = open_instance(log=print)
    run_id = _run_holding_a_slot(instance, DagsterRunStatus.FAILURE, pool="torch")
    open_instance(log=print)
    assert f"freed: pool 'torch': run {run_id} (FAILURE)" in capsys.readouterr().out
    assert _torch_slots(instance) == 0
    instance.dispose()


def test_pools_refuses_an_unknown_run(home, capsys):
    assert cli.main(["pools", "--free", "no-such-run"]) == 2
    assert "no run no-such-run" in capsys.readouterr().err
