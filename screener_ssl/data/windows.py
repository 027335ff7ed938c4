"""Window spec, window index (not window copies), chronological splits, and the censoring gatherer.

A window for decision row ``d`` covers bars ``d-W+1 .. d`` of one ticker. On the
decision bar only the open is known: every feature but those in
``OPEN_KNOWN_FEATURES`` is censored there (``observed`` False). Bars after ``d``
never enter the window. The decision bar is always the LAST position of a
gathered window; a shorter window (crop, earlier decision index, short history)
is left-padded with ``observed`` False.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from screener_ssl.data.contracts import FEATURE_NAMES, OPEN_KNOWN_FEATURES, SPLITS
from screener_ssl.data.features import VOLUME_LOOKBACK, FeatureStore
from screener_ssl.store.fingerprint import fingerprint

ZSCORE_EPS = 1e-6
ZSCORE_CLIP = 10.0  # a single outlier bar should not dominate a window


class WindowSpec(BaseModel):
    """Everything that decides what a window contains; its fingerprint locks encoders to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_names: tuple[str, ...] = FEATURE_NAMES
    open_known_features: tuple[str, ...] = OPEN_KNOWN_FEATURES
    volume_lookback: int = Field(VOLUME_LOOKBACK, ge=2, le=250)
    window_max: int = Field(64, ge=8, le=512)
    crop_lengths: tuple[int, ...] = (32, 48, 64)
    min_history: int = Field(32, ge=2)  # bars up to and including the decision bar a window needs
    stride: int = Field(1, ge=1, le=64)  # decision rows kept per ticker: every stride-th bar
    label_horizon: int = Field(5, ge=1, le=60)
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    embargo: int = Field(69, ge=0)  # calendar bars between splits; >= window_max + label_horizon
    censor: Literal["open_only"] = "open_only"
    normalization: Literal["per_window_zscore"] = "per_window_zscore"

    @model_validator(mode="before")
    @classmethod
    def _default_embargo(cls, data):
        # The embargo follows window_max and label_horizon unless set explicitly.
        if isinstance(data, dict) and data.get("embargo") is None:
            data = dict(data)
            data["embargo"] = data.get("window_max", 64) + data.get("label_horizon", 5)
        return data

    @model_validator(mode="after")
    def _check(self) -> "WindowSpec":
        if self.embargo < self.window_max + self.label_horizon:
            raise ValueError(
                f"embargo={self.embargo} must be >= window_max + label_horizon = "
                f"{self.window_max + self.label_horizon}"
            )
        if not self.crop_lengths or max(self.crop_lengths) > self.window_max or min(self.crop_lengths) < 2:
            raise ValueError(f"crop_lengths {self.crop_lengths} must lie in [2, window_max={self.window_max}]")
        if self.min_history > self.window_max:
            raise ValueError(f"min_history={self.min_history} exceeds window_max={self.window_max}")
        if abs(sum(self.split_fractions) - 1.0) > 1e-9 or min(self.split_fractions) <= 0:
            raise ValueError(f"split_fractions {self.split_fractions} must be positive and sum to 1")
        unknown = set(self.open_known_features) - set(self.feature_names)
        if unknown:
            raise ValueError(f"open_known_features {sorted(unknown)} are not in feature_names")
        return self

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def open_known_mask(self) -> np.ndarray:
        """bool [C]: features still known at the decision bar's open."""
        return np.array([name in self.open_known_features for name in self.feature_names])

    def fingerprint(self) -> str:
        return fingerprint(self)

    def gather(
        self, values: np.ndarray, ticker_start: np.ndarray, decision_row: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Censored windows of this spec (``window_max`` long, open-only decision bar) from a feature array.

        ``values`` float32 [N, C] rows of a :class:`FeatureStore`; ``ticker_start`` / ``decision_row``
        int64 [B] global rows. See :func:`gather_windows`.
        """
        return gather_windows(values, ticker_start, decision_row, self.window_max, open_known=self.open_known_mask)


@dataclass(frozen=True)
class WindowIndex:
    """One row per window: ``(ticker_id, decision_row)`` into a :class:`FeatureStore`, plus its split."""

    ticker_id: np.ndarray  # int32 [M]
    decision_row: np.ndarray  # int64 [M], global row of the decision bar
    split: np.ndarray  # int8 [M]: 0 train, 1 val, 2 test
    calendar: np.ndarray  # datetime64[D] [n_days], the union trading calendar
    split_bounds: dict[str, tuple[str, str]]  # split -> (first, last) decision date

    def __len__(self) -> int:
        return int(self.decision_row.shape[0])

    def rows_of(self, split: str) -> np.ndarray:
        """Positions (into this index) of the windows of one split."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.split == SPLITS.index(split))

    def counts(self) -> dict[str, int]:
        return {name: int((self.split == i).sum()) for i, name in enumerate(SPLITS)}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / "window_index.npz",
            ticker_id=self.ticker_id,
            decision_row=self.decision_row,
            split=self.split,
            calendar=self.calendar.astype("datetime64[D]").astype(np.int32),
        )
        (directory / "splits.json").write_text(json.dumps(self.split_bounds, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> "WindowIndex":
        path = directory / "window_index.npz"
        if not path.exists():
            raise FileNotFoundError(f"no window index at {path}; build the windowed dataset (build_windowed_dataset)")
        with np.load(path) as z:
            return cls(
                ticker_id=z["ticker_id"],
                decision_row=z["decision_row"],
                split=z["split"],
                calendar=z["calendar"].astype("datetime64[D]"),
                split_bounds={k: tuple(v) for k, v in json.loads((directory / "splits.json").read_text()).items()},
            )


def split_calendar_positions(n_days: int, spec: WindowSpec) -> np.ndarray:
    """int8 [n_days]: split of each calendar day, -1 inside an embargo. Chronological train | val | test."""
    cut1 = int(round(n_days * spec.split_fractions[0]))
    cut2 = int(round(n_days * (spec.split_fractions[0] + spec.split_fractions[1])))
    out = np.full(n_days, -1, dtype=np.int8)
    out[: max(cut1 - spec.embargo, 0)] = 0
    out[cut1 : max(cut2 - spec.embargo, cut1)] = 1
    out[cut2:] = 2
    if (out == 0).sum() == 0 or (out == 1).sum() == 0 or (out == 2).sum() == 0:
        raise ValueError(
            f"{n_days} trading days are too few for splits {spec.split_fractions} with an embargo of "
            f"{spec.embargo} bars between them"
        )
    return out


INDEX_BLOCK_ROWS = 1 << 18  # feature rows per block while building the index: temporaries stay a few MB
_CALENDAR_TABLE_MAX_DAYS = 1 << 22  # date spans up to ~11,000 years use a day lookup table instead of a sort


def _trading_calendar(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(calendar, day_table, first_day): the sorted unique dates and, when cheap, a day -> position table.

    ``calendar`` equals ``np.unique(dates)``. For ``datetime64[D]`` dates spanning a moderate
    range, presence is marked in a table indexed by day number (linear time, no sorted copy
    of the N dates); ``day_table[day - first_day]`` is then a date's calendar position.
    """
    if dates.dtype == np.dtype("datetime64[D]") and dates.shape[0] > 0:
        days = dates.view(np.int64)
        first, last = int(days.min()), int(days.max())
        nat = np.iinfo(np.int64).min  # NaT's physical value; keep the exact np.unique semantics for it
        if first != nat and last - first < _CALENDAR_TABLE_MAX_DAYS:
            present = np.zeros(last - first + 1, dtype=bool)
            for a in range(0, days.shape[0], INDEX_BLOCK_ROWS):
                present[days[a : a + INDEX_BLOCK_ROWS] - first] = True
            calendar = (np.flatnonzero(present) + first).astype("datetime64[D]")
            day_table = np.cumsum(present, dtype=np.int64) - 1
            return calendar, day_table, first
    return np.unique(dates), None, 0


def build_window_index(store: FeatureStore, spec: WindowSpec) -> WindowIndex:
    """Every ``stride``-th bar of every ticker with ``min_history`` bars behind it, outside the embargoes.

    Rows are scanned in blocks of ``INDEX_BLOCK_ROWS``, so memory beyond the store is the
    index itself plus a few MB.
    """
    if tuple(store.feature_names) != tuple(spec.feature_names):
        raise ValueError(f"feature store has {store.feature_names}, spec expects {spec.feature_names}")
    calendar, day_table, first_day = _trading_calendar(store.dates)
    day_split = split_calendar_positions(calendar.shape[0], spec)
    n = store.values.shape[0]
    ticker_starts = store.offsets[:-1]
    ticker_ids, decision_rows, splits = [], [], []
    for a in range(0, n, INDEX_BLOCK_ROWS):
        b = min(a + INDEX_BLOCK_ROWS, n)
        row = np.arange(a, b, dtype=np.int64)
        # Ticker of each row: the last ticker whose first row is <= row (empty tickers are skipped).
        row_ticker = (np.searchsorted(store.offsets, row, side="right") - 1).astype(np.int32)
        pos_in_ticker = row - ticker_starts[row_ticker]
        dates = store.dates[a:b]
        if day_table is not None:
            day_pos = day_table[dates.view(np.int64) - first_day]
        else:
            day_pos = np.searchsorted(calendar, dates)
        split_of_row = day_split[day_pos]
        keep = (pos_in_ticker >= spec.min_history - 1) & (pos_in_ticker % spec.stride == 0) & (split_of_row >= 0)
        ticker_ids.append(row_ticker[keep])
        decision_rows.append(row[keep])
        splits.append(split_of_row[keep])
    bounds = {}
    for i, name in enumerate(SPLITS):
        days = calendar[day_split == i]
        bounds[name] = (str(days[0]), str(days[-1]))
    return WindowIndex(
        ticker_id=np.concatenate(ticker_ids) if ticker_ids else np.zeros(0, dtype=np.int32),
        decision_row=np.concatenate(decision_rows) if decision_rows else np.zeros(0, dtype=np.int64),
        split=np.concatenate(splits) if splits else np.zeros(0, dtype=np.int8),
        calendar=calendar,
        split_bounds=bounds,
    )


def gather_windows(
    values: np.ndarray,
    ticker_start: np.ndarray,
    decision_row: np.ndarray,
    window: int,
    lengths: np.ndarray | None = None,
    open_known: np.ndarray | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Gather censored, normalized windows ending at each decision row.

    values: float32 [N, C] feature rows; ticker_start: int64 [B] first row of each window's ticker;
    decision_row: int64 [B]; lengths: int [B] bars kept up to and including the decision bar
    (<= window; default window); open_known: bool [C] features kept on the decision bar.
    Returns x float32 [B, window, C] (zero where not observed) and observed bool [B, window, C].
    Per-window z-score statistics use only observed (visible, uncensored, past) cells.
    """
    decision_row = np.asarray(decision_row, dtype=np.int64)
    ticker_start = np.asarray(ticker_start, dtype=np.int64)
    batch = decision_row.shape[0]
    assert ticker_start.shape == (batch,), f"ticker_start {ticker_start.shape} vs decision_row {decision_row.shape}"
    n_channels = values.shape[1]
    lengths = np.full(batch, window, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
    if open_known is None:
        open_known = np.zeros(n_channels, dtype=bool)
    back = np.arange(window - 1, -1, -1, dtype=np.int64)  # steps before the decision bar, per position
    rows = decision_row[:, None] - back[None, :]  # [B, W]
    valid = (back[None, :] < lengths[:, None]) & (rows >= ticker_start[:, None])
    rows = np.where(valid, rows, decision_row[:, None])
    x = np.asarray(values[rows.reshape(-1)], dtype=np.float32).reshape(batch, window, n_channels)
    observed = valid[:, :, None] & np.isfinite(x)
    observed[:, -1, :] &= open_known[None, :]  # decision bar: open-only
    x = np.where(observed, x, np.float32(0.0))
    if normalize:
        x = zscore_observed(x, observed)
    return x, observed


def zscore_observed(x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-window, per-channel z-score of ``x [B, T, C]`` from the observed cells only."""
    count = observed.sum(axis=1, keepdims=True).astype(np.float32)
    safe = np.maximum(count, 1.0)
    mean = x.sum(axis=1, keepdims=True) / safe  # unobserved cells are zero already
    centered = np.where(observed, x - mean, np.float32(0.0))
    var = (centered * centered).sum(axis=1, keepdims=True) / safe
    z = centered / (np.sqrt(var) + ZSCORE_EPS)
    return np.clip(z, -ZSCORE_CLIP, ZSCORE_CLIP).astype(np.float32)
