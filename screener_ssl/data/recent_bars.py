"""The recent-bars table: the last trading dates of the warehouse's bar table, kept beside it.

A market scan needs only the last ``window_max + volume_lookback + 1`` bars of each
ticker, but the ``bars`` table is in (ticker, date) order, so a date filter on it reads
every row group. ``bars_recent`` holds every bar dated on or after the N-th latest
trading date (N = ``RECENT_TRADING_DATES``), in (ticker, date) order: an exact date
slice of ``bars``, so any query over dates inside it returns what the same query over
``bars`` would. It is rewritten in the same transaction as ``bars``
(:func:`screener_ssl.data.dataset.write_duckdb_tables`), and ``bars_recent_meta``
records the row count of ``bars`` it was cut from, so a reader can tell when someone
rewrote ``bars`` behind its back and fall back to the full table.
"""

from __future__ import annotations

import datetime as dt

RECENT_SUFFIX = "_recent"
META_SUFFIX = "_recent_meta"
RECENT_TRADING_DATES = 256  # ~a trading year; a default window needs 85 bars


def recent_table_name(table: str) -> str:
    return f"{table}{RECENT_SUFFIX}"


def refresh_recent_bars(con, table: str = "bars", trading_dates: int = RECENT_TRADING_DATES) -> None:
    """(Re)write ``<table>_recent`` and ``<table>_recent_meta`` from ``table`` on an open DuckDB connection."""
    if trading_dates < 1:
        raise ValueError(f"trading_dates must be >= 1, got {trading_dates}")
    source, recent, meta = (f'"{name}"' for name in (table, recent_table_name(table), f"{table}{META_SUFFIX}"))
    con.execute(
        f"CREATE OR REPLACE TABLE {recent} AS SELECT * FROM {source} WHERE date >= "
        f"(SELECT min(date) FROM (SELECT DISTINCT date FROM {source} ORDER BY date DESC LIMIT {int(trading_dates)})) "
        "ORDER BY ticker, date"
    )
    con.execute(
        f"CREATE OR REPLACE TABLE {meta} AS SELECT (SELECT count(*) FROM {source}) AS source_rows, "
        f"{int(trading_dates)} AS trading_dates, (SELECT min(date) FROM {recent}) AS first_date"
    )


def usable_recent_table(con, table: str) -> tuple[str, dt.date] | None:
    """(recent table name, its first date) when a fresh recent table of ``table`` exists, else None."""
    recent, meta = recent_table_name(table), f"{table}{META_SUFFIX}"
    present = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if recent not in present or meta not in present:
        return None
    source_rows, first_date = con.execute(f'SELECT source_rows, first_date FROM "{meta}"').fetchone()
    if first_date is None or con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] != source_rows:
        return None  # empty, or the bar table was rewritten without its recent slice
    return recent, first_date
