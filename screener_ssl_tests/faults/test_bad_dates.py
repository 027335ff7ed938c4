"""Dates that would move the splits or cannot be represented are named, not silently absorbed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from screener_ssl.data import dataset as ds
from screener_ssl.data.bars import BarsSchemaError, read_bars, validate_bars
from screener_ssl.data.windows import WindowSpec
from screener_ssl_tests.conftest import random_walk_bars
from screener_ssl_tests.faults.conftest import tree_digest

SPEC = WindowSpec(window_max=16, crop_lengths=(8, 16), min_history=16, label_horizon=2)


def _one_ticker_redated_to(bars: pl.DataFrame, ticker: str, last: dt.date) -> pl.DataFrame:
    """``ticker``'s bars spread evenly from its first date to ``last`` (a mis-dated file)."""
    rows = bars.filter(pl.col("ticker") == ticker)
    first = rows["date"][0]
    days = np.linspace(0, (last - first).days, rows.height).round().astype(np.int64)
    redated = rows.with_columns(pl.Series("date", [first + dt.timedelta(days=int(d)) for d in days]))
    return pl.concat([bars.filter(pl.col("ticker") != ticker), redated]).sort("ticker", "date")


def test_a_ticker_dated_far_past_the_market_is_quarantined_and_named():
    bars = _one_ticker_redated_to(random_walk_bars(n_tickers=6, n_days=300), "T003", dt.date(2096, 3, 1))
    result = validate_bars(bars)
    beyond = result.quarantine.filter(pl.col("reason") == "date_beyond_market_end")
    assert beyond["ticker"].unique().to_list() == ["T003"]
    assert result.counts["date_beyond_market_end"] == beyond.height > 0
    assert result.clean["date"].max() <= dt.date(2021, 2, 23) + dt.timedelta(days=7)  # the market ends 2021-02-23
    (warning,) = result.warnings
    assert "ticker 'T003'" in warning and "up to 2096-03-01" in warning and "date_beyond_market_end" in warning


def test_the_splits_stay_on_the_market_not_on_the_misdated_ticker(tmp_path):
    bars = _one_ticker_redated_to(random_walk_bars(n_tickers=6, n_days=300), "T003", dt.date(2096, 3, 1))
    source = tmp_path / "bars.parquet"
    bars.write_parquet(source)
    root = tmp_path / "root"
    report = ds.ingest_bars(root, str(source), synthetic=None)
    assert report.warnings and "T003" in report.warnings[0]
    ds.build_features(root, SPEC.volume_lookback)
    _, info = ds.build_windowed_dataset(root, SPEC)
    assert all(bounds[1] <= "2021-03-02" for bounds in info["split_bounds"].values()), info["split_bounds"]


def test_a_ticker_that_merely_lives_longer_is_kept():
    # Survivors running to the market's end while most tickers stopped earlier: nothing is quarantined.
    bars = random_walk_bars(n_tickers=10, n_days=600)
    stopped = [f"T{i:03d}" for i in range(7)]
    bars = bars.filter(~pl.col("ticker").is_in(stopped) | (pl.col("date") < dt.date(2020, 6, 1)))
    result = validate_bars(bars)
    assert result.counts["date_beyond_market_end"] == 0 and result.warnings == ()


def _far_future(n: int = 10) -> pl.DataFrame:
    bars = random_walk_bars(n_tickers=1, n_days=n)
    days = pl.Series("date", np.arange(n, dtype=np.int32) + 5_000_000).cast(pl.Date)
    return bars.with_columns(days)


def test_a_year_past_9999_names_the_file_column_and_ticker(tmp_path):
    source = tmp_path / "long_history.parquet"
    _far_future().write_parquet(source)
    with pytest.raises(BarsSchemaError, match=r"long_history.parquet: column 'date' holds 10 date\(s\) outside "
                                              r"years 1-9999 \(ticker 'T000' year 15659"):
        read_bars(source)
    root = tmp_path / "root"
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "x").write_text("x")
    before = tree_digest(root)
    with pytest.raises(BarsSchemaError, match=r"long_history.parquet: column 'date'"):
        ds.ingest_bars(root, str(source), synthetic=None)
    assert tree_digest(root) == before


def test_a_year_past_9999_in_a_frame_names_the_ticker():
    with pytest.raises(BarsSchemaError, match=r"bars frame: column 'date' .* ticker 'T000' year 15659"):
        validate_bars(_far_future())
