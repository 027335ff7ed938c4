"""Label events from outside the synthetic market: a user file, or TA-Lib candlestick rules.

A label event is one row of ``EVENT_COLUMNS``: ``ticker: str, pattern: str,
start_date: date, end_date: date`` (DESIGN.md section 2, "Labels"). The label of a
decision date D counts events that *end* before D, so an event's ``end_date`` must be
the first bar on which the whole pattern is visible.

* :func:`read_label_events` reads a user file (Parquet or CSV) with those columns.
* :func:`talib_events` runs TA-Lib candlestick functions per ticker on validated bars.
  Each function only reads the current and earlier bars, so an event is known on its
  ``end_date`` (the completing bar) and never needs a later bar; the tests prove it by
  truncating the history.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from screener_ssl.data.bars import (
    _cast_date_column,
    _cast_text_column,
    _read_raw_table,
    _sorted_by_ticker_date,
    _table_files,
)
from screener_ssl.data.contracts import BAR_COLUMNS, EVENT_COLUMNS, PRICE_COLUMNS

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "ticker": pl.String(),
    "pattern": pl.String(),
    "start_date": pl.Date(),
    "end_date": pl.Date(),
}


class LabelsSchemaError(ValueError):
    """A label file lacks a column, holds bad values or an event ending before it starts."""


# --------------------------------------------------------------------------- user file


def _read_event_file(file: Path) -> pl.DataFrame:
    table = _read_raw_table(file, EVENT_COLUMNS, LabelsSchemaError, "labels")
    events = pl.DataFrame(
        [
            _cast_text_column(table, "ticker", file, LabelsSchemaError),
            _cast_text_column(table, "pattern", file, LabelsSchemaError),
            _cast_date_column(table, "start_date", file, LabelsSchemaError),
            _cast_date_column(table, "end_date", file, LabelsSchemaError),
        ]
    )
    for column in EVENT_COLUMNS:
        null_rows = events.with_row_index("row").filter(pl.col(column).is_null())
        if null_rows.height:
            raise LabelsSchemaError(
                f"labels file {file}: column {column!r} is empty in {null_rows.height} row(s), "
                f"first at data row {null_rows['row'][0]}; every event needs all of "
                f"{list(EVENT_COLUMNS)}"
            )
    backwards = events.filter(pl.col("end_date") < pl.col("start_date"))
    if backwards.height:
        first = backwards.row(0, named=True)
        raise LabelsSchemaError(
            f"labels file {file}: {backwards.height} event(s) end before they start, e.g. "
            f"ticker {first['ticker']!r} pattern {first['pattern']!r}: "
            f"end_date {first['end_date']} < start_date {first['start_date']}"
        )
    return events


def read_label_events(path: str | Path) -> pl.DataFrame:
    """Read label events from a Parquet (.parquet/.pq) or CSV file, or a folder of them.

    The file needs ``EVENT_COLUMNS`` (extra columns are dropped); dates may be Date,
    Datetime or 'YYYY-MM-DD' text.

    Returns:
        Events with the dtypes of ``EVENT_SCHEMA``, sorted by (ticker, end_date, pattern,
        start_date).

    Raises:
        LabelsSchemaError: naming the file and column for a missing column, a value that is
            empty or cannot be parsed, and naming the ticker for an event with
            ``end_date < start_date``.
    """
    files = _table_files(Path(path), LabelsSchemaError, "labels")
    events = pl.concat([_read_event_file(file) for file in files], how="vertical")
    return events.sort("ticker", "end_date", "pattern", "start_date")


# --------------------------------------------------------------------------- TA-Lib

# Our pattern name -> TA-Lib candlestick function.
TALIB_PATTERNS: dict[str, str] = {
    "cdl_engulfing_bull": "CDLENGULFING",
    "cdl_engulfing_bear": "CDLENGULFING",
    "cdl_harami_bull": "CDLHARAMI",
    "cdl_harami_bear": "CDLHARAMI",
    "cdl_piercing": "CDLPIERCING",
    "cdl_dark_cloud_cover": "CDLDARKCLOUDCOVER",
    "cdl_morning_star": "CDLMORNINGSTAR",
    "cdl_evening_star": "CDLEVENINGSTAR",
    "cdl_three_white_soldiers": "CDL3WHITESOLDIERS",
    "cdl_three_black_crows": "CDL3BLACKCROWS",
    "cdl_hammer": "CDLHAMMER",
    "cdl_shooting_star": "CDLSHOOTINGSTAR",
}
# Which sign of the function's output (+100 bullish, -100 bearish) the pattern takes.
TALIB_PATTERN_SIGN: dict[str, int] = {
    "cdl_engulfing_bull": 1,
    "cdl_engulfing_bear": -1,
    "cdl_harami_bull": 1,
    "cdl_harami_bear": -1,
    "cdl_piercing": 1,
    "cdl_dark_cloud_cover": -1,
    "cdl_morning_star": 1,
    "cdl_evening_star": -1,
    "cdl_three_white_soldiers": 1,
    "cdl_three_black_crows": -1,
    "cdl_hammer": 1,
    "cdl_shooting_star": -1,
}
# Bars each TA-Lib rule compares, ending at the completing bar: the event's span.
# (The trailing averages a rule uses to judge "long"/"short" candles only set a scale
# and are not part of the pattern; TA-Lib's own lookback counts them too.)
TALIB_PATTERN_BARS: dict[str, int] = {
    "CDLENGULFING": 2,  # opposite candle, then the engulfing one
    "CDLHARAMI": 2,  # long candle, then a small one inside its body
    "CDLPIERCING": 2,
    "CDLDARKCLOUDCOVER": 2,
    "CDLMORNINGSTAR": 3,
    "CDLEVENINGSTAR": 3,
    "CDL3WHITESOLDIERS": 3,
    "CDL3BLACKCROWS": 4,  # TA-Lib also requires the white candle before the three crows
    "CDLHAMMER": 2,  # the body must sit near the previous candle's low
    "CDLSHOOTINGSTAR": 2,  # the body must gap up from the previous candle's body
}


def _talib_function(name: str):
    import talib  # TA-Lib is a C extension: only this labeler needs it

    return getattr(talib, name)


def _check_talib_bars(bars: pl.DataFrame) -> None:
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"talib_events: bars lack column(s) {missing}; expected {list(BAR_COLUMNS)}")
    not_finite = bars.select(
        [(~pl.col(c).is_finite()).fill_null(True).sum().alias(c) for c in PRICE_COLUMNS]
    ).row(0, named=True)
    bad = {column: n for column, n in not_finite.items() if n}
    if bad:
        raise ValueError(
            f"talib_events: bars hold null/NaN/inf prices {bad} (rows per column); "
            "run validate_bars first and pass its clean bars"
        )


def talib_events(bars: pl.DataFrame) -> pl.DataFrame:
    """Candlestick pattern events from TA-Lib, computed per ticker on bars in date order.

    Each ticker's bars are one contiguous slice of the (ticker, date)-sorted arrays, so a
    pattern never spans two tickers. TA-Lib reads only the current and earlier bars, so
    an event depends on bars up to its ``end_date`` alone.

    Args:
        bars: validated bars (``BAR_COLUMNS``, no null/NaN prices, unique (ticker, date)),
            e.g. ``validate_bars(...).clean``.

    Returns:
        ``EVENT_COLUMNS`` frame: ``end_date`` = the bar completing the pattern,
        ``start_date`` = the first of its ``TALIB_PATTERN_BARS`` bars, sorted by
        (ticker, end_date, pattern).
    """
    _check_talib_bars(bars)
    ordered = _sorted_by_ticker_date(bars.select(BAR_COLUMNS))
    runs = ordered.select(pl.col("ticker").rle()).unnest("ticker")
    ticker_ends = np.cumsum(runs["len"].to_numpy()).astype(np.int64)
    ticker_starts = ticker_ends - runs["len"].to_numpy()
    # TA-Lib wants contiguous float64; slices of these 1-D arrays are contiguous views.
    open_, high, low, close = (
        np.ascontiguousarray(ordered[c].to_numpy(), dtype=np.float64) for c in PRICE_COLUMNS
    )

    signals: dict[str, np.ndarray] = {}  # function -> int32 [N_bars] output over all tickers
    for function_name in dict.fromkeys(TALIB_PATTERNS.values()):
        function = _talib_function(function_name)
        output = np.zeros(ordered.height, dtype=np.int32)
        for start, end in zip(ticker_starts, ticker_ends):
            output[start:end] = function(
                open_[start:end], high[start:end], low[start:end], close[start:end]
            )
        signals[function_name] = output

    # Each bar's position inside its ticker: an event never starts before the ticker's first bar.
    bar_position = np.arange(ordered.height) - np.repeat(ticker_starts, runs["len"].to_numpy())
    frames = []
    for pattern, function_name in TALIB_PATTERNS.items():
        end_index = np.flatnonzero(signals[function_name] * TALIB_PATTERN_SIGN[pattern] > 0)
        span = TALIB_PATTERN_BARS[function_name]
        assert np.all(bar_position[end_index] >= span - 1), (
            f"{function_name} fired before {span} bars of its ticker existed"
        )
        frames.append(
            pl.DataFrame(
                {
                    "ticker": ordered["ticker"].gather(end_index),
                    "pattern": pl.Series([pattern] * len(end_index), dtype=pl.String),
                    "start_date": ordered["date"].gather(end_index - (span - 1)),
                    "end_date": ordered["date"].gather(end_index),
                },
                schema=EVENT_SCHEMA,
            )
        )
    return pl.concat(frames, how="vertical").sort("ticker", "end_date", "pattern")
