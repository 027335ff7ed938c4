"""The DuckDB warehouse and the Parquet directories beside it, committed as one unit.

DuckDB allows one writer process: a notebook, the DuckDB CLI or another run holding
``warehouse.duckdb`` open makes :func:`connect_with_retry` wait and retry (``LockRetry``),
then stop with :class:`WarehouseLockedError`. :func:`publish_dir_and_tables` stages a
directory of files, writes the tables inside an open transaction, swaps the directory in
and commits: when any step fails (lock, disk, kill before the swap) neither the directory
nor the tables change, so Parquet readers and DuckDB readers always see the same data.

Writers take the warehouse as a file path (connected through :func:`connect_with_retry`)
or as a :data:`ConnectionFactory`, a callable whose every call gives a context manager
yielding an open read-write connection, closed on exit (an orchestrator's resource, say).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from screener_ssl.store.artifacts import dir_mode


class WarehouseLockedError(RuntimeError):
    """Another process holds the DuckDB file; the message names the file and what was left unchanged."""


@dataclass(frozen=True)
class LockRetry:
    """Waits between connection attempts while another process holds the DuckDB lock."""

    attempts: int = 6
    first_wait_s: float = 0.5
    backoff: float = 2.0
    max_wait_s: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def waits(self) -> list[float]:
        return [min(self.first_wait_s * self.backoff**k, self.max_wait_s) for k in range(self.attempts - 1)]


# About 15 s of waiting in all: long enough for a concurrent index write, short enough to fail clearly.
DEFAULT_LOCK_RETRY = LockRetry()


# Each call: a context manager yielding an open read-write DuckDB connection, closed on exit.
ConnectionFactory = Callable[[], AbstractContextManager[Any]]


def _is_lock_error(err: Exception) -> bool:
    return "lock" in str(err).lower()


def connect_with_retry(db_path: Path, retry: LockRetry | None = None, config: Mapping[str, Any] | None = None):
    """A read-write DuckDB connection to ``db_path``, retrying while another process holds its lock.

    ``config``: DuckDB connection options (every connection to one file in a process must agree).
    """
    import duckdb

    retry = retry or DEFAULT_LOCK_RETRY
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    waits = retry.waits()
    for attempt in range(retry.attempts):
        try:
            return duckdb.connect(str(db_path), config=dict(config or {}))
        except duckdb.IOException as err:
            if not _is_lock_error(err):
                raise
            if attempt == retry.attempts - 1:
                raise WarehouseLockedError(
                    f"DuckDB file {db_path} is locked by another process after {retry.attempts} attempts over "
                    f"{sum(waits):.1f}s ({err}). Close the other connection (a notebook, the DuckDB CLI, another "
                    "run) and materialize again; nothing was changed."
                ) from err
            retry.sleep(waits[attempt])
    raise AssertionError("unreachable")  # pragma: no cover


def connection_factory(warehouse: Path | ConnectionFactory, retry: LockRetry | None = None) -> ConnectionFactory:
    """``warehouse`` when it is a factory already, else connections to that file through :func:`connect_with_retry`."""
    if callable(warehouse):
        return warehouse
    return lambda: connect_with_retry(warehouse, retry)


def _replace_tables(con, tables: Mapping[str, pl.DataFrame | None]) -> None:
    """Replace each table with its frame; a None frame drops the table (an empty result has no table)."""
    for name, frame in tables.items():
        if frame is None:
            con.execute(f'DROP TABLE IF EXISTS "{name}"')
            continue
        con.register("_incoming_frame", frame.to_arrow())
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _incoming_frame')
        con.unregister("_incoming_frame")
        if name == "bars":
            # The scan's recent-dates slice is rewritten in the same transaction as the bars.
            from screener_ssl.data.recent_bars import refresh_recent_bars

            refresh_recent_bars(con, name)


def write_tables(
    warehouse: Path | ConnectionFactory, tables: Mapping[str, pl.DataFrame], retry: LockRetry | None = None
) -> None:
    """Replace each table in one transaction (a file path: retried per ``retry`` while it is locked)."""
    with connection_factory(warehouse, retry)() as con:
        con.execute("BEGIN TRANSACTION")
        _replace_tables(con, tables)
        con.execute("COMMIT")


def _fsync_tree(directory: Path) -> None:
    for file in directory.rglob("*"):
        if file.is_file():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())


def publish_dir_and_tables(
    final_dir: Path,
    write_files: Callable[[Path], None],
    warehouse: Path | ConnectionFactory,
    tables: Mapping[str, pl.DataFrame],
    retry: LockRetry | None = None,
) -> None:
    """Replace ``final_dir`` (files from ``write_files(tmp)``) and the DuckDB ``tables`` together.

    ``warehouse``: the DuckDB file (connected with ``retry``) or a :data:`ConnectionFactory`.
    Order: stage the files in a hidden temp sibling, connect (with retry), write the tables in
    an open transaction, swap the directory in, commit. A failure before the commit rolls the
    transaction back and puts the old directory back; a kill before the swap leaves only a
    hidden ``.tmp-*`` dir that readers skip.
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    old: Path | None = None
    try:
        write_files(tmp)
        _fsync_tree(tmp)
        os.chmod(tmp, dir_mode())  # mkdtemp makes 0700
        with connection_factory(warehouse, retry)() as con:
            con.execute("BEGIN TRANSACTION")
            _replace_tables(con, tables)
            if final.exists():
                old = final.parent / f".old-{final.name}-{secrets.token_hex(4)}"
                os.replace(final, old)
            os.replace(tmp, final)
            try:
                con.execute("COMMIT")
            except BaseException:
                failed = final.parent / f".failed-{final.name}-{secrets.token_hex(4)}"
                os.replace(final, failed)
                if old is not None:
                    os.replace(old, final)
                    old = None
                shutil.rmtree(failed, ignore_errors=True)
                raise
    except BaseException:
        if old is not None and not final.exists():  # failed between the two renames
            os.replace(old, final)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
