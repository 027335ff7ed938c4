"""The leaderboard's paired statistics: pooled CIs and verdicts of groups of runs on shared test rows.

A leaderboard row pools the runs of its seeds (and, at a label budget, every draw of each seed).
:class:`PairedRuns` reads their test predictions once, joins the frames of a comparison on the rows
all of them scored (:func:`screener_ssl.probe.compare.shared_rows`) and bootstraps the seed-mean
macro AUPRC, or the difference of two such means, with one set of block draws
(:func:`screener_ssl.probe.bootstrap.pooled_macro_comparison`). A run's resamples on one row set are
computed once and shared by its pooled CI and every verdict it enters.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path

import polars as pl

from screener_ssl.probe.bootstrap import pooled_macro_comparison
from screener_ssl.probe.compare import shared_rows
from screener_ssl.probe.label_budgets import BUDGET_PREDICTIONS_FILE
from screener_ssl.probe.probe import PREDICTIONS_FILE

# The test predictions of a group of runs and the key naming each frame (its run dir, and at a budget
# the budget and draw): what a comparison pools.
Group = tuple[list[pl.DataFrame], list[tuple[Hashable, ...]]]


class PairedRuns:
    """Test predictions of runs, read once, and the bootstrap over groups of them (``n_boot`` resamples)."""

    def __init__(self, n_boot: int) -> None:
        self.n_boot = n_boot
        self._frames: dict = {}
        self._resamples: dict = {}  # a run's resampled macro AUPRC on one row set, shared by every comparison

    def _test_rows(self, path: Path) -> pl.DataFrame | None:
        if path not in self._frames:
            self._frames[path] = pl.read_parquet(path).filter(pl.col("split") == "test") if path.is_file() else None
        return self._frames[path]

    def full(self, run_dirs: Sequence[str]) -> Group | None:
        """The full-label test predictions of every run in ``run_dirs``; None when one has none."""
        frames = [self._test_rows(Path(d) / PREDICTIONS_FILE) for d in run_dirs]
        return None if any(f is None for f in frames) else (frames, [(d,) for d in run_dirs])

    def budget(self, run_dirs: Sequence[str], budget: int) -> Group | None:
        """Every draw's test predictions at ``budget`` of every run in ``run_dirs`` (draw order); None when
        one has none."""
        frames, keys = [], []
        for d in run_dirs:
            table = self._test_rows(Path(d) / BUDGET_PREDICTIONS_FILE)
            if table is None:
                return None
            mine = table.filter(pl.col("budget") == budget)
            draws = sorted(mine.get_column("draw").unique().to_list())
            if not draws:
                return None
            frames += [mine.filter(pl.col("draw") == i).drop(["budget", "draw"]) for i in draws]
            keys += [(d, budget, i) for i in range(len(draws))]
        return frames, keys

    def compare(self, mine: Group, theirs: Group | None = None) -> dict | None:
        """:func:`pooled_macro_comparison` of ``mine`` (minus ``theirs`` when given) on the rows all their
        frames scored; None when they share no row."""
        frames = mine[0] + ([] if theirs is None else theirs[0])
        shared = shared_rows(frames)
        if shared is None:
            return None
        y, scores, design, on = shared
        n = len(mine[0])
        return pooled_macro_comparison(
            y, scores[:n], None if theirs is None else scores[n:], design=design, n_boot=self.n_boot,
            memo=self._resamples, keys_a=[(*key, on) for key in mine[1]],
            keys_b=None if theirs is None else [(*key, on) for key in theirs[1]],
        )
