"""Helpers for fault injection: a process that holds the DuckDB lock, snapshots of a data root."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
open(sys.argv[2], "w").write("locked")
time.sleep(120)
"""


class LockHolder:
    """A separate process with ``warehouse.duckdb`` open read-write (DuckDB: one writer process)."""

    def __init__(self, db_path: Path, tmp: Path) -> None:
        marker = tmp / f"locked-{time.monotonic_ns()}"
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db_path), str(marker)])
        deadline = time.monotonic() + 30
        while not marker.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the lock-holding process did not start")
            time.sleep(0.05)

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def lock_holder(tmp_path):
    holders: list[LockHolder] = []

    def hold(db_path: Path) -> LockHolder:
        holders.append(LockHolder(db_path, tmp_path))
        return holders[-1]

    yield hold
    for holder in holders:
        holder.release()


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (hidden temp dirs included)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "warehouse.duckdb" and not p.name.endswith(".wal")
    }


def hidden_leftovers(root: Path) -> list[str]:
    """Temp or swapped-out entries a writer left behind (``.tmp-*``, ``.old-*``, ``.failed-*``, ``.*.tmp``)."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob(".*") if p.name.startswith((".tmp", ".old-", ".failed-"))
        or p.name.endswith(".tmp")
    )
