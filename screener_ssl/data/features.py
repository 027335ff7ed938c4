"""Bars -> per-bar scale-free shape features, stored once per ticker in one contiguous array.

Every feature of bar t is a function of bars <= t (the trailing volume mean uses
bars t-L .. t-1 only). Decision-time censoring happens later, when a window is
gathered, so the stored array keeps every known value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from screener_ssl.data.contracts import FEATURE_NAMES

VOLUME_LOOKBACK = 20  # trailing bars in the relative-volume baseline


@dataclass(frozen=True)
class FeatureStore:
    """All tickers' features in one ``float32 [N_bars, C]`` array; ticker i owns rows offsets[i]:offsets[i+1]."""

    values: np.ndarray  # float32 [N, C]; NaN where undefined (first bar's return/gap, warm-up volume)
    offsets: np.ndarray  # int64 [n_tickers + 1]
    dates: np.ndarray  # datetime64[D] [N]
    tickers: tuple[str, ...]
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        n = self.values.shape[0]
        assert self.values.ndim == 2 and self.values.shape[1] == len(self.feature_names), (
            f"values {self.values.shape} vs {len(self.feature_names)} feature names"
        )
        assert self.offsets[0] == 0 and self.offsets[-1] == n and len(self.offsets) == len(self.tickers) + 1
        assert self.dates.shape == (n,)

    @property
    def n_tickers(self) -> int:
        return len(self.tickers)

    @property
    def ticker_of_row(self) -> np.ndarray:
        """int32 [N]: the ticker id of each row."""
        return np.repeat(np.arange(self.n_tickers, dtype=np.int32), np.diff(self.offsets))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "values.npy", self.values)
        np.save(directory / "offsets.npy", self.offsets)
        np.save(directory / "dates.npy", self.dates.astype("datetime64[D]").astype(np.int32))
        (directory / "meta.json").write_text(
            json.dumps({"tickers": list(self.tickers), "feature_names": list(self.feature_names)})
        )

    @classmethod
    def load(cls, directory: Path, mmap: bool = True) -> "FeatureStore":
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no feature store at {directory} (missing meta.json); materialize shape_features")
        meta = json.loads(meta_path.read_text())
        mode = "r" if mmap else None
        return cls(
            values=np.load(directory / "values.npy", mmap_mode=mode),
            offsets=np.load(directory / "offsets.npy"),
            dates=np.load(directory / "dates.npy").astype("datetime64[D]"),
            tickers=tuple(meta["tickers"]),
            feature_names=tuple(meta["feature_names"]),
        )


def _trailing_mean_exclusive(x: np.ndarray, starts: np.ndarray, lookback: int) -> np.ndarray:
    """Mean of x over rows t-lookback .. t-1 within each ticker (NaN until lookback rows exist)."""
    n = x.shape[0]
    csum = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    idx = np.arange(n)
    pos_in_ticker = idx - starts
    out = (csum[idx] - csum[np.maximum(idx - lookback, 0)]) / lookback
    out[pos_in_ticker < lookback] = np.nan
    return out


def compute_shape_features(bars: pl.DataFrame, volume_lookback: int = VOLUME_LOOKBACK) -> FeatureStore:
    """Validated bars (sorted by ticker, date; unique) -> :class:`FeatureStore`. Vectorized over all tickers."""
    if bars.height == 0:
        raise ValueError("no bars to compute features from (the validated bar table is empty)")
    tickers_col = bars.get_column("ticker")
    # Sortedness is a precondition of the contiguous layout; check rather than trust.
    key_ok = bars.select(
        ((pl.col("ticker") > pl.col("ticker").shift(1))
         | ((pl.col("ticker") == pl.col("ticker").shift(1)) & (pl.col("date") > pl.col("date").shift(1))))
        .fill_null(True)
        .all()
    ).item()
    if not key_ok:
        raise ValueError("bars must be sorted by (ticker, date) and unique; validate them first")

    o = bars.get_column("open").to_numpy().astype(np.float64)
    h = bars.get_column("high").to_numpy().astype(np.float64)
    lo = bars.get_column("low").to_numpy().astype(np.float64)
    c = bars.get_column("close").to_numpy().astype(np.float64)
    v = bars.get_column("volume").to_numpy().astype(np.float64)
    n = o.shape[0]

    change = np.ones(n, dtype=bool)
    tick_np = tickers_col.to_numpy()
    change[1:] = tick_np[1:] != tick_np[:-1]
    start_rows = np.flatnonzero(change)
    offsets = np.append(start_rows, n).astype(np.int64)
    starts = np.repeat(start_rows, np.diff(offsets))

    prev_close = np.empty(n)
    prev_close[0] = np.nan
    prev_close[1:] = c[:-1]
    prev_close[change] = np.nan  # no previous close across tickers

    log_v = np.log1p(v)
    values = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        values[:, 0] = np.log(c / prev_close)
        values[:, 1] = np.log(o / prev_close)
        values[:, 2] = np.log(h / o)
        values[:, 3] = np.log(lo / o)
        values[:, 4] = np.log(c / o)
        values[:, 5] = log_v - _trailing_mean_exclusive(log_v, starts, volume_lookback)

    dates = bars.get_column("date").to_numpy().astype("datetime64[D]")
    tickers = tuple(tick_np[start_rows].tolist())
    return FeatureStore(values=values, offsets=offsets, dates=dates, tickers=tickers)
