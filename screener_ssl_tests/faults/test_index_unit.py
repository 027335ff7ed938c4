"""The index's CSV, Parquet and DuckDB table change together: after a failure or a kill, old set or new set."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
import pytest

from screener_ssl.data import warehouse
from screener_ssl.tracking import index as ix
from screener_ssl_tests.faults.conftest import hidden_leftovers

KILL_WHILE_PUBLISHING = """
import os, signal, sys
import polars as pl
from screener_ssl.data import warehouse
from screener_ssl.tracking.index import publish_index

real = warehouse._replace_tables
def write_then_die(con, tables):
    real(con, tables)  # the new table is written inside the open transaction ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before the swap and the commit
warehouse._replace_tables = write_then_die
publish_index(pl.DataFrame({"run_id": ["a", "b", "c"]}), sys.argv[1], warehouse=sys.argv[2])
"""


def _state(models: Path, db: Path) -> tuple[list, list, list | None]:
    parquet = sorted(pl.read_parquet(models / ix.INDEX_PARQUET)["run_id"].to_list())
    csv = sorted(pl.read_csv(models / ix.INDEX_CSV)["run_id"].to_list())
    con = duckdb.connect(str(db))
    try:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'experiment_index'"
        ).fetchone()[0]
        table = sorted(r[0] for r in con.execute("SELECT run_id FROM experiment_index").fetchall()) if exists else None
    finally:
        con.close()
    return parquet, csv, table


@pytest.fixture
def published(tmp_path):
    models, db = tmp_path / "models", tmp_path / "w.duckdb"
    ix.publish_index(pl.DataFrame({"run_id": ["a"]}), models, warehouse=db)
    assert _state(models, db) == (["a"], ["a"], ["a"])
    return models, db


def test_publish_writes_files_and_table_together(published):
    models, db = published
    paths = ix.publish_index(pl.DataFrame({"run_id": ["a", "b"]}), models, warehouse=db)
    assert paths == {"csv": models / ix.INDEX_CSV, "parquet": models / ix.INDEX_PARQUET}
    assert _state(models, db) == (["a", "b"], ["a", "b"], ["a", "b"])


@pytest.mark.parametrize("where", ["parquet", "table", "commit"])
def test_a_failure_between_the_writes_keeps_the_old_set(published, monkeypatch, where):
    models, db = published
    if where == "parquet":  # the CSV is staged, the Parquet write fails
        def fail_parquet(self, *a, **k):
            raise OSError("disk full")
        monkeypatch.setattr(pl.DataFrame, "write_parquet", fail_parquet)
    elif where == "table":  # both files staged, the table write fails
        def fail_table(con, tables):
            raise OSError("disk full")
        monkeypatch.setattr(warehouse, "_replace_tables", fail_table)
    else:  # files swapped in, the commit fails
        real = warehouse._replace_tables

        class NoCommit:
            def __init__(self, con):
                self.con = con

            def execute(self, sql, *a):
                if sql == "COMMIT":
                    raise duckdb.IOException("disk full")
                return self.con.execute(sql, *a)

            def __getattr__(self, name):
                return getattr(self.con, name)

        factory = warehouse.connection_factory(db)

        @contextmanager
        def connect():
            with factory() as con:
                yield NoCommit(con)
                con.execute("ROLLBACK")

        monkeypatch.setattr(warehouse, "_replace_tables", lambda con, tables: real(con.con, tables))
        db_arg = connect
    with pytest.raises((OSError, duckdb.Error), match="disk full"):
        ix.publish_index(pl.DataFrame({"run_id": ["a", "b", "c"]}), models,
                         warehouse=db_arg if where == "commit" else db)
    monkeypatch.undo()
    assert _state(models, db) == (["a"], ["a"], ["a"])
    assert hidden_leftovers(models) == []


def test_a_kill_before_the_commit_keeps_the_old_set(published):
    models, db = published
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", KILL_WHILE_PUBLISHING, str(models), str(db)], cwd=repo,
                          env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"}, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert _state(models, db) == (["a"], ["a"], ["a"])


def test_an_empty_index_drops_the_table(published):
    models, db = published
    ix.publish_index(pl.DataFrame({"run_id": pl.Series([], dtype=pl.String)}), models, warehouse=db)
    assert _state(models, db) == ([], [], None)


def test_an_index_of_the_older_layout_is_replaced_by_links(tmp_path):
    models, db = tmp_path / "models", tmp_path / "w.duckdb"
    models.mkdir()
    pl.DataFrame({"run_id": ["old"]}).write_parquet(models / ix.INDEX_PARQUET)
    (models / ix.INDEX_CSV).write_text("run_id\nold\n")
    ix.publish_index(pl.DataFrame({"run_id": ["a"]}), models, warehouse=db)
    assert (models / ix.INDEX_PARQUET).is_symlink() and (models / ix.INDEX_CSV).is_symlink()
    assert _state(models, db) == (["a"], ["a"], ["a"])
