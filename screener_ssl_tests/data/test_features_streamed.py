"""Streamed feature build from Parquet == the in-memory build, whatever the block boundaries."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from screener_ssl.data.features import compute_shape_features, read_shape_features, shape_features_from_blocks
from screener_ssl.data.synthetic import SyntheticMarketConfig, generate_market


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return generate_market(SyntheticMarketConfig(n_tickers=5, n_days=120, seed=4)).bars


def _assert_same_store(a, b) -> None:
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.dates, b.dates)
    assert a.tickers == b.tickers


@pytest.mark.parametrize("block_rows", [1, 7, 119, 120, 121, 10_000])
def test_parquet_stream_equals_in_memory_build(tmp_path, bars, block_rows):
    # Tickers have 120 bars: blocks of 119/120/121 put seams just inside, on and past a ticker's end.
    path = tmp_path / "bars.parquet"
    bars.write_parquet(path, row_group_size=50)
    _assert_same_store(read_shape_features(path, block_rows=block_rows), compute_shape_features(bars))


def test_blocks_of_any_size_give_the_same_features(bars):
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, bars.height), size=25, replace=False))
    edges = [0, *cuts.tolist(), bars.height]
    blocks = (bars.slice(a, b - a) for a, b in zip(edges[:-1], edges[1:]))
    _assert_same_store(shape_features_from_blocks(blocks, bars.height), compute_shape_features(bars))


def test_disorder_across_a_block_seam_is_refused(tmp_path, bars):
    # Swap two tickers' halves so the only out-of-order pair straddles the seam.
    first, second = bars.slice(0, 120), bars.slice(120, 120)
    with pytest.raises(ValueError, match="sorted by \\(ticker, date\\)"):
        shape_features_from_blocks(iter([second, first]), 240)


def test_row_count_mismatch_and_missing_columns_are_named(tmp_path, bars):
    with pytest.raises(ValueError, match="were announced"):
        shape_features_from_blocks(iter([bars.slice(0, 10)]), 11)
    path = tmp_path / "no_volume.parquet"
    bars.drop("volume").write_parquet(path)
    with pytest.raises(ValueError, match="missing column\\(s\\) \\['volume'\\]"):
        read_shape_features(path)
    with pytest.raises(FileNotFoundError, match="no bar file"):
        read_shape_features(tmp_path / "absent.parquet")
