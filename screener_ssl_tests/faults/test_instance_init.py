"""A fresh SQLite instance is created once, under a lock, before any run: concurrent first commands leave one schema head."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from unittest import mock

import dagster as dg
from dagster import DefaultRunLauncher
from dagster._core.launcher.base import LaunchRunContext

from screener_ssl.instance import open_instance
from screener_ssl.run_launcher import POOLS, MonitoredRunLauncher
from screener_ssl_tests.defs.project import load_defs
from screener_ssl_tests.faults.test_run_monitoring import REPO

OPEN = """
import sys, time
start = float(sys.argv[2])
while time.time() < start:  # both processes open the instance at the same moment
    time.sleep(0.001)
from unittest import mock

import dagster as dg
from dagster import DefaultRunLauncher
from dagster._core.launcher.base import LaunchRunContext

from screener_ssl.instance import open_instance
from screener_ssl.run_launcher import POOLS, MonitoredRunLauncher
from screener_ssl_tests.defs.project import load_defs
open_instance(sys.argv[1], log=lambda _m: None).dispose()
"""


def _heads(home) -> dict[str, list]:
    return {
        str(db.relative_to(home)): sqlite3.connect(db).execute("SELECT version_num FROM alembic_version").fetchall()
        for db in sorted(home.rglob("*.db"))
    }


def test_open_instance_creates_every_storage_up_front(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    open_instance(home, log=lambda _m: None).dispose()
    heads = _heads(home)
    assert set(heads) == {"history/runs.db", "history/runs/index.db", "schedules/schedules.db"}
    assert all(len(rows) == 1 for rows in heads.values()), heads


def test_two_first_commands_at_once_leave_one_schema_head(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    start = time.time() + 8  # after both interpreters have imported dagster
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN, str(home), str(start)], cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()[-3000:]
    reference = tmp_path / "reference"
    reference.mkdir()
    shutil.copy(REPO / "dagster.yaml", reference / "dagster.yaml")
    open_instance(reference, log=lambda _m: None).dispose()
    # Unserialized, the runs database ends with another (or a second) schema version.
    assert _heads(home) == _heads(reference)
    open_instance(home, log=lambda _m: None).dispose()  # and the instance still opens


def test_open_instance_creates_each_pool_at_its_limit(tmp_path):
    # Dagster creates a pool's slots at a run's first claim, inside that run's transaction: two
    # first claims at once each count no slot and each add one. Created up front, a pool of limit
    # 1 has one slot whoever claims first.
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with open_instance(home, log=lambda _m: None) as instance:
        for pool in POOLS:
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert (info.limit, info.slot_count) == (1, 1), (pool, info)
        # A limit a user set stays as they set it.
        instance.event_log_storage.set_concurrency_slots("torch", 2)
    with open_instance(home, log=lambda _m: None) as instance:
        assert instance.event_log_storage.get_concurrency_info("torch").slot_count == 2


def test_the_launcher_creates_the_pools_before_a_launch(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_launcher, MonitoredRunLauncher)
        assert set(POOLS).isdisjoint(instance.event_log_storage.get_concurrency_keys())
        with mock.patch.object(DefaultRunLauncher, "launch_run") as launch:
            instance.run_launcher.launch_run(LaunchRunContext(dagster_run=None, workspace=None))
        launch.assert_called_once()
        assert set(POOLS) <= set(instance.event_log_storage.get_concurrency_keys())


def test_every_pool_of_the_definitions_is_a_project_pool():
    defs = load_defs()
    used = {pool for node in defs.resolve_asset_graph().asset_nodes for pool in node.pools}
    assert used == set(POOLS), f"pools in the definitions {sorted(used)}; run_launcher.POOLS {sorted(POOLS)}"
