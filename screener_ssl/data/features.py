"""Bars -> per-bar scale-free shape features, stored once per ticker in one contiguous array.

Every feature of bar t is a function of bars <= t (the trailing volume mean uses
bars t-L .. t-1 only). Decision-time censoring happens later, when a window is
gathered, so the stored array keeps every known value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

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
PARQUET_BLOCK_ROWS = 1 << 16  # rows per block read from a file: smaller blocks, less decoded Parquet resident


def _float64_block(block: pl.DataFrame, name: str) -> np.ndarray:
    # A zero-copy view when the block lies in one chunk of a float64 column; else a block-sized copy.
    return np.asarray(block.get_column(name).to_numpy(), dtype=np.float64)


def compute_shape_features(bars: pl.DataFrame, volume_lookback: int = VOLUME_LOOKBACK) -> FeatureStore:
    """Validated bars (sorted by ticker, date; unique) -> :class:`FeatureStore`. Vectorized over all tickers.

    Rows are processed in blocks of ``FEATURE_BLOCK_ROWS`` straight into the float32
    output, so peak memory is the output plus a few MB, not several full-length
    float64 temporaries. Arithmetic (float64, then cast) and the sequential cumulative
    sum behind the volume baseline are the same as an all-at-once computation.
    """
    if bars.height == 0:
        raise ValueError("no bars to compute features from (the validated bar table is empty)")
    blocks = (bars.slice(a, FEATURE_BLOCK_ROWS) for a in range(0, bars.height, FEATURE_BLOCK_ROWS))
    return shape_features_from_blocks(blocks, bars.height, volume_lookback)


def read_shape_features(
    path: str | Path, volume_lookback: int = VOLUME_LOOKBACK, block_rows: int = PARQUET_BLOCK_ROWS
) -> FeatureStore:
    """Validated bars in a Parquet file -> :class:`FeatureStore`, streamed in row blocks.

    Equal to ``compute_shape_features(pl.read_parquet(path))`` (the same block code), but
    the bar table is never resident whole: each block is a row slice read from the file
    (polars reads only the row groups it overlaps), so peak memory is the store plus a
    few blocks of bars.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no bar file at {path}")
    columns = ["ticker", "date", "open", "high", "low", "close", "volume"]
    missing = [c for c in columns if c not in pl.read_parquet_schema(path)]
    if missing:
        raise ValueError(f"bar file {path}: missing column(s) {missing}")
    frame = pl.scan_parquet(path).select(columns)
    n_rows = int(pl.scan_parquet(path).select(pl.len()).collect().item())
    if n_rows == 0:
        raise ValueError(f"no bars to compute features from ({path} has no rows)")
    blocks = (frame.slice(a, block_rows).collect() for a in range(0, n_rows, block_rows))
    return shape_features_from_blocks(blocks, n_rows, volume_lookback)


def _block_flags(block: pl.DataFrame, prev_key: tuple | None) -> tuple[np.ndarray, bool]:
    """(new_ticker bool [m], ordered): ticker changes and (ticker, date) order within ``block``.

    ``prev_key``: (ticker, date) of the row before the block (None at the first block), so the
    seam between blocks is checked like any other pair of rows.
    """
    prev_ticker = pl.col("ticker").shift(1)
    flags = block.select(
        new_ticker=(pl.col("ticker") != prev_ticker).fill_null(True),
        # Sortedness is a precondition of the contiguous layout; check rather than trust.
        ordered=(
            (pl.col("ticker") > prev_ticker)
            | ((pl.col("ticker") == prev_ticker) & (pl.col("date") > pl.col("date").shift(1)))
        ).fill_null(True),
    )
    new_ticker = flags.get_column("new_ticker").to_numpy().copy()
    ordered = bool(flags.get_column("ordered").all())
    if prev_key is not None:
        ticker0, date0 = block.row(0)[:2]
        new_ticker[0] = ticker0 != prev_key[0]
        ordered &= ticker0 > prev_key[0] or (ticker0 == prev_key[0] and date0 > prev_key[1])
    return new_ticker, ordered


def shape_features_from_blocks(
    blocks: Iterable[pl.DataFrame], n_rows: int, volume_lookback: int = VOLUME_LOOKBACK
) -> FeatureStore:
    """Consecutive row blocks of validated bars (sorted by ticker, date; ``n_rows`` in all) -> store.

    A ticker may span blocks: the previous close, the running log-volume sum and the last
    ``volume_lookback + 1`` prefix sums are carried across each seam, so the result does
    not depend on where blocks end.
    """
    lookback = volume_lookback
    values = np.empty((n_rows, len(FEATURE_NAMES)), dtype=np.float32)
    dates = np.empty(n_rows, dtype="datetime64[D]")
    start_rows: list[np.ndarray] = []
    tickers: list = []
    # Running sum of log1p(volume) over all rows so far, carried across blocks, plus the last
    # lookback + 1 prefix sums: csum[k] = sum of log_v[0 .. k-1], as one global cumsum would give.
    carry = 0.0
    csum_tail = np.zeros(1, dtype=np.float64)  # csum[a - len(tail) + 1 .. a] for the block starting at a
    last_close = np.nan  # close of the row before the block
    current_start = 0  # first row of the ticker the previous block ended in
    prev_key = None
    a = 0
    for block in blocks:
        m = block.height
        if m == 0:
            continue
        b = a + m
        if b > n_rows:
            raise ValueError(f"bar blocks hold more than the {n_rows} rows announced")
        change, ordered = _block_flags(block.select("ticker", "date"), prev_key)
        if not ordered:
            raise ValueError("bars must be sorted by (ticker, date) and unique; validate them first")
        prev_key = block.select("ticker", "date").row(m - 1)
        new_at = np.flatnonzero(change)
        start_rows.append(a + new_at)
        tickers.extend(block.get_column("ticker").gather(new_at).to_list())
        # First row of each row's ticker, carried from the previous block until a new ticker starts.
        idx = np.arange(a, b)
        first_row = np.maximum.accumulate(np.where(change, idx, -1))
        first_row = np.where(first_row < 0, current_start, first_row)
        current_start = int(first_row[-1])

        ob, cb = _float64_block(block, "open"), _float64_block(block, "close")
        prev_close = np.empty(m)
        prev_close[0] = last_close
        prev_close[1:] = cb[:-1]
        prev_close[change] = np.nan  # no previous close across tickers
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
            mean = (csum[idx - base] - csum[np.maximum(idx - lookback, 0) - base]) / lookback
            # Rows within lookback of their ticker's first row have no full trailing window.
            mean[idx - first_row < lookback] = np.nan
            out[:, 5] = log_v - mean
        csum_tail = csum[-(lookback + 1) :]

        date_column = block.get_column("date")
        if date_column.dtype == pl.Date:
            dates.view(np.int64)[a:b] = date_column.cast(pl.Int32).to_numpy()  # days since epoch
        else:
            dates[a:b] = date_column.to_numpy().astype("datetime64[D]")
        a = b
    if a != n_rows:
        raise ValueError(f"bar blocks held {a} rows, {n_rows} were announced")
    if n_rows == 0:
        raise ValueError("no bars to compute features from (the validated bar table is empty)")
    offsets = np.append(np.concatenate(start_rows), n_rows).astype(np.int64)
    return FeatureStore(values=values, offsets=offsets, dates=dates, tickers=tuple(tickers))
