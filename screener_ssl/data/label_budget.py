"""Label budgets: which train tickers carry labels when only a few charts are annotated.

Human-labelled chart patterns are scarce, and a labeller annotates whole charts: a
budget of ``k`` labelled tickers means every train window of those ``k`` tickers
carries its labels and every other train window is unlabelled, for every head
(frozen probe, finetune, supervised from scratch, MiniRocket). Val (thresholds,
model selection) and test are untouched.

A draw is a pure function of ``(seed, budget, draw)`` and the sorted names of the
tickers that have train windows: it never looks at labels, pattern names or the
model asking, so every model of a sweep sees the identical labelled rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from screener_ssl.data.dataset import Dataset


@dataclass(frozen=True)
class LabelDraw:
    """One seeded draw of ``budget`` labelled train tickers and the train rows that carry labels."""

    budget: int  # labelled train tickers
    draw: int  # replicate number, 0..n_draws-1
    seed: int
    tickers: tuple[str, ...]  # sorted names of the labelled tickers
    rows: np.ndarray  # int64 [n], sorted positions (into the window index) of the labelled train windows

    @property
    def key(self) -> str:
        return f"{self.budget}/{self.draw}"


def train_tickers(dataset: Dataset) -> list[str]:
    """Sorted names of the tickers with at least one train window (the ones a labeller could annotate)."""
    train = dataset.index.rows_of("train")
    ids = np.unique(dataset.index.ticker_id[train])
    return sorted(str(dataset.store.tickers[i]) for i in ids)


def draw_labelled_tickers(candidates: list[str], budget: int, draw: int, seed: int) -> tuple[str, ...]:
    """``budget`` of the ``candidates`` (ticker names), drawn from ``(seed, budget, draw)`` alone.

    The candidates are sorted first, so their order does not matter; the result is sorted.
    """
    names = sorted(set(candidates))
    if budget < 1:
        raise ValueError(f"a label budget is a positive number of labelled train tickers, found {budget}")
    if budget > len(names):
        raise ValueError(
            f"label budget {budget} exceeds the {len(names)} tickers with train windows; "
            f"lower probe.label_budgets below {len(names)} (full labels are always reported)"
        )
    if draw < 0 or seed < 0:
        raise ValueError(f"draw and seed must be non-negative, found draw={draw}, seed={seed}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, budget, draw]))
    picked = rng.choice(len(names), size=budget, replace=False)
    return tuple(sorted(names[i] for i in picked))


def labelled_rows(dataset: Dataset, tickers: tuple[str, ...] | list[str]) -> np.ndarray:
    """Sorted int64 positions of the train windows of ``tickers`` (every one must be a ticker of the dataset)."""
    names = np.asarray(dataset.store.tickers, dtype=object)
    wanted = set(tickers)
    unknown = sorted(wanted - set(names.tolist()))
    if unknown:
        raise ValueError(f"labelled tickers {unknown[:5]} are not tickers of the dataset")
    ids = np.flatnonzero(np.isin(names, list(wanted)))
    train = dataset.index.rows_of("train")
    return np.sort(train[np.isin(dataset.index.ticker_id[train], ids)]).astype(np.int64)


def label_draws(dataset: Dataset, budgets: tuple[int, ...] | list[int], n_draws: int, seed: int) -> list[LabelDraw]:
    """Every ``(budget, draw)`` of a sweep's label budgets, in budget then draw order."""
    if n_draws < 1:
        raise ValueError(f"label_draws must be at least 1, found {n_draws}")
    candidates = train_tickers(dataset)
    out = []
    for budget in sorted(set(int(b) for b in budgets)):
        for draw in range(n_draws):
            tickers = draw_labelled_tickers(candidates, budget, draw, seed)
            out.append(LabelDraw(budget, draw, seed, tickers, labelled_rows(dataset, tickers)))
    return out


def restrict_to_labelled(positions: np.ndarray, labelled: np.ndarray | None) -> np.ndarray:
    """The ``positions`` whose labels a head may read: all when ``labelled`` is None, else those in it."""
    if labelled is None:
        return positions
    return positions[np.isin(positions, labelled)]


__all__ = [
    "LabelDraw",
    "draw_labelled_tickers",
    "label_draws",
    "labelled_rows",
    "restrict_to_labelled",
    "train_tickers",
]
