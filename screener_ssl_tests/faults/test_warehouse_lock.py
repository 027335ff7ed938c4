"""A DuckDB lock held by another process during ingestion: retried, then neither store changes."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from screener_ssl.data import dataset as ds
from screener_ssl.data.bars import validate_bars
from screener_ssl.data.warehouse import LockRetry, WarehouseLockedError
from screener_ssl.data.windows import WindowSpec
from screener_ssl_tests.conftest import random_walk_bars
from screener_ssl_tests.faults.conftest import hidden_leftovers, tree_digest

NO_WAIT = LockRetry(attempts=3, first_wait_s=0.0, sleep=lambda _s: None)


def _warehouse_bars(root) -> pl.DataFrame:
    with duckdb.connect(str(root / ds.WAREHOUSE), read_only=True) as con:
        return con.execute("SELECT * FROM bars ORDER BY ticker, date").pl()


@pytest.fixture
def two_markets(tmp_path):
    first, second = random_walk_bars(seed=1, n_days=150), random_walk_bars(seed=2, n_days=150)
    files = tmp_path / "a.parquet", tmp_path / "b.parquet"
    first.write_parquet(files[0])
    second.write_parquet(files[1])
    return (first, files[0]), (second, files[1])


def test_a_held_lock_fails_the_ingest_clearly_and_changes_neither_parquet_nor_duckdb(
    tmp_path, two_markets, lock_holder
):
    (first, first_file), (_, second_file) = two_markets
    root = tmp_path / "root"
    ds.ingest_bars(root, str(first_file), None)
    before = tree_digest(root)
    holder = lock_holder(root / ds.WAREHOUSE)
    with pytest.raises(WarehouseLockedError, match=r"warehouse\.duckdb is locked by another process.*3 attempts"):
        ds.ingest_bars(root, str(second_file), None, retry=NO_WAIT)
    assert tree_digest(root) == before, "bars/ changed although the warehouse write failed"
    assert hidden_leftovers(root) == []
    holder.release()
    expected = validate_bars(first).clean
    assert ds.load_clean_bars(root).equals(expected)
    assert _warehouse_bars(root).equals(expected)


def test_a_lock_released_while_retrying_lets_the_ingest_commit_both_stores(tmp_path, two_markets, lock_holder):
    (_, first_file), (second, second_file) = two_markets
    root = tmp_path / "root"
    ds.ingest_bars(root, str(first_file), None)
    holder = lock_holder(root / ds.WAREHOUSE)
    waits: list[float] = []

    def wait_then_release(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            holder.release()  # the other process closes its connection during our second wait

    report = ds.ingest_bars(root, str(second_file), None, retry=LockRetry(attempts=4, first_wait_s=0.1,
                                                                           sleep=wait_then_release))
    assert waits == [0.1, 0.2]
    expected = validate_bars(second).clean
    assert ds.load_clean_bars(root).equals(expected)
    assert _warehouse_bars(root).equals(expected)
    assert ds.bars_report(root)["content_hash"] == report.content_hash
    assert hidden_leftovers(root) == []


def test_labels_and_their_warehouse_table_change_together(tmp_path, lock_holder):
    from screener_ssl.data.synthetic import SyntheticMarketConfig

    root = tmp_path / "root"
    spec = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=4, n_days=300, seed=3))
    ds.build_features(root, spec.volume_lookback)
    ds.build_windowed_dataset(root, spec)
    ds.build_labels(root, "synthetic", spec)
    before = tree_digest(root)
    holder = lock_holder(root / ds.WAREHOUSE)
    with pytest.raises(WarehouseLockedError):
        ds.build_labels(root, "synthetic", spec.model_copy(update={"label_horizon": 3}), retry=NO_WAIT)
    assert tree_digest(root) == before and hidden_leftovers(root) == []
    holder.release()
    with duckdb.connect(str(root / ds.WAREHOUSE), read_only=True) as con:
        events = con.execute("SELECT count(*) FROM label_events").fetchone()[0]
    assert events == pl.read_parquet(root / ds.LABELS_DIR / "events.parquet").height


def test_the_dagster_warehouse_resource_retries_a_held_lock_like_the_library(tmp_path, lock_holder, monkeypatch):
    from screener_ssl.data import warehouse
    from screener_ssl.data.synthetic import SyntheticMarketConfig
    from screener_ssl.defs.resources import WarehouseResource

    root = tmp_path / "root"
    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=2, n_days=120, seed=0))
    resource = WarehouseResource(database=str(root / ds.WAREHOUSE))
    holder = lock_holder(root / ds.WAREHOUSE)
    monkeypatch.setattr(warehouse, "DEFAULT_LOCK_RETRY", NO_WAIT)
    with pytest.raises(WarehouseLockedError, match=r"warehouse\.duckdb is locked by another process.*3 attempts"):
        with resource.get_connection():
            pass
    holder.release()
    with resource.get_connection() as con:
        assert con.execute("SELECT count(*) FROM bars").fetchone()[0] > 0


def test_a_failing_commit_puts_the_old_directory_back(tmp_path):
    from screener_ssl.data import warehouse

    final = tmp_path / "bars"
    final.mkdir()
    (final / "old.txt").write_text("old")

    class FailingCommit:
        def __init__(self, con):
            self.con = con

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise duckdb.IOException("disk full")
            return self.con.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.con, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.con.close()

    real_connect = warehouse.connect_with_retry
    warehouse.connect_with_retry = lambda db, retry=None: FailingCommit(real_connect(db, retry))
    try:
        with pytest.raises(duckdb.IOException, match="disk full"):
            warehouse.publish_dir_and_tables(
                final, lambda tmp: (tmp / "new.txt").write_text("new"), tmp_path / "w.duckdb",
                {"t": pl.DataFrame({"a": [1]})},
            )
    finally:
        warehouse.connect_with_retry = real_connect
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "w.duckdb") == ["bars"]
    assert (final / "old.txt").read_text() == "old" and not (final / "new.txt").exists()
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'").fetchone()[0] == 0
