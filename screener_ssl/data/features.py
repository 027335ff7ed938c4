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
            raise FileNotFoundError(f"no feature store at {directory} (missing meta.json); build the features (build_features)")
        meta = json.loads(meta_path.read_text())
        mode = "r" if mmap else None
        return cls(
            values=np.load(directory / "values.npy", mmap_mode=mode),
            offsets=np.load(directory / "offsets.npy"),
            dates=np.load(directory / "dates.npy").astype("datetime64[D]"),
            tickers=tuple(meta["tickers"]),
            feature_names=tuple(meta["feature_names"]),
        )


FEATURE_BLOCK_ROWS = 1 << 18  # rows per block: temporaries stay a few MB whatever the market size


def _float64_block(block: pl.DataFrame, name: str) -> np.ndarray:
    # A zero-copy view when the block lies in one chunk of a float64 column; else a block-sized copy.
    return np.asarray(block.get_column(name).to_numpy(), dtype=np.float64)


def _first_rows_checked(bars: pl.DataFrame, block_rows: int) -> np.ndarray:
    """bool [N]: True on each ticker's first row; raises unless bars are sorted by (ticker, date), unique.

    Works on row blocks (one row of overlap) so no full-length string temporaries are made.
    """
    n = bars.height
    change = np.empty(n, dtype=bool)
    prev_ticker = pl.col("ticker").shift(1)
    for a in range(0, n, block_rows):
        b = min(a + block_rows, n)
        lead = 1 if a > 0 else 0  # the previous block's last row, to compare across the seam
        block = bars.slice(a - lead, b - a + lead).select("ticker", "date")
        flags = block.select(
            new_ticker=(pl.col("ticker") != prev_ticker).fill_null(True),
            # Sortedness is a precondition of the contiguous layout; check rather than trust.
            ordered=(
                (pl.col("ticker") > prev_ticker)
                | ((pl.col("ticker") == prev_ticker) & (pl.col("date") > pl.col("date").shift(1)))
            ).fill_null(True),
        )
        if not flags.get_column("ordered").all():
            raise ValueError("bars must be sorted by (ticker, date) and unique; validate them first")
        change[a:b] = flags.get_column("new_ticker").to_numpy()[lead:]
    return change


def compute_shape_features(bars: pl.DataFrame, volume_lookback: int = VOLUME_LOOKBACK) -> FeatureStore:
    """Validated bars (sorted by ticker, date; unique) -> :class:`FeatureStore`. Vectorized over all tickers.

    Rows are processed in blocks of ``FEATURE_BLOCK_ROWS`` straight into the float32
    output, so peak memory is the output plus a few MB, not several full-length
    float64 temporaries. Arithmetic (float64, then cast) and the sequential cumulative
    sum behind the volume baseline are the same as an all-at-once computation.
    """
    if bars.height == 0:
        raise ValueError("no bars to compute features from (the validated bar table is empty)")
    n = bars.height
    change = _first_rows_checked(bars, FEATURE_BLOCK_ROWS)
    start_rows = np.flatnonzero(change)
    offsets = np.append(start_rows, n).astype(np.int64)

    lookback = volume_lookback
    values = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    # Running sum of log1p(volume) over all rows so far, carried across blocks, plus the last
    # lookback + 1 prefix sums: csum[k] = sum of log_v[0 .. k-1], as one global cumsum would give.
    carry = 0.0
    csum_tail = np.zeros(1, dtype=np.float64)  # csum[a - len(tail) + 1 .. a] for the block starting at a
    last_close = np.nan  # close of the row before the block
    for a in range(0, n, FEATURE_BLOCK_ROWS):
        b = min(a + FEATURE_BLOCK_ROWS, n)
        # Columns are read block by block: a whole-column to_numpy would copy a chunked column.
        block = bars.slice(a, b - a)
        ob, cb = _float64_block(block, "open"), _float64_block(block, "close")
        prev_close = np.empty(b - a)
        prev_close[0] = last_close
        prev_close[1:] = cb[:-1]
        prev_close[change[a:b]] = np.nan  # no previous close across tickers
        last_close = cb[-1]
        out = values[a:b]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, 0] = np.log(cb / prev_close)
            out[:, 1] = np.log(ob / prev_close)
            out[:, 2] = np.log(_float64_block(block, "high") / ob)
            out[:, 3] = np.log(_float64_block(block, "low") / ob)
            out[:, 4] = np.log(cb / ob)
            log_v = np.log1p(_float64_block(block, "volume"))
            # Sequential cumsum seeded with the running total: bit-identical to a global cumsum.
            seeded = log_v.copy()
            seeded[0] += carry
            block_csum = np.cumsum(seeded, dtype=np.float64)  # csum[a + 1 .. b]
            carry = float(block_csum[-1])
            csum = np.concatenate([csum_tail, block_csum])  # csum[a + 1 - len(tail) .. b]
            base = a + 1 - len(csum_tail)  # global csum index of csum[0]
            idx = np.arange(a, b)
            mean = (csum[idx - base] - csum[np.maximum(idx - lookback, 0) - base]) / lookback
            # Rows within lookback of their ticker's first row have no full trailing window.
            pos_in_ticker = idx - start_rows[np.searchsorted(start_rows, idx, side="right") - 1]
            mean[pos_in_ticker < lookback] = np.nan
            out[:, 5] = log_v - mean
        csum_tail = csum[-(lookback + 1) :]

    if bars.schema["date"] == pl.Date:
        # Days since epoch, block by block, straight into the datetime64[D] output.
        dates = np.empty(n, dtype="datetime64[D]")
        for a in range(0, n, FEATURE_BLOCK_ROWS):
            dates.view(np.int64)[a : a + FEATURE_BLOCK_ROWS] = (
                bars.get_column("date").slice(a, FEATURE_BLOCK_ROWS).cast(pl.Int32).to_numpy()
            )
    else:
        dates = bars.get_column("date").to_numpy().astype("datetime64[D]")
    tickers = tuple(bars.get_column("ticker").gather(start_rows).to_list())
    return FeatureStore(values=values, offsets=offsets, dates=dates, tickers=tickers)
