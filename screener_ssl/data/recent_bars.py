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

:func:`load_latest_bars` is the scan's reader: the last bars of every ticker up to a date,
from a DuckDB connection the caller hands in (:func:`connect_read_only` opens one on a file).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from screener_ssl.data.bars import _is_sorted_by_ticker_date
from screener_ssl.data.contracts import BAR_COLUMNS
from screener_ssl.data.windows import WindowSpec

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


# --------------------------------------------------------------------------- the scan's reader


def bars_needed(spec: WindowSpec) -> int:
    """Bars per ticker the latest window needs: the window, the volume baseline before it, one previous close."""
    return spec.window_max + spec.volume_lookback + 1


def _quote_identifier(name: str) -> str:
    if not name or '"' in name:
        raise ValueError(f"invalid DuckDB table name {name!r}")
    return f'"{name}"'


def connect_read_only(db_path: Path, threads: int | None = None):
    """A read-only DuckDB connection to the warehouse at ``db_path`` (``threads``: DuckDB's thread count)."""
    import duckdb

    if not Path(db_path).exists():
        raise FileNotFoundError(f"no DuckDB warehouse at {db_path}; ingest the bars first (ingest_bars)")
    config = {"threads": int(threads)} if threads else {}
    try:
        return duckdb.connect(str(db_path), read_only=True, config=config)
    except duckdb.IOException as err:
        raise RuntimeError(f"cannot open {db_path} read-only ({err}); is a writer holding it?") from err


def _database_path(con) -> str:
    """The file behind ``con`` (for messages); ``:memory:`` for an in-memory database."""
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return row[0] if row and row[0] else ":memory:"


def load_latest_bars(con, spec: WindowSpec, as_of: dt.date | None, table: str = "bars") -> pl.DataFrame:
    """The last ``K = bars_needed(spec)`` bars up to ``as_of`` of every ticker trading in the last K dates.

    ``con``: an open DuckDB connection (only read; left open). Sorted by (ticker, date);
    ``as_of`` None = the latest date in the table.
    The main query reads only the last K distinct trading dates up to ``as_of`` (a
    ticker has at most K bars there, so it needs no window function). A ticker with
    fewer than K bars in that range (a halt, a late listing) is completed by a second
    query over those tickers alone, ``QUALIFY row_number() OVER (PARTITION BY ticker
    ORDER BY date DESC) <= K``. A ticker with no bar at all in the last K trading
    dates is not part of the market on ``as_of`` and is not returned.
    """
    import duckdb

    k = bars_needed(spec)
    name = _quote_identifier(table)
    columns = ", ".join(BAR_COLUMNS)
    try:
        present = {row[0] for row in con.execute(f"DESCRIBE {name}").fetchall()}
    except duckdb.CatalogException as err:
        raise ValueError(f"{_database_path(con)}: no table {table!r} ({err})") from err
    missing = [c for c in BAR_COLUMNS if c not in present]
    if missing:
        raise ValueError(f"{_database_path(con)}: table {table!r} lacks bar columns {missing}")
    # The recent-dates slice kept beside the table answers the same query from far fewer rows.
    recent_slice = usable_recent_table(con, table)
    source = _quote_identifier(recent_slice[0]) if recent_slice else name
    if as_of is None:
        as_of = con.execute(f"SELECT max(date) FROM {source}").fetchone()[0]
        if as_of is None:
            raise ValueError(f"{_database_path(con)}: table {table!r} is empty")
    cutoff = _kth_latest_date(con, source, as_of, k) if recent_slice else dt.date.min
    if not recent_slice or as_of < recent_slice[1] or cutoff < recent_slice[1]:
        source = name  # the window reaches back before the slice: read the whole table
        cutoff = _kth_latest_date(con, name, as_of, k)
    # No ORDER BY: the scan keeps the table's (usually sorted) order; sorting costs more than checking.
    recent = con.execute(
        f"SELECT {columns} FROM {source} WHERE date >= $cutoff AND date <= $as_of",
        {"cutoff": cutoff, "as_of": as_of},
    ).pl()
    short = recent.group_by("ticker").len().filter(pl.col("len") < k).select("ticker")
    if short.height:
        short_arrow = short.to_arrow()  # noqa: F841  (referenced by name in the SQL below)
        completed = con.execute(
            f"SELECT {columns} FROM {name} "
            f"WHERE date <= $as_of AND ticker IN (SELECT ticker FROM short_arrow) "
            f"QUALIFY row_number() OVER (PARTITION BY ticker ORDER BY date DESC) <= {k}",
            {"as_of": as_of},
        ).pl()
        recent = pl.concat([recent.join(short, on="ticker", how="anti"), completed.cast(recent.schema)])
    return recent if _is_sorted_by_ticker_date(recent) else recent.sort("ticker", "date")


def _kth_latest_date(con, name: str, as_of: dt.date, k: int) -> dt.date:
    """The K-th most recent trading date up to ``as_of`` (``date.min`` when there are fewer than K).

    Bars older than it cannot be among any ticker's last K. Searched first within a
    calendar span that holds K trading days with room to spare, then in all history.
    """
    query = (
        f"SELECT date FROM (SELECT DISTINCT date FROM {name} WHERE date <= $as_of AND date >= $since) "
        f"ORDER BY date DESC LIMIT 1 OFFSET {k - 1}"
    )
    span = dt.timedelta(days=2 * k + 60)  # K business days are ~1.4 K calendar days, plus holidays
    for since in (as_of - span, dt.date.min):
        row = con.execute(query, {"as_of": as_of, "since": since}).fetchone()
        if row is not None:
            return row[0]
    return dt.date.min
