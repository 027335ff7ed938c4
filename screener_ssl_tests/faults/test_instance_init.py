"""A fresh SQLite instance is created once, under a lock, before any run: concurrent first commands leave one schema head."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time

from screener_ssl.instance import open_instance
from screener_ssl_tests.faults.test_run_monitoring import REPO

OPEN = """
import sys, time
start = float(sys.argv[2])
while time.time() < start:  # both processes open the instance at the same moment
    time.sleep(0.001)
from screener_ssl.instance import open_instance
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
