"""Paired comparison of two probed runs on identical test rows (DESIGN.md section 6, Statistics).

Two overlapping CIs say little about which run is better: the runs are scored on
the same windows, so their errors are correlated. :func:`paired_comparison` joins
the two runs' ``probe_predictions.parquet`` rows on (ticker, decision row), checks
the labels agree (same dataset), and bootstraps the difference of macro AUPRC
with one set of block draws shared by both runs. :func:`shared_rows` joins any
number of prediction frames the same way, for the leaderboard's pooled CIs and
paired verdicts over seeds and label-budget draws.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import polars as pl

from screener_ssl.probe.bootstrap import BLOCK_DAYS, BootstrapDesign, paired_macro_difference

JOIN_KEYS: tuple[str, ...] = ("ticker", "decision_row")


def _patterns_of(pred: pl.DataFrame) -> list[str]:
    return [c.removeprefix("score_") for c in pred.columns if c.startswith("score_")]


def paired_comparison(
    pred_a: pl.DataFrame,
    pred_b: pl.DataFrame,
    patterns: Sequence[str] | None = None,
    split: str = "test",
    scheme: str = "ticker_time_block",
    block_days: int = BLOCK_DAYS,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Macro AUPRC of run a minus run b on the ``split`` rows both scored.

    Args:
        pred_a, pred_b: probe prediction frames (``ticker, date, split,
            decision_row, label_<p>, score_<p>``).
        patterns: the patterns to average (default: those both frames score).

    Returns :func:`paired_macro_difference`'s dict (diff, ci_low, ci_high,
    verdict "better"/"worse"/"tie" for a vs b) plus the row counts and the
    bootstrap design. Raises when the joined rows disagree on a label (the runs
    were probed on different datasets) or no row is shared.
    """
    for name, pred in (("a", pred_a), ("b", pred_b)):
        missing = [c for c in (*JOIN_KEYS, "date", "split") if c not in pred.columns]
        if missing:
            raise ValueError(f"predictions of run {name} lack columns {missing}")
    shared = [p for p in _patterns_of(pred_a) if p in set(_patterns_of(pred_b))]
    patterns = list(patterns) if patterns is not None else shared
    absent = [p for p in patterns if p not in shared]
    if absent or not patterns:
        raise ValueError(f"patterns {absent or patterns} are not scored by both runs (both score {shared})")
    cols_a = [*JOIN_KEYS, "date", *(f"label_{p}" for p in patterns), *(f"score_{p}" for p in patterns)]
    cols_b = [*JOIN_KEYS, *(f"label_{p}" for p in patterns), *(f"score_{p}" for p in patterns)]
    a = pred_a.filter(pl.col("split") == split).select(cols_a)
    b = pred_b.filter(pl.col("split") == split).select(cols_b)
    joined = a.join(b, on=list(JOIN_KEYS), how="inner", suffix="_b").sort(["ticker", "decision_row"])
    if joined.height == 0:
        raise ValueError(f"the two runs share no {split} rows on {JOIN_KEYS}: were they probed on one dataset?")
    y = joined.select([f"label_{p}" for p in patterns]).to_numpy()
    y_b = joined.select([f"label_{p}_b" for p in patterns]).to_numpy()
    if not np.array_equal(y, y_b):
        bad = int((y != y_b).any(axis=1).sum())
        raise ValueError(f"{bad} shared rows carry different labels in the two runs: not the same dataset")
    score_a = joined.select([f"score_{p}" for p in patterns]).to_numpy()
    score_b = joined.select([f"score_{p}_b" for p in patterns]).to_numpy()
    if scheme == "window":
        design = BootstrapDesign.window(joined.height)
    else:
        ticker = joined.get_column("ticker").to_numpy()
        dates = joined.get_column("date").to_numpy().astype("datetime64[D]")
        day = np.searchsorted(np.unique(dates), dates)  # trading-day position among the shared dates
        design = BootstrapDesign(ticker, day, scheme=scheme, block_days=block_days)
    out = paired_macro_difference(y, score_a, score_b, design=design, n_boot=n_boot, seed=seed, alpha=alpha)
    return out | {
        "rows_a": a.height,
        "rows_b": b.height,
        "rows_shared": joined.height,
        "patterns": patterns,
        "bootstrap": design.describe(),
    }


def shared_rows(frames: list[pl.DataFrame]) -> tuple[np.ndarray, list[np.ndarray], BootstrapDesign, str] | None:
    """Labels, one score array per frame, the block design and a digest naming the rows, on the rows every
    frame scored (the patterns all of them score); None when they share no pattern or no row."""
    patterns = sorted(set.intersection(*(set(_patterns_of(f)) for f in frames)))
    if not patterns:
        return None
    keyed = [
        f.select([*JOIN_KEYS, "date", *(f"label_{p}" for p in patterns), *(f"score_{p}" for p in patterns)])
        for f in frames
    ]
    joined = keyed[0].rename({f"score_{p}": f"score_{p}__0" for p in patterns})
    for i, frame in enumerate(keyed[1:], 1):
        other = frame.select([*JOIN_KEYS, *(f"score_{p}" for p in patterns)])
        joined = joined.join(other.rename({f"score_{p}": f"score_{p}__{i}" for p in patterns}), on=list(JOIN_KEYS))
    if joined.height == 0:
        return None
    joined = joined.sort(list(JOIN_KEYS))
    y = joined.select([f"label_{p}" for p in patterns]).to_numpy()
    scores = [joined.select([f"score_{p}__{i}" for p in patterns]).to_numpy() for i in range(len(frames))]
    dates = joined.get_column("date").to_numpy().astype("datetime64[D]")
    design = BootstrapDesign(
        joined.get_column("ticker").to_numpy(), np.searchsorted(np.unique(dates), dates), block_days=BLOCK_DAYS
    )
    rows = hashlib.sha256(joined.select(list(JOIN_KEYS)).hash_rows(seed=0).to_numpy().tobytes()).hexdigest()
    return y, scores, design, f"{rows}:{','.join(patterns)}"
