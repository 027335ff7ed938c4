"""Pattern events -> per-window labels.

For a decision bar ``d`` the label of pattern P is 1 when an event of P ends on
a bar in ``[d - h, d - 1]`` (h = label horizon): the pattern is complete, hence
fully visible at d's open. Events are mapped to bar rows of their ticker; events
whose ticker has no bars, or whose end date is outside its history, are counted
and returned, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from screener_ssl.data.contracts import EVENT_COLUMNS
from screener_ssl.data.features import FeatureStore
from screener_ssl.data.windows import WindowIndex


@dataclass(frozen=True)
class EventRows:
    """Events located in the feature store."""

    events: pl.DataFrame  # EVENT_COLUMNS + ticker_id, pattern_id, start_row, end_row (global rows)
    unmatched: pl.DataFrame  # EVENT_COLUMNS + reason
    patterns: tuple[str, ...]


def locate_events(events: pl.DataFrame, store: FeatureStore, patterns: tuple[str, ...]) -> EventRows:
    """Map each event's start/end dates to its ticker's bar rows (the last bar on or before the date)."""
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"label events lack columns {missing}; expected {list(EVENT_COLUMNS)}")
    ticker_ids = {t: i for i, t in enumerate(store.tickers)}
    pattern_ids = {p: i for i, p in enumerate(patterns)}
    ev = events.select(EVENT_COLUMNS).with_columns(
        pl.col("ticker").replace_strict(ticker_ids, default=-1, return_dtype=pl.Int64).alias("ticker_id"),
        pl.col("pattern").replace_strict(pattern_ids, default=-1, return_dtype=pl.Int64).alias("pattern_id"),
    )
    tid = ev.get_column("ticker_id").to_numpy()
    start_d = ev.get_column("start_date").to_numpy().astype("datetime64[D]")
    end_d = ev.get_column("end_date").to_numpy().astype("datetime64[D]")
    start_row = np.full(len(tid), -1, dtype=np.int64)
    end_row = np.full(len(tid), -1, dtype=np.int64)
    reason = np.full(len(tid), "", dtype=object)
    reason[ev.get_column("pattern_id").to_numpy() < 0] = "unknown_pattern"
    reason[tid < 0] = "unknown_ticker"
    # One searchsorted per ticker that has events (dates are sorted within a ticker).
    for t in np.unique(tid[tid >= 0]):
        sel = np.flatnonzero(tid == t)
        lo, hi = store.offsets[t], store.offsets[t + 1]
        dates = store.dates[lo:hi]
        e_pos = np.searchsorted(dates, end_d[sel], side="right") - 1
        s_pos = np.searchsorted(dates, start_d[sel], side="left")
        out = (e_pos < 0) | (end_d[sel] > dates[-1])
        reason[sel[out & (reason[sel] == "")]] = "end_outside_history"
        end_row[sel] = lo + e_pos
        start_row[sel] = lo + np.minimum(s_pos, np.maximum(e_pos, 0))
    ok = reason == ""
    located = ev.with_columns(pl.Series("start_row", start_row), pl.Series("end_row", end_row))
    return EventRows(
        events=located.filter(pl.Series(ok)),
        unmatched=events.select(EVENT_COLUMNS).with_columns(pl.Series("reason", reason.astype(str))).filter(
            pl.Series(~ok)
        ),
        patterns=patterns,
    )


def label_matrix(event_rows: EventRows, store: FeatureStore, index: WindowIndex, horizon: int) -> np.ndarray:
    """uint8 [M, P]: 1 where an event of pattern p ends in rows [d - horizon, d - 1] of the same ticker."""
    n_rows = store.values.shape[0]
    d = index.decision_row
    ticker_start = store.offsets[:-1][index.ticker_id]
    lo = np.maximum(d - horizon, ticker_start)
    out = np.zeros((len(index), len(event_rows.patterns)), dtype=np.uint8)
    pid = event_rows.events.get_column("pattern_id").to_numpy()
    ends = event_rows.events.get_column("end_row").to_numpy()
    for p in range(len(event_rows.patterns)):
        hits = np.zeros(n_rows + 1, dtype=np.int32)
        np.add.at(hits, ends[pid == p] + 1, 1)
        cum = np.cumsum(hits)  # cum[r] = events ending in rows < r
        out[:, p] = (cum[d] - cum[lo]) > 0
    return out


def prevalence_by_split(labels: np.ndarray, index: WindowIndex, patterns: tuple[str, ...]) -> dict[str, dict]:
    """{split: {pattern: positive share}} for metadata."""
    from screener_ssl.data.contracts import SPLITS

    report: dict[str, dict] = {}
    for i, split in enumerate(SPLITS):
        sel = index.split == i
        n = int(sel.sum())
        report[split] = {
            p: (float(labels[sel, j].mean()) if n else float("nan")) for j, p in enumerate(patterns)
        } | {"_windows": n}
    return report
