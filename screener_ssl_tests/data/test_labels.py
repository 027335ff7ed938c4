"""The label mapping against a brute-force reference: an event ending in [D-h, D-1] is positive at D."""

from __future__ import annotations

import datetime

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from screener_ssl.data.features import FeatureStore
from screener_ssl.data.labels import label_matrix, locate_events
from screener_ssl.data.windows import WindowIndex

PATTERNS = ("alpha", "beta")


def _store(lengths: list[int]) -> FeatureStore:
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    start = np.datetime64("2020-01-01")
    dates = np.concatenate([start + np.arange(n) for n in lengths]).astype("datetime64[D]")
    return FeatureStore(
        values=np.zeros((int(offsets[-1]), 6), dtype=np.float32),
        offsets=offsets,
        dates=dates,
        tickers=tuple(f"T{i}" for i in range(len(lengths))),
    )


def _every_window(store: FeatureStore) -> WindowIndex:
    rows = np.arange(store.values.shape[0], dtype=np.int64)
    return WindowIndex(
        ticker_id=store.ticker_of_row,
        decision_row=rows,
        split=np.zeros(rows.shape[0], dtype=np.int8),
        calendar=np.unique(store.dates),
        split_bounds={},
    )


def _reference(events: list[tuple[int, int, int]], store: FeatureStore, horizon: int) -> np.ndarray:
    """Loop over every window and every event: positive iff same ticker and d-h <= end_row <= d-1."""
    out = np.zeros((store.values.shape[0], len(PATTERNS)), dtype=np.uint8)
    tickers = store.ticker_of_row
    for d in range(store.values.shape[0]):
        for ticker, pattern, end_row in events:
            if tickers[d] == ticker and d - horizon <= end_row <= d - 1:
                out[d, pattern] = 1
    return out


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(3, 30), min_size=1, max_size=4),
    horizon=st.integers(1, 6),
    picks=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 1), st.integers(0, 10**6)), max_size=12),
)
def test_label_matrix_matches_brute_force(lengths: list[int], horizon: int, picks: list) -> None:
    store = _store(lengths)
    events = []
    for ticker_pick, pattern, row_pick in picks:
        ticker = ticker_pick % len(lengths)
        lo, hi = store.offsets[ticker], store.offsets[ticker + 1]
        end_row = int(lo + row_pick % (hi - lo))
        events.append((ticker, pattern, end_row))
    frame = pl.DataFrame(
        {
            "ticker": [store.tickers[t] for t, _, _ in events],
            "pattern": [PATTERNS[p] for _, p, _ in events],
            "start_date": [store.dates[max(r - 2, store.offsets[t])].item() for t, _, r in events],
            "end_date": [store.dates[r].item() for _, _, r in events],
        },
        schema={"ticker": pl.String, "pattern": pl.String, "start_date": pl.Date, "end_date": pl.Date},
    )
    located = locate_events(frame, store, PATTERNS)
    assert located.unmatched.height == 0
    labels = label_matrix(located, store, _every_window(store), horizon)
    np.testing.assert_array_equal(labels, _reference(events, store, horizon))


def test_boundaries_of_the_label_window() -> None:
    store = _store([40])
    end = 20
    frame = pl.DataFrame(
        {"ticker": ["T0"], "pattern": ["alpha"], "start_date": [datetime.date(2020, 1, 5)],
         "end_date": [store.dates[end].item()]}
    )
    labels = label_matrix(locate_events(frame, store, PATTERNS), store, _every_window(store), horizon=5)[:, 0]
    assert labels[end] == 0  # ends on D itself: the completion bar's close is not known at D's open
    assert labels[end + 1] == 1 and labels[end + 5] == 1  # D-1 and D-h
    assert labels[end + 6] == 0  # ended at D-h-1: too old
    assert labels.sum() == 5
