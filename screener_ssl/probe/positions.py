"""Which windows the probe reads: seeded, label-free val/test samples, label-stratified train samples
sized to the embedding's width and the memory budget, and the decisions at which each test event's
prefixes are scored. Every probe of one :class:`~screener_ssl.probe.config.ProbeConfig` (full
labels, label budgets, budget curves) draws the same rows from the same seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from screener_ssl.data.contracts import SPLITS
from screener_ssl.data.dataset import Dataset
from screener_ssl.data.label_budget import restrict_to_labelled
from screener_ssl.data.windows import split_calendar_positions
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.metrics import PREFIX_FRACS, prefix_decision_rows

TEST_SPLIT = SPLITS.index("test")


def _subsample(positions: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted seeded subsample of ``positions`` of size ``<= limit`` (all when limit is None)."""
    if limit is None or positions.shape[0] <= limit:
        return positions
    return np.sort(rng.choice(positions, size=limit, replace=False))


def stratified_subsample(
    positions: np.ndarray, labels: np.ndarray, limit: int | None, rng: np.random.Generator
) -> np.ndarray:
    """Sorted seeded subsample of ``positions [n]`` of size about ``limit``, stratified by label.

    Strata: the windows sharing one label row (``labels [n, P]``): no positive, each
    pattern alone, each combination that occurs. Each stratum keeps its share (at least
    one window), so rare patterns keep their positives and the sample's prevalence stays
    the natural one (never rebalanced). Nothing depends on the patterns' names or column
    order: every window draws one random key, a stratum keeps its smallest keys, and
    quota ties go to the stratum holding the earliest window; so renaming or reordering
    patterns leaves the sample as it was.
    """
    if limit is None or positions.shape[0] <= limit:
        return positions
    n = positions.shape[0]
    keys = rng.random(n)  # one draw per window, in window order
    _, stratum = np.unique(np.asarray(labels, dtype=bool).reshape(n, -1), axis=0, return_inverse=True)
    stratum = stratum.reshape(-1)
    counts = np.bincount(stratum)
    first = np.full(counts.shape[0], n, dtype=np.int64)
    np.minimum.at(first, stratum, np.arange(n))  # a stratum's earliest window: a name-free tie-break
    # Largest-remainder quotas: exactly ``limit`` windows, every stratum at least one.
    quota = limit * counts / n
    take = np.minimum(np.maximum(np.floor(quota).astype(np.int64), 1), counts)
    for i in np.lexsort((first, -(quota - np.floor(quota)))):
        if take.sum() >= limit:
            break
        take[i] += take[i] < counts[i]
    grouped = np.lexsort((keys, stratum))  # by stratum, smallest key first
    group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[grouped] = np.arange(n) - group_start[stratum[grouped]]
    return np.sort(positions[rank < take[stratum]])


def eval_positions(dataset: Dataset, config: ProbeConfig) -> tuple[np.ndarray, np.ndarray]:
    """The val and test positions every probe of ``config`` scores (seeded subsamples, label-free)."""
    _, rng_val, rng_test, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(4))
    index = dataset.index
    return (
        _subsample(index.rows_of("val"), config.max_val_windows, rng_val),
        _subsample(index.rows_of("test"), config.max_test_windows, rng_test),
    )


def train_positions(
    dataset: Dataset,
    config: ProbeConfig,
    embed_dim: int,
    labelled_rows: np.ndarray | None = None,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """The train positions the head of ``config`` is fitted on: a seeded, label-stratified subsample of the
    (labelled) train windows, as many as :func:`train_window_count` allows for width ``embed_dim``."""
    rng_train = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(4)[0])
    train_rows = restrict_to_labelled(dataset.index.rows_of("train"), labelled_rows)
    n_train = train_window_count(config, embed_dim, log)
    return stratified_subsample(train_rows, dataset.labels[train_rows], n_train, rng_train)


MIN_TRAIN_WINDOWS = 10


def train_matrix_rows(config: ProbeConfig, embed_dim: int) -> int:
    """How many float32 rows of width ``embed_dim`` the train-matrix budget holds."""
    return int(config.train_matrix_budget_gib * 2**30) // (4 * max(int(embed_dim), 1))


def train_window_count(config: ProbeConfig, embed_dim: int, log: Callable[[str], None] = print) -> int:
    """Train windows to embed: ``max(max_train_windows, train_windows_per_dim x D)``, capped by the
    matrix budget (``train_matrix_budget_gib`` of float32 ``[windows, D]``); logs when the budget binds.

    Raises when the budget cannot hold even ``MIN_TRAIN_WINDOWS`` rows of this width.
    """
    wanted = max(config.max_train_windows, config.train_windows_per_dim * embed_dim)
    row_bytes = 4 * max(int(embed_dim), 1)
    fits = train_matrix_rows(config, embed_dim)
    if fits < MIN_TRAIN_WINDOWS:
        raise ValueError(
            f"probe: a train matrix of {MIN_TRAIN_WINDOWS} windows x D={embed_dim} float32 exceeds "
            f"train_matrix_budget_gib={config.train_matrix_budget_gib}; raise the budget or narrow the embedding"
        )
    if wanted > fits:
        log(
            f"probe: train windows capped at {fits} (wanted {wanted} = max(max_train_windows, "
            f"{config.train_windows_per_dim} x D={embed_dim})) by train_matrix_budget_gib="
            f"{config.train_matrix_budget_gib} ({wanted * row_bytes / 2**30:.1f} GiB asked)"
        )
        return fits
    return wanted


# --------------------------------------------------------------------------- test events


@dataclass(frozen=True)
class EventDecisions:
    """Test events and the decision rows at which each prefix of them is scored."""

    ticker_id: np.ndarray  # int64 [E]
    pattern_id: np.ndarray  # int64 [E]
    start_row: np.ndarray  # int64 [E], global row of the event's first bar
    end_row: np.ndarray  # int64 [E], global row of the event's last bar
    decision_row: np.ndarray  # int64 [E, F], global decision row per prefix fraction
    fracs: tuple[float, ...]
    n_candidates: int  # events before the test-split filter


def event_prefix_decisions(dataset: Dataset, fracs: tuple[float, ...] = PREFIX_FRACS) -> EventDecisions:
    """Test events with their prefix decision rows (see :func:`prefix_decision_rows`).

    An event is kept when every prefix decision row lies inside its own ticker
    (``end_row + 1`` must exist), has ``min_history`` bars behind it, and falls
    on a test-split calendar day; so the train/val embargo also guards these.
    """
    if dataset.events is None:
        raise ValueError("the dataset has no label events; load it with labels (build_labels)")
    ev = dataset.events.events
    store, spec, index = dataset.store, dataset.spec, dataset.index
    tid = ev.get_column("ticker_id").to_numpy().astype(np.int64)
    pid = ev.get_column("pattern_id").to_numpy().astype(np.int64)
    start = ev.get_column("start_row").to_numpy().astype(np.int64)
    end = ev.get_column("end_row").to_numpy().astype(np.int64)
    rows = prefix_decision_rows(start, end, fracs)  # [E, F]
    lo = store.offsets[:-1][tid][:, None]  # [E, 1] first row of the event's ticker
    hi = store.offsets[1:][tid][:, None]  # [E, 1] one past its last row
    inside = (rows < hi) & (rows - lo >= spec.min_history - 1)
    day_split = split_calendar_positions(index.calendar.shape[0], spec)
    safe_rows = np.where(inside, rows, lo)  # index dates only where the row exists
    on_test = day_split[np.searchsorted(index.calendar, store.dates[safe_rows])] == TEST_SPLIT
    keep = (inside & on_test).all(axis=1)
    return EventDecisions(
        ticker_id=tid[keep],
        pattern_id=pid[keep],
        start_row=start[keep],
        end_row=end[keep],
        decision_row=rows[keep],
        fracs=tuple(float(f) for f in fracs),
        n_candidates=int(tid.shape[0]),
    )
