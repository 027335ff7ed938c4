"""The recent-bars slice answers the scan's bar query exactly as the full table does."""

from __future__ import annotations


import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from screener_ssl.data import dataset as ds
from screener_ssl.data.recent_bars import (
    bars_needed,
    connect_read_only,
    load_latest_bars,
    recent_table_name,
    refresh_recent_bars,
    usable_recent_table,
)
from screener_ssl.data.synthetic import SyntheticMarketConfig, generate_market
from screener_ssl.data.windows import WindowSpec
from screener_ssl.scan.scan import latest_bars_from_frame

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    market = generate_market(SyntheticMarketConfig(n_tickers=8, n_days=300, seed=1))
    dates = market.bars.get_column("date").unique().sort()
    tickers = market.bars.get_column("ticker").unique().sort().to_list()
    # A halt across the slice's first date and a late listing: both need the full table.
    return market.bars.filter(
        ~((pl.col("ticker") == tickers[0]) & pl.col("date").is_between(dates[-70], dates[-45]))
        & ~((pl.col("ticker") == tickers[1]) & (pl.col("date") < dates[-12]))
    )


def _db(tmp_path, bars: pl.DataFrame, trading_dates: int | None = None):
    db = tmp_path / "warehouse.duckdb"
    ds.write_duckdb_tables(db, {"bars": bars})
    if trading_dates is not None:
        with duckdb.connect(str(db)) as con:
            refresh_recent_bars(con, "bars", trading_dates)
    return db


def _latest_bars(db, as_of) -> pl.DataFrame:
    with connect_read_only(db) as con:
        return load_latest_bars(con, SPEC, as_of)


def test_writing_bars_writes_a_date_slice_of_them(tmp_path, bars):
    db = _db(tmp_path, bars, trading_dates=60)
    with duckdb.connect(str(db), read_only=True) as con:
        name, first = usable_recent_table(con, "bars")
        recent = con.execute(f'SELECT * FROM "{name}"').pl()
    dates = bars.get_column("date").unique().sort()
    assert name == recent_table_name("bars") and first == dates[-60]
    assert_frame_equal(recent, bars.filter(pl.col("date") >= dates[-60]))
    assert recent.height < bars.height


@pytest.mark.parametrize("back", [0, 5, 30, 120])
def test_latest_bars_from_the_slice_equal_the_full_table(tmp_path, bars, back):
    """back=0/5: served by the 60-date slice; 30 and 120: the window reaches before it (full table)."""
    db = _db(tmp_path, bars, trading_dates=60)
    dates = bars.get_column("date").unique().sort()
    as_of = dates[-1 - back]
    loaded = _latest_bars(db, as_of)
    assert_frame_equal(loaded, latest_bars_from_frame(bars, SPEC, as_of))
    assert loaded.group_by("ticker").len().get_column("len").max() == bars_needed(SPEC)


def test_a_bar_table_rewritten_without_its_slice_is_read_in_full(tmp_path, bars):
    db = _db(tmp_path, bars)
    newer = bars.filter(pl.col("date") < bars.get_column("date").max())  # drop the last date
    with duckdb.connect(str(db)) as con:
        arrow = newer.to_arrow()  # noqa: F841
        con.execute('CREATE OR REPLACE TABLE "bars" AS SELECT * FROM arrow')
        assert usable_recent_table(con, "bars") is None
    as_of = newer.get_column("date").max()
    assert_frame_equal(_latest_bars(db, None), latest_bars_from_frame(newer, SPEC, as_of))


def test_refresh_rejects_a_non_positive_date_count(tmp_path, bars):
    db = _db(tmp_path, bars)
    with duckdb.connect(str(db)) as con, pytest.raises(ValueError, match="trading_dates"):
        refresh_recent_bars(con, "bars", 0)


def test_the_reader_names_the_warehouse_file_when_a_table_is_missing(tmp_path, bars):
    db = _db(tmp_path, bars)
    with connect_read_only(db) as con, pytest.raises(ValueError, match=rf"{db}: no table 'prices'"):
        load_latest_bars(con, SPEC, None, table="prices")
    with pytest.raises(FileNotFoundError, match="no DuckDB warehouse at"):
        connect_read_only(tmp_path / "absent.duckdb")
