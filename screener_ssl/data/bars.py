"""Daily OHLCV bars: reading Parquet/CSV files and validating them with a quarantine.

Contract (DESIGN.md section 2, "Bars"): one table with the columns
``BAR_COLUMNS`` = ``ticker: str, date: date, open, high, low, close, volume: float64``,
unique on ``(ticker, date)``.

* :func:`read_bars` reads a file or a folder of files and checks/casts the columns.
  A missing column or a value that cannot be cast stops with :class:`BarsSchemaError`
  naming the file and the column. It never drops rows.
* :func:`validate_bars` splits bars into ``clean`` and ``quarantine``; every
  rejected row is kept with the first reason it fails, so nothing is silently lost.
* :func:`bars_content_hash` fingerprints validated bars for data versioning.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from screener_ssl.data.contracts import BAR_COLUMNS, PRICE_COLUMNS

NUMERIC_BAR_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
BAR_FILE_SUFFIXES: tuple[str, ...] = (".parquet", ".pq", ".csv")
BAR_SCHEMA: dict[str, pl.DataType] = {
    "ticker": pl.String(),
    "date": pl.Date(),
    **{column: pl.Float64() for column in NUMERIC_BAR_COLUMNS},
}

# Order matters: a row is quarantined with the first reason it fails.
# "high_below_low" comes before the open/close checks because once high >= max(open, close)
# and low <= min(open, close) hold, high >= low follows, so later it could never fire.
REJECT_REASONS: tuple[str, ...] = (
    "null_or_non_finite",
    "empty_ticker",
    "non_positive_price",
    "high_below_low",
    "high_below_open_close",
    "low_above_open_close",
    "negative_volume",
    "duplicate_ticker_date",
    "date_beyond_market_end",
)
_EXAMPLES_IN_ERRORS = 3
# Dates a bar may carry: what Python's datetime.date holds (Polars' Date reaches much further).
_FIRST_DAY, _LAST_DAY = -719_162, 2_932_896  # 0001-01-01 and 9999-12-31 as days since 1970-01-01
# A bar dated this many days after the market's end (the last bar of at least
# MARKET_END_SHARE of the tickers, and of 2) is quarantined: one mis-dated ticker would
# otherwise stretch the union calendar and move every split onto its own bars.
DAYS_BEYOND_MARKET_END = 7  # a week: a late-stamped last day passes, a second calendar does not
MARKET_END_SHARE = 0.1


class BarsSchemaError(ValueError):
    """A bar file lacks a column or holds values of the wrong type; the message names both."""


# --------------------------------------------------------------------------- reading


def _table_files(path: Path, error_cls: type[ValueError], what: str) -> list[Path]:
    """The Parquet/CSV files behind ``path``: the file itself, or a folder's files by name."""
    if not path.exists():
        raise error_cls(f"{what} path {path} does not exist")
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in BAR_FILE_SUFFIXES),
            key=lambda p: p.name,
        )
        if not files:
            raise error_cls(
                f"{what} folder {path} holds no file ending in {', '.join(BAR_FILE_SUFFIXES)}"
            )
        return files
    if path.suffix.lower() not in BAR_FILE_SUFFIXES:
        raise error_cls(
            f"{what} file {path}: expected a suffix in {BAR_FILE_SUFFIXES}, found {path.suffix!r}"
        )
    return [path]


def _read_raw_table(
    file: Path, required_columns: tuple[str, ...], error_cls: type[ValueError], what: str
) -> pl.DataFrame:
    """Read only ``required_columns`` of one Parquet/CSV file, CSV values as raw strings."""
    is_csv = file.suffix.lower() == ".csv"
    try:
        if is_csv:
            # Everything as text: the casts below then say which column holds a bad value.
            header = pl.read_csv(file, n_rows=0, infer_schema=False).columns
        else:
            header = list(pl.read_parquet_schema(file))
    except pl.exceptions.NoDataError as err:
        raise error_cls(f"{what} file {file} is empty") from err
    except Exception as err:  # a corrupt file: say which one
        raise error_cls(f"{what} file {file} could not be read: {err}") from err
    missing = [column for column in required_columns if column not in header]
    if missing:
        raise error_cls(
            f"{what} file {file}: missing column(s) {missing}; expected columns "
            f"{list(required_columns)}, found {header}"
        )
    try:
        if is_csv:
            table = pl.read_csv(file, columns=list(required_columns), infer_schema=False)
        else:
            table = pl.read_parquet(file, columns=list(required_columns))
    except Exception as err:
        raise error_cls(f"{what} file {file} could not be read: {err}") from err
    if table.height == 0:
        raise error_cls(f"{what} file {file} is empty (header only, no rows)")
    return table.select(required_columns)


def _bad_values(original: pl.Series, parsed: pl.Series) -> list[str]:
    """Values that were present in ``original`` but did not survive the cast."""
    failed = original.is_not_null() & parsed.is_null()
    return [str(v) for v in original.filter(failed).head(_EXAMPLES_IN_ERRORS).to_list()]


def _cast_text_column(
    table: pl.DataFrame, column: str, file: Path, error_cls: type[ValueError]
) -> pl.Series:
    """A ticker/pattern-like column as Utf8 (Categorical, Enum and integers are accepted)."""
    series = table[column]
    if series.dtype == pl.String:
        return series
    if isinstance(series.dtype, (pl.Categorical, pl.Enum)) or series.dtype.is_integer():
        return series.cast(pl.String)
    raise error_cls(f"file {file}: column {column!r} expected text (Utf8), found {series.dtype}")


# ISO 8601 dates, optionally with a time and an offset: '2020-01-02', '2020-01-02T16:00:00-05:00'.
ISO_DATE_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$"
)


def _cast_date_column(
    table: pl.DataFrame,
    column: str,
    file: Path,
    error_cls: type[ValueError],
    date_format: str | None = None,
) -> pl.Series:
    """A date column as ``pl.Date``: the local date as written, never shifted by a time zone.

    Text is ISO 8601 only ('YYYY-MM-DD', optionally followed by a time and an offset; the
    date part is kept as written, so an evening bar stamped -05:00 stays on its day and
    mixed offsets do not collide). Any other layout (e.g. '01/02/2020', which could be
    either day or month first) is an error unless ``date_format`` (a strftime pattern such
    as '%m/%d/%Y') says how to read it. Date columns pass through; a Datetime column gives
    its date in its own time zone.
    """
    series = table[column]
    if series.dtype == pl.Date:
        return series
    if isinstance(series.dtype, pl.Datetime):
        return series.dt.date()
    if series.dtype == pl.String:
        text = series.str.strip_chars()
        if date_format is not None:
            parsed = text.str.to_date(date_format, strict=False)
            expected = f"dates as {date_format!r} (the explicit date format)"
        else:
            is_iso = text.str.contains(ISO_DATE_PATTERN)
            # The first ten characters are the local date: no conversion to UTC.
            parsed = (
                pl.select(pl.when(is_iso).then(text.str.slice(0, 10)).otherwise(None)).to_series()
                .str.to_date("%Y-%m-%d", strict=False)
            )
            expected = (
                "ISO dates 'YYYY-MM-DD' (optionally with a time and offset); for another layout "
                "give the format explicitly (date_format, SCREENER_SSL_BARS_DATE_FORMAT, e.g. '%m/%d/%Y')"
            )
        bad = _bad_values(text, parsed)
        if bad:
            raise error_cls(f"file {file}: column {column!r} expected {expected}, found values such as {bad}")
        return parsed.alias(column)
    raise error_cls(
        f"file {file}: column {column!r} expected Date, Datetime or 'YYYY-MM-DD' text, "
        f"found {series.dtype}"
    )


def _cast_float_column(
    table: pl.DataFrame, column: str, file: Path, error_cls: type[ValueError]
) -> pl.Series:
    """A numeric column as Float64; numeric strings are fine, others stop the read."""
    series = table[column]
    if series.dtype.is_numeric():
        return series.cast(pl.Float64)
    if series.dtype == pl.String:
        text = series.str.strip_chars()
        text = pl.select(pl.when(text == "").then(None).otherwise(text)).to_series()
        parsed = text.cast(pl.Float64, strict=False)
        bad = _bad_values(text, parsed)
        if bad:
            raise error_cls(
                f"file {file}: column {column!r} expected numbers (Float64), "
                f"found non-numeric values such as {bad}"
            )
        return parsed.alias(column)
    raise error_cls(f"file {file}: column {column!r} expected numbers (Float64), found {series.dtype}")


def check_date_range(bars: pl.DataFrame, where: str) -> None:
    """Every date of ``bars`` lies in years 1-9999; else :class:`BarsSchemaError` naming ``where``, column and ticker."""
    days = bars.get_column("date").cast(pl.Int32)
    outside = (days < _FIRST_DAY) | (days > _LAST_DAY)
    n_outside = int(outside.sum() or 0)
    if not n_outside:
        return
    # Select the year before leaving Polars: a Python date cannot hold it.
    bad = bars.filter(outside).head(_EXAMPLES_IN_ERRORS).select("ticker", pl.col("date").dt.year().alias("year"))
    examples = ", ".join(f"ticker {row['ticker']!r} year {row['year']}" for row in bad.iter_rows(named=True))
    raise BarsSchemaError(
        f"{where}: column 'date' holds {n_outside} date(s) outside years 1-9999 ({examples}); "
        f"expected calendar dates of daily bars"
    )


def _read_bar_file(file: Path, date_format: str | None = None) -> pl.DataFrame:
    table = _read_raw_table(file, BAR_COLUMNS, BarsSchemaError, "bars")
    columns = [
        _cast_text_column(table, "ticker", file, BarsSchemaError),
        _cast_date_column(table, "date", file, BarsSchemaError, date_format),
        *(_cast_float_column(table, c, file, BarsSchemaError) for c in NUMERIC_BAR_COLUMNS),
    ]
    bars = pl.DataFrame(columns).select(BAR_COLUMNS)
    check_date_range(bars, f"file {file}")
    return bars


def read_bars(path: str | Path, date_format: str | None = None) -> pl.DataFrame:
    """Read bars from a Parquet (.parquet/.pq) or CSV file, or a folder of such files.

    Text dates must be ISO ('YYYY-MM-DD', a time and offset may follow; the date is kept as
    written) unless ``date_format`` gives another strftime layout, e.g. '%m/%d/%Y'.

    Folder files are read in file-name order and concatenated. Extra columns are dropped;
    the result has exactly ``BAR_COLUMNS`` with the dtypes of ``BAR_SCHEMA``. No row is
    dropped here (bad rows are :func:`validate_bars`' business).

    Raises:
        BarsSchemaError: naming the file and column when a column is missing or holds
            values that cannot be cast, or when a file is empty or unreadable.
    """
    files = _table_files(Path(path), BarsSchemaError, "bars")
    frames = [_read_bar_file(file, date_format) for file in files]
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ValidationResult:
    """Bars split into accepted and rejected rows; ``len(clean) + len(quarantine) == input``."""

    clean: pl.DataFrame  # BAR_COLUMNS, sorted by (ticker, date), unique on (ticker, date)
    quarantine: pl.DataFrame  # BAR_COLUMNS + "reason" (Utf8), sorted by (ticker, date)
    counts: dict[str, int]  # rows per reason (every reason present), "input_rows", "clean_rows"
    warnings: tuple[str, ...] = ()  # what a user should read: tickers quarantined past the market's end


def market_end(bars: pl.DataFrame) -> "dt.date | None":
    """The last bar date that at least ``MARKET_END_SHARE`` of the tickers (and at least 2) reach; None with one ticker."""
    last = (
        bars.filter(pl.col("ticker").is_not_null() & pl.col("date").is_not_null())
        .group_by("ticker").agg(pl.col("date").max())
        .get_column("date").sort(descending=True)
    )
    k = max(2, math.ceil(MARKET_END_SHARE * last.len()))
    return last[k - 1] if last.len() >= k else None


def _beyond_market_end_warnings(quarantine: pl.DataFrame, end: "dt.date | None") -> tuple[str, ...]:
    beyond = quarantine.filter(pl.col("reason") == "date_beyond_market_end")
    if end is None or beyond.height == 0:
        return ()
    per_ticker = beyond.group_by("ticker").agg(pl.len().alias("n"), pl.col("date").max().alias("last")).sort("ticker")
    return tuple(
        f"ticker {row['ticker']!r}: {row['n']:,} bar(s) dated more than {DAYS_BEYOND_MARKET_END} days after the "
        f"market's end {end} (the last bar of most tickers), up to {row['last']}: quarantined as "
        f"date_beyond_market_end; check that ticker's dates"
        for row in per_ticker.iter_rows(named=True)
    )


def _reject_conditions() -> list[tuple[str, pl.Expr]]:
    """(reason, boolean expression) in ``REJECT_REASONS`` order, on bars sorted by (ticker, date).

    The last reason, ``date_beyond_market_end``, depends on the other rows: see :func:`validate_bars`.
    """
    numeric = [pl.col(c) for c in NUMERIC_BAR_COLUMNS]
    prices = [pl.col(c) for c in PRICE_COLUMNS]
    # is_finite is null on null input, so fill: a null is as bad as a NaN here.
    missing = pl.any_horizontal(
        pl.col("ticker").is_null(),
        pl.col("date").is_null(),
        *[(~c.is_finite()).fill_null(True) for c in numeric],
    )
    body_top = pl.max_horizontal("open", "close")
    body_bottom = pl.min_horizontal("open", "close")
    # On sorted rows a repeated key sits next to its copies: comparing neighbours is O(n),
    # several times faster than a group-by. Every copy is flagged, even when one copy fails
    # another check: there is no telling which copy the source meant.
    ticker, date = pl.col("ticker"), pl.col("date")
    same_as_previous = ((ticker == ticker.shift(1)) & (date == date.shift(1))).fill_null(False)
    duplicated = same_as_previous | same_as_previous.shift(-1, fill_value=False)
    conditions = [
        ("null_or_non_finite", missing),
        # '' or blanks name no instrument; every such row would collapse into one ticker.
        ("empty_ticker", pl.col("ticker").str.strip_chars() == ""),
        ("non_positive_price", pl.any_horizontal(*[c <= 0 for c in prices])),
        ("high_below_low", pl.col("high") < pl.col("low")),
        ("high_below_open_close", pl.col("high") < body_top),
        ("low_above_open_close", pl.col("low") > body_bottom),
        ("negative_volume", pl.col("volume") < 0),
        ("duplicate_ticker_date", duplicated),
    ]
    assert tuple(name for name, _ in conditions) == REJECT_REASONS[:-1]
    return conditions


def _reason_code_expr() -> pl.Expr:
    """UInt8 code per row: 0 = clean, k = ``REJECT_REASONS[k - 1]`` (the first that fails)."""
    # Integer codes, not strings, in the when/then chain: it runs over every input row.
    code = pl.lit(0, dtype=pl.UInt8)
    for position, (_, condition) in reversed(list(enumerate(_reject_conditions()))):
        # Later conditions may be null on null input; such a row is already caught first.
        code = (
            pl.when(condition.fill_null(False))
            .then(pl.lit(position + 1, dtype=pl.UInt8))
            .otherwise(code)
        )
    return code.alias("reason_code")


def _check_bar_columns(bars: pl.DataFrame) -> None:
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise BarsSchemaError(
            f"bars frame: missing column(s) {missing}; expected {list(BAR_COLUMNS)}, "
            f"found {bars.columns}"
        )
    wrong = {
        c: str(bars.schema[c]) for c in BAR_COLUMNS if bars.schema[c] != BAR_SCHEMA[c]
    }
    if wrong:
        expected = {c: str(BAR_SCHEMA[c]) for c in wrong}
        raise BarsSchemaError(
            f"bars frame: column dtype(s) expected {expected}, found {wrong}; "
            "read files with read_bars to cast them"
        )


def validate_bars(bars: pl.DataFrame) -> ValidationResult:
    """Split bars into clean rows and a quarantine that keeps every rejected row.

    A row is rejected with the first failing reason of ``REJECT_REASONS``:
    null/NaN/inf in any price or volume (or a null ticker/date), an empty or blank ticker,
    a price <= 0,
    ``high < low``, ``high < max(open, close)``, ``low > min(open, close)``,
    ``volume < 0``, a ``(ticker, date)`` key that occurs more than once
    (all its rows are quarantined), and last a date more than ``DAYS_BEYOND_MARKET_END``
    days after the market's end (:func:`market_end`), named per ticker in ``warnings``.
    A date outside years 1-9999 stops with :class:`BarsSchemaError` naming the ticker.

    Args:
        bars: ``BAR_COLUMNS`` with the dtypes of ``BAR_SCHEMA`` (as :func:`read_bars`
            returns them); extra columns are ignored.

    Returns:
        ValidationResult with ``clean`` sorted by (ticker, date).
    """
    _check_bar_columns(bars)
    check_date_range(bars, "bars frame")
    coded = _sorted_by_ticker_date(bars.select(BAR_COLUMNS)).with_columns(_reason_code_expr())
    is_clean = pl.col("reason_code") == 0
    # The market's end from the rows that pass every other check; rows well past it are quarantined last.
    end = market_end(coded.filter(is_clean))
    if end is not None:
        beyond = is_clean & (pl.col("date") > pl.lit(end + dt.timedelta(days=DAYS_BEYOND_MARKET_END)))
        coded = coded.with_columns(
            pl.when(beyond).then(pl.lit(len(REJECT_REASONS), dtype=pl.UInt8)).otherwise(pl.col("reason_code"))
            .alias("reason_code")
        )
    clean = coded.filter(is_clean).drop("reason_code")
    rejected = coded.filter(~is_clean)
    reason_names = pl.Series("reason", REJECT_REASONS, dtype=pl.String)
    # Copies of a duplicated key may come in any order from the sort: fix theirs by value.
    quarantine = (
        rejected.drop("reason_code")
        .with_columns(reason_names.gather(rejected["reason_code"].cast(pl.Int64) - 1))
        .sort(*BAR_COLUMNS, "reason", nulls_last=True)
    )
    per_code = np.bincount(rejected["reason_code"].to_numpy(), minlength=len(REJECT_REASONS) + 1)
    counts = {reason: int(per_code[k + 1]) for k, reason in enumerate(REJECT_REASONS)}
    counts["input_rows"] = bars.height
    counts["clean_rows"] = clean.height
    assert clean.height + quarantine.height == bars.height, "validation lost rows"
    return ValidationResult(
        clean=clean, quarantine=quarantine, counts=counts, warnings=_beyond_market_end_warnings(quarantine, end)
    )


# --------------------------------------------------------------------------- ordering


def _is_sorted_by_ticker_date(bars: pl.DataFrame) -> bool:
    """True when rows are in non-decreasing (ticker, date) order with no null key."""
    if bars.height == 0:
        return True
    ticker, date = pl.col("ticker"), pl.col("date")
    ordered = (ticker > ticker.shift()) | ((ticker == ticker.shift()) & (date >= date.shift()))
    no_null_key = ticker.is_not_null().all() & date.is_not_null().all()
    return bool(bars.select(ordered.slice(1).fill_null(False).all() & no_null_key).item())


def _sorted_by_ticker_date(bars: pl.DataFrame) -> pl.DataFrame:
    """Rows in (ticker, date) order, null keys last; the order of equal keys is unspecified."""
    # Files usually arrive sorted; the check is far cheaper than any sort.
    if _is_sorted_by_ticker_date(bars):
        return bars
    # One int64 key (lexical ticker rank, date) sorts 2-3x faster than a two-column sort
    # with a string column, whose comparisons chase pointers on unsorted rows.
    lexical_tickers = bars["ticker"].drop_nulls().unique().sort()
    ticker_rank = bars["ticker"].cast(pl.Enum(lexical_tickers)).to_physical().cast(pl.Int64)
    date_days = bars["date"].cast(pl.Int64) + 2**31
    order = (ticker_rank * 2**32 + date_days).arg_sort(nulls_last=True)
    return bars[order]


# --------------------------------------------------------------------------- fingerprint


def bars_content_hash(clean: pl.DataFrame) -> str:
    """SHA-256 hex of the bars' content, independent of row order.

    Rows are put in (ticker, date) order (a no-op for :func:`validate_bars` output; the
    key must be unique, so the order is fixed), then the hash covers the column names and dtypes, the run-length encoded ticker
    column, the dates as int32 days and the raw float64 buffers of prices and volume.
    The bytes depend only on the values, so the hash is stable across library versions.
    """
    _check_bar_columns(clean)
    bars = _sorted_by_ticker_date(clean.select(BAR_COLUMNS))
    ticker, date = pl.col("ticker"), pl.col("date")
    repeated = bars.filter((ticker == ticker.shift()) & (date == date.shift()))
    if repeated.height:
        first = repeated.row(0, named=True)
        raise ValueError(
            "bars_content_hash expects validated bars, unique on (ticker, date); found "
            f"{repeated.height} repeated key(s), e.g. ({first['ticker']!r}, {first['date']})"
        )
    digest = hashlib.sha256()
    digest.update(repr([(c, str(bars.schema[c])) for c in BAR_COLUMNS]).encode())
    digest.update(np.int64(bars.height).tobytes())
    runs = bars.select(pl.col("ticker").rle()).unnest("ticker")
    # Unit separator between tickers: names cannot run into each other.
    digest.update("\x1f".join(runs["value"].fill_null("\x00null").to_list()).encode())
    digest.update(runs["len"].cast(pl.Int64).to_numpy().astype("<i8").tobytes())
    date_days = bars["date"].cast(pl.Int32).fill_null(np.iinfo(np.int32).min)
    digest.update(date_days.to_numpy().astype("<i4").tobytes())
    for column in NUMERIC_BAR_COLUMNS:
        digest.update(np.ascontiguousarray(bars[column].to_numpy(), dtype="<f8").tobytes())
    return digest.hexdigest()
