"""Label events from user files and from TA-Lib candlestick rules (causal, per ticker)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from screener_ssl.data.contracts import EVENT_COLUMNS
from screener_ssl.data.label_sources.base import EVENT_SCHEMA
from screener_ssl.data.label_sources.candlesticks import (
    TALIB_PATTERN_BARS,
    TALIB_PATTERN_SIGN,
    TALIB_PATTERNS,
    talib_events,
)
from screener_ssl.data.label_sources.file import LabelsSchemaError, read_label_events
from screener_ssl_tests.data.test_bars import random_walk_ohlcv

BARS = random_walk_ohlcv(n_tickers=3, n_days=400, seed=5)
FULL_EVENTS = talib_events(BARS)


# --------------------------------------------------------------------------- TA-Lib events


def test_pattern_tables_agree():
    assert set(TALIB_PATTERNS) == set(TALIB_PATTERN_SIGN)
    assert set(TALIB_PATTERNS.values()) == set(TALIB_PATTERN_BARS)
    assert set(TALIB_PATTERN_SIGN.values()) <= {-1, 1}


def test_random_walk_yields_events_of_several_patterns():
    # Without events the causality tests below would prove nothing.
    assert FULL_EVENTS.schema == pl.Schema(EVENT_SCHEMA)
    assert FULL_EVENTS["pattern"].n_unique() >= 4
    assert FULL_EVENTS["ticker"].n_unique() == 3
    assert FULL_EVENTS.sort("ticker", "end_date", "pattern").equals(FULL_EVENTS)


def test_event_spans_the_rule_bars_of_its_ticker():
    positions = BARS.with_columns(pl.int_range(pl.len()).over("ticker").alias("bar"))
    joined = (
        FULL_EVENTS.join(positions.select("ticker", "date", start_bar="bar"),
                         left_on=["ticker", "start_date"], right_on=["ticker", "date"])
        .join(positions.select("ticker", "date", end_bar="bar"),
              left_on=["ticker", "end_date"], right_on=["ticker", "date"])
    )  # fmt: skip
    assert joined.height == FULL_EVENTS.height
    expected_span = joined["pattern"].replace_strict(
        {p: TALIB_PATTERN_BARS[f] for p, f in TALIB_PATTERNS.items()}, return_dtype=pl.Int64
    )
    assert ((joined["end_bar"] - joined["start_bar"] + 1) == expected_span).all()


def test_events_on_truncated_history_equal_past_events_of_full_history():
    # Causality: cutting every bar after day t changes no event that ends by t.
    dates = BARS["date"].unique().sort()
    rng = np.random.default_rng(7)
    for cut in rng.choice(np.arange(5, dates.len()), size=8, replace=False):
        last_day = dates[int(cut)]
        truncated = talib_events(BARS.filter(pl.col("date") <= last_day))
        expected = FULL_EVENTS.filter(pl.col("end_date") <= last_day)
        assert truncated.equals(expected), f"events differ when history ends on {last_day}"


def test_rewriting_the_future_changes_no_past_event():
    dates = BARS["date"].unique().sort()
    last_day = dates[250]
    other_future = random_walk_ohlcv(n_tickers=3, n_days=400, seed=99).filter(
        pl.col("date") > last_day
    )
    rewritten = pl.concat([BARS.filter(pl.col("date") <= last_day), other_future])
    events = talib_events(rewritten)
    assert events.filter(pl.col("end_date") <= last_day).equals(
        FULL_EVENTS.filter(pl.col("end_date") <= last_day)
    )
    # The rewrite did change the later events, so the comparison above had teeth.
    assert not events.equals(FULL_EVENTS)


def test_tickers_do_not_leak_into_each_other():
    alone = talib_events(BARS.filter(pl.col("ticker") == "T001"))
    assert alone.height > 0
    assert alone.equals(FULL_EVENTS.filter(pl.col("ticker") == "T001"))


def test_input_order_does_not_matter():
    shuffled = BARS.sample(fraction=1.0, shuffle=True, seed=2)
    assert talib_events(shuffled).equals(FULL_EVENTS)


def _falling_black_candles(n_days: int) -> dict[str, list[float]]:
    """Small black candles drifting down: no candle engulfs another."""
    opens = [100.0 * 0.995**day for day in range(n_days)]
    closes = [o * 0.998 for o in opens]
    return {"open": opens, "close": closes}


def test_constructed_bullish_engulfing_is_found_on_its_completing_bar():
    n_days, engulfing_day = 30, 20
    candles = _falling_black_candles(n_days)
    previous_close = candles["close"][engulfing_day - 1]
    previous_open = candles["open"][engulfing_day - 1]
    # White body opening below the black body and closing above it.
    candles["open"][engulfing_day] = previous_close * 0.995
    candles["close"][engulfing_day] = previous_open * 1.005
    # Next bars: small black candles again, starting inside the white body.
    for day in range(engulfing_day + 1, n_days):
        candles["open"][day] = candles["close"][engulfing_day] * 0.995 ** (day - engulfing_day)
        candles["close"][day] = candles["open"][day] * 0.998
    opens, closes = np.array(candles["open"]), np.array(candles["close"])
    dates = pl.Series(np.busday_offset("2022-01-03", np.arange(n_days))).cast(pl.Date)
    bars = pl.DataFrame(
        {
            "ticker": ["ENG"] * n_days,
            "date": dates,
            "open": opens,
            "high": np.maximum(opens, closes) * 1.001,
            "low": np.minimum(opens, closes) * 0.999,
            "close": closes,
            "volume": np.full(n_days, 1e5),
        }
    )
    engulfing = talib_events(bars).filter(pl.col("pattern").str.starts_with("cdl_engulfing"))
    assert engulfing.to_dicts() == [
        {
            "ticker": "ENG",
            "pattern": "cdl_engulfing_bull",
            "start_date": dates[engulfing_day - 1],
            "end_date": dates[engulfing_day],
        }
    ]


def test_bars_with_nan_prices_are_refused():
    broken = BARS.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("close")).alias("close")
    )
    with pytest.raises(ValueError, match=r"close.*validate_bars"):
        talib_events(broken)


def test_short_history_gives_no_event_and_no_error():
    events = talib_events(BARS.filter(pl.col("ticker") == "T000").head(2))
    assert events.height == 0 and events.schema == pl.Schema(EVENT_SCHEMA)


# --------------------------------------------------------------------------- user label files

EVENTS = pl.DataFrame(
    {
        "ticker": ["BBB", "AAA", "AAA"],
        "pattern": ["double_top", "bull_flag", "double_bottom"],
        "start_date": [dt.date(2021, 1, 4), dt.date(2021, 2, 1), dt.date(2021, 1, 4)],
        "end_date": [dt.date(2021, 2, 1), dt.date(2021, 3, 1), dt.date(2021, 1, 29)],
    },
    schema=EVENT_SCHEMA,
)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_label_file_round_trip_sorted_by_ticker_and_end(tmp_path: Path, suffix: str):
    path = tmp_path / f"labels{suffix}"
    with_extra = EVENTS.with_columns(pl.lit("note").alias("comment"))
    with_extra.write_csv(path) if suffix == ".csv" else with_extra.write_parquet(path)
    events = read_label_events(path)
    assert events.columns == list(EVENT_COLUMNS)
    assert events.schema == pl.Schema(EVENT_SCHEMA)
    assert events["ticker"].to_list() == ["AAA", "AAA", "BBB"]
    assert events["pattern"].to_list() == ["double_bottom", "bull_flag", "double_top"]


def test_label_file_missing_column_names_file_and_column(tmp_path: Path):
    path = tmp_path / "labels.csv"
    EVENTS.drop("end_date").write_csv(path)
    with pytest.raises(LabelsSchemaError, match=r"labels\.csv.*missing column.*'end_date'"):
        read_label_events(path)


def test_event_ending_before_it_starts_names_the_ticker(tmp_path: Path):
    path = tmp_path / "backwards.parquet"
    backwards = EVENTS.with_columns(
        pl.when(pl.col("ticker") == "BBB")
        .then(pl.lit(dt.date(2020, 12, 1)))
        .otherwise(pl.col("end_date"))
        .alias("end_date")
    )
    backwards.write_parquet(path)
    with pytest.raises(LabelsSchemaError, match=r"backwards\.parquet.*'BBB'.*end_date 2020-12-01"):
        read_label_events(path)


def test_bad_date_text_names_file_and_column(tmp_path: Path):
    path = tmp_path / "dates.csv"
    path.write_text("ticker,pattern,start_date,end_date\nAAA,bull_flag,2021-01-04,someday\n")
    with pytest.raises(LabelsSchemaError, match=r"dates\.csv.*'end_date'.*someday"):
        read_label_events(path)


def test_empty_cell_names_file_and_column(tmp_path: Path):
    path = tmp_path / "holes.csv"
    path.write_text("ticker,pattern,start_date,end_date\nAAA,,2021-01-04,2021-01-08\n")
    with pytest.raises(LabelsSchemaError, match=r"holes\.csv.*'pattern'.*empty"):
        read_label_events(path)


# --------------------------------------------------------------------------- the registry


def test_every_label_source_is_registered_and_a_setting_finds_its_source(tmp_path: Path):
    from screener_ssl.data.label_sources import find_label_source, label_source_names

    assert {"synthetic", "talib", "chart", "file"} <= set(label_source_names())
    assert find_label_source("talib") == (find_label_source("talib")[0], None)
    assert find_label_source("chart:double_top")[0].name == "chart"
    assert find_label_source("chart:double_top")[1] == "double_top"
    path = tmp_path / "labels"
    path.mkdir()
    assert find_label_source(str(path))[0].name == "file"  # an existing folder
    assert find_label_source("mine.csv")[0].name == "file"  # written as a file, even before it exists
    assert find_label_source("file:mine")[1] == "mine"


def test_an_unknown_label_source_lists_the_known_ones():
    from screener_ssl.data.label_sources import find_label_source

    with pytest.raises(ValueError, match=r"unknown label source 'talibb'(?s:.*)chart(?s:.*)file(?s:.*)synthetic(?s:.*)talib"):
        find_label_source("talibb")


def test_a_label_file_builds_events_through_the_registry(tmp_path: Path):
    from screener_ssl.data.label_sources import resolve_label_events

    path = tmp_path / "events.parquet"
    EVENTS.write_parquet(path)
    events, patterns, description = resolve_label_events(str(path), tmp_path, lambda: BARS)
    assert events.equals(read_label_events(path))
    assert patterns == tuple(sorted(EVENTS["pattern"].unique().to_list()))
    assert description == f"label file {path}"
