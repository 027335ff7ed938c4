"""A corpus of bad bar files fed to ingestion: a clear error and nothing changed, or every row accounted for."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from screener_ssl.data import dataset as ds
from screener_ssl.data.bars import BarsSchemaError, REJECT_REASONS
from screener_ssl_tests.conftest import random_walk_bars
from screener_ssl_tests.faults.conftest import hidden_leftovers, tree_digest

HEADER = "ticker,date,open,high,low,close,volume\n"
GOOD = "AAA,2020-01-02,10,11,9,10.5,1000\n"

# name -> (file content, pattern the error must match: file name and what is wrong)
FATAL = {
    "no_volume.csv": ("ticker,date,open,high,low,close\nAAA,2020-01-02,10,11,9,10.5\n", r"no_volume\.csv.*missing column.*volume"),
    "text_price.csv": (HEADER + GOOD + "AAA,2020-01-03,ten,11,9,10.5,1000\n", r"text_price\.csv.*'open'.*'ten'"),
    "empty.csv": ("", r"empty\.csv is empty"),
    "header_only.csv": (HEADER, r"header_only\.csv is empty"),
    "garbage.parquet": (b"PAR1 this is not parquet", r"garbage\.parquet could not be read"),
    "us_dates.csv": (HEADER + "AAA,01/02/2020,10,11,9,10.5,1000\n", r"us_dates\.csv.*'date'.*ISO.*01/02/2020"),
    "bars.txt": (HEADER + GOOD, r"bars\.txt.*expected a suffix"),
}

# Rows that break the contract one way each; every one must land in the quarantine.
BAD_ROWS = [
    ("AAA,2020-01-06,10,11,9,nan,1000", "null_or_non_finite"),
    ("AAA,2020-01-07,10,11,9,inf,1000", "null_or_non_finite"),
    ("AAA,2020-01-08,,11,9,10.5,1000", "null_or_non_finite"),
    ("   ,2020-01-09,10,11,9,10.5,1000", "empty_ticker"),
    ("AAA,2020-01-10,-1,11,9,10.5,1000", "non_positive_price"),
    ("AAA,2020-01-13,10,8,9,10.5,1000", "high_below_low"),
    ("AAA,2020-01-14,10,10.2,9,10.5,1000", "high_below_open_close"),
    ("AAA,2020-01-15,10,11,10.2,10.5,1000", "low_above_open_close"),
    ("AAA,2020-01-16,10,11,9,10.5,-5", "negative_volume"),
    ("AAA,2020-01-17,10,11,9,10.5,1000", "duplicate_ticker_date"),
    ("AAA,2020-01-17,10,11,9,10.4,1000", "duplicate_ticker_date"),
]


@pytest.fixture
def ingested_root(tmp_path):
    good = tmp_path / "good.parquet"
    random_walk_bars(n_tickers=2, n_days=60).write_parquet(good)
    root = tmp_path / "root"
    ds.ingest_bars(root, str(good), None)
    return root


@pytest.mark.parametrize("name", sorted(FATAL))
def test_a_bad_file_stops_with_its_name_and_changes_nothing(tmp_path, ingested_root, name):
    content, pattern = FATAL[name]
    bad = tmp_path / "incoming" / name
    bad.parent.mkdir()
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = tree_digest(ingested_root)
    with pytest.raises(BarsSchemaError, match=pattern):
        ds.ingest_bars(ingested_root, str(bad), None)
    assert tree_digest(ingested_root) == before and hidden_leftovers(ingested_root) == []


def test_a_bad_file_in_a_folder_names_that_file(tmp_path, ingested_root):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + GOOD)
    (folder / "b.csv").write_text(HEADER + "AAA,2020-01-03,10,11,9,x,1000\n")
    with pytest.raises(BarsSchemaError, match=r"b\.csv.*'close'"):
        ds.ingest_bars(ingested_root, str(folder), None)


def test_every_bad_row_is_quarantined_and_no_row_is_lost(tmp_path, ingested_root):
    file = tmp_path / "mixed.csv"
    good_rows = [f"BBB,2020-02-{d:02d},10,11,9,10.5,1000" for d in (3, 4, 5, 6, 7)]
    file.write_text(HEADER + "\n".join(good_rows + [row for row, _ in BAD_ROWS]) + "\n")
    report = ds.ingest_bars(ingested_root, str(file), None)
    counts = report.counts
    assert counts["input_rows"] == len(good_rows) + len(BAD_ROWS)
    assert counts["clean_rows"] + sum(counts[r] for r in REJECT_REASONS) == counts["input_rows"]
    quarantine = pl.read_parquet(ingested_root / ds.BARS_DIR / "quarantine.parquet")
    assert sorted(quarantine["reason"].to_list()) == sorted(reason for _, reason in BAD_ROWS)
    assert ds.load_clean_bars(ingested_root).height == len(good_rows)
    with duckdb.connect(str(ingested_root / ds.WAREHOUSE), read_only=True) as con:
        in_db = con.execute("SELECT (SELECT count(*) FROM bars) + (SELECT count(*) FROM bars_quarantine)").fetchone()[0]
    assert in_db == counts["input_rows"]


def test_a_file_whose_every_row_is_bad_changes_nothing(tmp_path, ingested_root):
    file = tmp_path / "all_bad.csv"
    file.write_text(HEADER + "\n".join(row for row, _ in BAD_ROWS[:3]) + "\n")
    before = tree_digest(ingested_root)
    with pytest.raises(ValueError, match=r"every bar from .*all_bad\.csv was rejected"):
        ds.ingest_bars(ingested_root, str(file), None)
    assert tree_digest(ingested_root) == before and hidden_leftovers(ingested_root) == []
