"""Shared fixtures: small seeded markets."""

from __future__ import annotations


import numpy as np
import polars as pl
import pytest
import torch

torch.set_num_threads(2)


def random_walk_bars(n_tickers: int = 5, n_days: int = 300, seed: int = 0, ragged: bool = False) -> pl.DataFrame:
    """Plain OHLCV random walks obeying the bar contract (sorted, unique, consistent high/low)."""
    rng = np.random.default_rng(seed)
    days = np.busday_offset(np.datetime64("2020-01-01"), np.arange(n_days), roll="forward")
    frames = []
    for i in range(n_tickers):
        start = int(rng.integers(0, n_days // 4)) if ragged else 0
        n = n_days - start
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.005, n))
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, n)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
        frames.append(
            pl.DataFrame(
                {
                    "ticker": [f"T{i:03d}"] * n,
                    "date": pl.Series(days[start:].astype("datetime64[D]")),
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": rng.lognormal(12, 0.5, n),
                }
            )
        )
    return pl.concat(frames).with_columns(pl.col("date").cast(pl.Date)).sort("ticker", "date")


@pytest.fixture
def small_bars() -> pl.DataFrame:
    return random_walk_bars()
