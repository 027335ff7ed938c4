"""Bad input that used to pass silently: ambiguous dates, shifted days, empty tickers, mixed bar versions."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

import polars as pl
import pytest

from screener_ssl.data import dataset as ds
from screener_ssl.data.bars import BarsSchemaError, bars_content_hash, read_bars, validate_bars
from screener_ssl_tests.conftest import random_walk_bars

HEADER = "ticker,date,open,high,low,close,volume\n"


def _csv(tmp_path, rows: list[str], name: str = "bars.csv"):
    path = tmp_path / name
    path.write_text(HEADER + "".join(f"{r},10,11,9,10.5,1000\n" for r in rows))
    return path


def test_ambiguous_slash_dates_are_refused_unless_a_format_is_given(tmp_path):
    path = _csv(tmp_path, ["AAA,01/02/2020", "AAA,01/03/2020"])
    with pytest.raises(BarsSchemaError, match=r"bars\.csv.*'date'.*ISO.*01/02/2020"):
        read_bars(path)
    us = read_bars(path, date_format="%m/%d/%Y")
    assert us["date"].to_list() == [dt.date(2020, 1, 2), dt.date(2020, 1, 3)]
    eu = read_bars(path, date_format="%d/%m/%Y")
    assert eu["date"].to_list() == [dt.date(2020, 2, 1), dt.date(2020, 3, 1)]


def test_a_value_that_does_not_fit_the_explicit_format_names_it(tmp_path):
    path = _csv(tmp_path, ["AAA,01/02/2020", "AAA,2020-01-03"])
    with pytest.raises(BarsSchemaError, match=r"%m/%d/%Y.*2020-01-03"):
        read_bars(path, date_format="%m/%d/%Y")


def test_timestamps_keep_their_local_date_and_mixed_offsets_do_not_collide(tmp_path):
    rows = [
        "AAA,2020-01-03T16:00:00-05:00",  # Friday evening in New York: Saturday in UTC
        "AAA,2020-01-06T09:30:00+09:00",  # Monday morning in Tokyo: Sunday in UTC
        "AAA,2020-01-07 16:00:00Z",
        "AAA,2020-01-08T00:00",
        "AAA,2020-01-09",
    ]
    bars = read_bars(_csv(tmp_path, rows))
    assert bars["date"].to_list() == [dt.date(2020, 1, d) for d in (3, 6, 7, 8, 9)]
    result = validate_bars(bars)
    assert result.quarantine.height == 0 and result.clean.height == 5


def test_an_impossible_iso_date_is_reported(tmp_path):
    with pytest.raises(BarsSchemaError, match="2020-02-30"):
        read_bars(_csv(tmp_path, ["AAA,2020-02-28", "AAA,2020-02-30"]))


def test_empty_and_blank_tickers_are_quarantined_not_merged(tmp_path):
    bars = read_bars(_csv(tmp_path, ["AAA,2020-01-02", ",2020-01-02", "  ,2020-01-03"]))
    result = validate_bars(bars)
    # CSV reads an empty field as null; blanks (and '' from Parquet) are empty tickers.
    assert result.counts["null_or_non_finite"] == 1 and result.counts["empty_ticker"] == 1
    assert result.clean["ticker"].to_list() == ["AAA"]
    assert result.clean.height + result.quarantine.height == bars.height
    parquet_style = bars.with_columns(pl.col("ticker").fill_null(""))
    assert validate_bars(parquet_style).counts["empty_ticker"] == 2


def test_features_carry_the_version_of_the_bars_they_were_computed_from(tmp_path, monkeypatch):
    root = tmp_path / "root"
    first, second = random_walk_bars(seed=1, n_days=120), random_walk_bars(seed=2, n_days=120)
    first_file, second_file = tmp_path / "a.parquet", tmp_path / "b.parquet"
    first.write_parquet(first_file)
    second.write_parquet(second_file)
    ds.ingest_bars(root, str(first_file), None)
    read = ds.read_shape_features
    calls = []

    def read_then_ingest_other_bars(path, volume_lookback):
        store = read(path, volume_lookback=volume_lookback)
        if not calls:
            ds.ingest_bars(root, str(second_file), None)  # a concurrent ingest swaps bars/ meanwhile
        calls.append(store)
        return store

    monkeypatch.setattr(ds, "read_shape_features", read_then_ingest_other_bars)
    store, version = ds.build_features(root, volume_lookback=20)
    first_hash = bars_content_hash(validate_bars(first).clean)
    second_hash = bars_content_hash(validate_bars(second).clean)
    assert len(calls) == 2  # the swap was seen and the build read again
    # The features and their version describe one and the same market: the bars now in place.
    assert json.loads((root / ds.FEATURES_DIR / "version.json").read_text())["bars_hash"] == second_hash != first_hash
    assert version == ds.fingerprint({"bars": second_hash, "volume_lookback": 20})
    expected = read(root / ds.BARS_DIR / "bars.parquet", volume_lookback=20)
    assert np.array_equal(store.values, expected.values, equal_nan=True)


def test_shape_features_shares_the_pool_of_the_asset_that_writes_its_bars():
    from screener_ssl.defs.data.assets import ohlcv_bars, shape_features

    assert shape_features.op.pool == ohlcv_bars.op.pool == "duckdb"


def test_csv_date_layout_is_read_from_the_environment():
    from screener_ssl.defs.resources import ScreenerSettings

    settings = ScreenerSettings.from_env({"SCREENER_SSL_BARS_DATE_FORMAT": "%m/%d/%Y"})
    assert settings.bars_date_format == "%m/%d/%Y"
    assert pl.Series(["01/02/2020"]).str.to_date(settings.bars_date_format).item() == dt.date(2020, 1, 2)
