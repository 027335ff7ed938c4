"""Bar reading (Parquet/CSV/folder, casts, schema errors) and validation with quarantine."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from screener_ssl.data.bars import (
    BAR_SCHEMA,
    REJECT_REASONS,
    BarsSchemaError,
    bars_content_hash,
    read_bars,
    validate_bars,
)
from screener_ssl.data.contracts import BAR_COLUMNS


def random_walk_ohlcv(n_tickers: int = 3, n_days: int = 120, seed: int = 0) -> pl.DataFrame:
    """Seeded bars: log-random-walk closes, open near the previous close, high/low around the body."""
    rng = np.random.default_rng(seed)
    dates = pl.Series(
        "date",
        np.busday_offset("2020-01-01", np.arange(n_days), roll="forward"),
    ).cast(pl.Date)
    frames = []
    for ticker_id in range(n_tickers):
        close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n_days)))
        previous_close = np.concatenate([[close[0]], close[:-1]])
        open_ = previous_close * np.exp(rng.normal(0.0, 0.005, n_days))
        high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.01, n_days))
        low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.01, n_days))
        frames.append(
            pl.DataFrame(
                {
                    "ticker": [f"T{ticker_id:03d}"] * n_days,
                    "date": dates,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": rng.uniform(1e4, 1e6, n_days).round(),
                }
            )
        )
    return pl.concat(frames)


BARS = random_walk_ohlcv()


def _set(bars: pl.DataFrame, row: int, **values) -> pl.DataFrame:
    """Copy of ``bars`` with the given columns of one row replaced."""
    columns = {c: bars[c].to_list() for c in bars.columns}
    for column, value in values.items():
        columns[column][row] = value
    return pl.DataFrame(columns, schema=bars.schema)


def _assert_nothing_lost(result, n_input: int) -> None:
    assert result.clean.height + result.quarantine.height == n_input
    assert result.counts["input_rows"] == n_input
    assert result.counts["clean_rows"] == result.clean.height
    assert sum(result.counts[r] for r in REJECT_REASONS) == result.quarantine.height


# --------------------------------------------------------------------------- validation


def test_clean_bars_pass_untouched():
    result = validate_bars(BARS.sample(fraction=1.0, shuffle=True, seed=3))
    assert result.quarantine.height == 0
    assert set(result.counts) == {*REJECT_REASONS, "input_rows", "clean_rows"}
    assert all(result.counts[r] == 0 for r in REJECT_REASONS)
    assert result.clean.equals(BARS.sort("ticker", "date"))  # sorted back, values intact


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"close": math.nan}, "null_or_non_finite"),
        ({"high": math.inf}, "null_or_non_finite"),
        ({"volume": -math.inf}, "null_or_non_finite"),
        ({"volume": None}, "null_or_non_finite"),
        ({"date": None}, "null_or_non_finite"),
        ({"ticker": None}, "null_or_non_finite"),
        ({"open": 0.0}, "non_positive_price"),
        ({"low": -1.0}, "non_positive_price"),
        ({"high": 1.0, "low": 2.0, "open": 1.5, "close": 1.5}, "high_below_low"),
        ({"high": 10.0, "low": 9.0, "open": 9.5, "close": 10.5}, "high_below_open_close"),
        ({"high": 10.0, "low": 9.0, "open": 8.5, "close": 9.5}, "low_above_open_close"),
        ({"volume": -5.0}, "negative_volume"),
    ],
)
def test_each_bad_row_is_quarantined_with_its_reason(values, reason):
    bad = _set(BARS, 37, **values)
    result = validate_bars(bad)
    _assert_nothing_lost(result, BARS.height)
    assert result.quarantine.height == 1
    assert result.quarantine["reason"].to_list() == [reason]
    assert result.counts[reason] == 1
    assert result.quarantine.columns == [*BAR_COLUMNS, "reason"]


def test_high_below_low_wins_over_open_close_checks():
    # high < low also breaks high >= max(open, close); the row names the root cause.
    bad = _set(BARS, 5, high=1.0, low=2.0, open=3.0, close=0.5)
    assert validate_bars(bad).quarantine["reason"].to_list() == ["high_below_low"]


def test_every_copy_of_a_duplicated_key_is_quarantined():
    copy = BARS[10].with_columns(pl.col("close") * 1.01, pl.col("high") * 1.02)
    result = validate_bars(pl.concat([BARS, copy]))
    _assert_nothing_lost(result, BARS.height + 1)
    assert result.counts["duplicate_ticker_date"] == 2
    assert result.quarantine.select("ticker", "date").unique().height == 1
    assert result.clean.height == BARS.height - 1
    assert result.clean.select("ticker", "date").is_duplicated().sum() == 0


def test_duplicate_of_a_bad_row_still_quarantines_the_good_copy():
    # Which copy the source meant is unknown, even when one copy is broken.
    copy = BARS[10].with_columns(pl.lit(math.nan).alias("close"))
    result = validate_bars(pl.concat([BARS, copy]))
    _assert_nothing_lost(result, BARS.height + 1)
    assert result.counts["null_or_non_finite"] == 1
    assert result.counts["duplicate_ticker_date"] == 1


def test_random_corruption_loses_nothing_and_leaves_only_valid_rows():
    rng = np.random.default_rng(11)
    corruptions = [
        {"close": math.nan}, {"open": -2.0}, {"high": 0.0}, {"volume": -1.0},
        {"low": 1e9}, {"high": 1e-3}, {"volume": math.inf},
    ]  # fmt: skip
    for trial in range(5):
        bars = BARS
        rows = rng.choice(BARS.height, size=20, replace=False)
        for row in rows:
            bars = _set(bars, int(row), **corruptions[rng.integers(len(corruptions))])
        duplicates = bars[rng.choice(BARS.height, size=3, replace=False)]
        bars = pl.concat([bars, duplicates]).sample(fraction=1.0, shuffle=True, seed=trial)
        result = validate_bars(bars)
        _assert_nothing_lost(result, bars.height)
        assert result.quarantine.height >= 20  # every corrupted row, plus duplicate copies
        assert validate_bars(result.clean).quarantine.height == 0  # clean really is clean
        assert result.clean.select("ticker", "date").is_duplicated().sum() == 0
        # quarantine rows are the input rows, unchanged
        rejoined = pl.concat([result.clean, result.quarantine.drop("reason")])
        key = [*BAR_COLUMNS]
        assert rejoined.sort(key, nulls_last=True).equals(bars.sort(key, nulls_last=True))


def test_validate_refuses_a_frame_with_wrong_dtypes():
    with pytest.raises(BarsSchemaError, match="date"):
        validate_bars(BARS.with_columns(pl.col("date").cast(pl.String)))
    with pytest.raises(BarsSchemaError, match="volume"):
        validate_bars(BARS.drop("volume"))


# --------------------------------------------------------------------------- content hash


def test_content_hash_is_stable_and_order_free():
    clean = validate_bars(BARS).clean
    first = bars_content_hash(clean)
    assert first == bars_content_hash(validate_bars(BARS.reverse()).clean)
    assert first == bars_content_hash(clean.sample(fraction=1.0, shuffle=True, seed=1))
    assert len(first) == 64 and int(first, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"close": 1e-9},  # a tiny change in one price
        {"volume": 1.0},
        {"date": dt.timedelta(days=365 * 30)},
    ],
)
def test_content_hash_changes_with_any_value(change):
    clean = validate_bars(BARS).clean
    row = 40
    column, delta = next(iter(change.items()))
    changed = _set(clean, row, **{column: clean[column][row] + delta})
    assert bars_content_hash(changed) != bars_content_hash(clean)


def test_content_hash_changes_with_ticker_name():
    clean = validate_bars(BARS).clean
    renamed = clean.with_columns(pl.col("ticker").str.replace("T002", "T00X"))
    assert bars_content_hash(renamed) != bars_content_hash(clean)


def test_content_hash_refuses_unvalidated_duplicates():
    with pytest.raises(ValueError, match="repeated key"):
        bars_content_hash(pl.concat([BARS, BARS[:1]]))


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("suffix", [".parquet", ".pq", ".csv"])
def test_file_round_trip(tmp_path: Path, suffix: str):
    path = tmp_path / f"bars{suffix}"
    if suffix == ".csv":
        BARS.write_csv(path)
    else:
        BARS.write_parquet(path)
    read = read_bars(path)
    assert read.schema == pl.Schema(BAR_SCHEMA)
    assert read.equals(BARS)


def test_folder_reads_every_file_in_name_order(tmp_path: Path):
    tickers = BARS["ticker"].unique().sort().to_list()
    # Written out of order and mixed formats: file names decide the concatenation order.
    BARS.filter(pl.col("ticker") == tickers[2]).write_parquet(tmp_path / "c.parquet")
    BARS.filter(pl.col("ticker") == tickers[0]).write_csv(tmp_path / "a.csv")
    BARS.filter(pl.col("ticker") == tickers[1]).write_parquet(tmp_path / "b.pq")
    (tmp_path / "notes.txt").write_text("not bars")
    read = read_bars(tmp_path)
    assert read.equals(BARS.sort("ticker", "date"))


def test_csv_dates_and_numbers_as_text_are_parsed(tmp_path: Path):
    path = tmp_path / "text.csv"
    path.write_text(
        "date,ticker,open,high,low,close,volume,extra\n"
        "2021-03-01,AAA,10,11.5, 9.5,11,1e3,x\n"
        "2021-03-02T00:00:00,AAA,11,12,10,11.5,2000,y\n"
        "2021-03-03,AAA,,12,10,11.5,NaN,z\n"
    )
    read = read_bars(path)
    assert read.columns == list(BAR_COLUMNS)  # extra column dropped, contract order
    assert read["date"].to_list() == [dt.date(2021, 3, d) for d in (1, 2, 3)]
    assert read["low"].to_list() == [9.5, 10.0, 10.0]
    assert read["volume"][0] == 1000.0
    assert read["open"][2] is None and math.isnan(read["volume"][2])  # kept for validation


def test_parquet_string_and_datetime_dates_are_cast(tmp_path: Path):
    as_text = BARS.with_columns(pl.col("date").cast(pl.String))
    as_text.write_parquet(tmp_path / "text.parquet")
    as_datetime = BARS.with_columns(pl.col("date").cast(pl.Datetime("us")))
    as_datetime.write_parquet(tmp_path / "datetime.parquet")
    categorical = BARS.with_columns(pl.col("ticker").cast(pl.Categorical), pl.col("volume").cast(pl.Int64))
    categorical.write_parquet(tmp_path / "categorical.parquet")
    for name in ("text", "datetime", "categorical"):
        read = read_bars(tmp_path / f"{name}.parquet")
        assert read.schema == pl.Schema(BAR_SCHEMA), name
        assert read.equals(BARS), name


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_missing_column_names_file_and_column(tmp_path: Path, suffix: str):
    path = tmp_path / f"no_low{suffix}"
    frame = BARS.drop("low")
    frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
    with pytest.raises(BarsSchemaError, match=r"no_low.*missing column.*'low'"):
        read_bars(path)


def test_string_prices_name_file_column_and_value(tmp_path: Path):
    path = tmp_path / "abc.csv"
    BARS.with_columns(pl.col("close").cast(pl.String)).pipe(_set, 7, close="abc").write_csv(path)
    with pytest.raises(BarsSchemaError, match=r"abc\.csv.*'close'.*Float64.*'abc'"):
        read_bars(path)


def test_string_prices_in_parquet_are_refused(tmp_path: Path):
    path = tmp_path / "abc.parquet"
    BARS.with_columns(pl.col("volume").cast(pl.String)).pipe(_set, 3, volume="lots").write_parquet(path)
    with pytest.raises(BarsSchemaError, match=r"abc\.parquet.*'volume'.*'lots'"):
        read_bars(path)


def test_unparseable_date_names_file_and_column(tmp_path: Path):
    path = tmp_path / "dates.csv"
    BARS.with_columns(pl.col("date").cast(pl.String)).pipe(_set, 2, date="03/04/2020").write_csv(path)
    with pytest.raises(BarsSchemaError, match=r"dates\.csv.*'date'.*03/04/2020"):
        read_bars(path)


def test_numeric_dates_are_refused(tmp_path: Path):
    path = tmp_path / "intdates.parquet"
    BARS.with_columns(pl.col("date").cast(pl.Int32)).write_parquet(path)
    with pytest.raises(BarsSchemaError, match=r"intdates\.parquet.*'date'.*Int32"):
        read_bars(path)


def test_empty_files_and_folders_are_named(tmp_path: Path):
    (tmp_path / "zero.csv").write_text("")
    with pytest.raises(BarsSchemaError, match=r"zero\.csv.*empty"):
        read_bars(tmp_path / "zero.csv")
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(BAR_COLUMNS) + "\n")
    with pytest.raises(BarsSchemaError, match=r"header\.csv.*empty"):
        read_bars(header_only)
    BARS.head(0).write_parquet(tmp_path / "none.parquet")
    with pytest.raises(BarsSchemaError, match=r"none\.parquet.*empty"):
        read_bars(tmp_path / "none.parquet")
    empty_folder = tmp_path / "folder"
    empty_folder.mkdir()
    with pytest.raises(BarsSchemaError, match=r"folder.*no file"):
        read_bars(empty_folder)


def test_unknown_suffix_and_missing_path_are_refused(tmp_path: Path):
    with pytest.raises(BarsSchemaError, match=r"bars\.json.*suffix"):
        (tmp_path / "bars.json").write_text("{}")
        read_bars(tmp_path / "bars.json")
    with pytest.raises(BarsSchemaError, match="does not exist"):
        read_bars(tmp_path / "nowhere.parquet")
