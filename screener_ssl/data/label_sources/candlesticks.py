"""Label source ``talib``: TA-Lib candlestick rules run per ticker on the validated bars.

Each function only reads the current and earlier bars, so an event is known on its
``end_date`` (the completing bar) and never needs a later bar; the tests prove it by
truncating the history.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from screener_ssl.data.bars import _sorted_by_ticker_date
from screener_ssl.data.contracts import BAR_COLUMNS, PRICE_COLUMNS
from screener_ssl.data.label_sources.base import EVENT_SCHEMA, LabelEvents, LabelInputs, register_label_source


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


@register_label_source("talib", reads="the validated bars (TA-Lib candlestick functions)")
def talib_labels(inputs: LabelInputs) -> LabelEvents:
    return LabelEvents(talib_events(inputs.load_bars()), tuple(TALIB_PATTERNS), "TA-Lib candlestick functions")
