"""Input checks shared by the probe's metrics, bootstrap and plots: fail early, naming the argument.

Labels are binary vectors, scores finite float64 vectors, and a label set and its scores share
one shape; :func:`ratio` is NaN, never an exception, where the denominator is empty.
"""

from __future__ import annotations

import numpy as np


def binary_labels(y: np.ndarray, name: str) -> np.ndarray:
    """Return ``y`` as an int8 vector ``[N]``; fail naming ``name`` if it is not binary."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected labels of shape [N], found shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name}: labels must be 0 or 1, found values {bad.tolist()}")
    return arr.astype(np.int8)


def finite_scores(score: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    """Return ``score`` as a finite float64 vector ``[N]``; fail naming ``name`` otherwise."""
    arr = np.asarray(score, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected scores of shape [N], found shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} scores to match the labels, found {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} scores are NaN or inf")
    return arr


def ratio(num: float, den: float) -> float:
    """``num / den``; NaN when ``den`` is not positive."""
    return float(num) / float(den) if den > 0 else float("nan")


def same_shape(y: np.ndarray, score: np.ndarray, name: str, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``y`` and ``score`` (as float64) when both have one shape of ``ndim`` axes; fail naming ``name`` otherwise."""
    y_arr, s_arr = np.asarray(y), np.asarray(score, dtype=np.float64)
    if y_arr.ndim != ndim or s_arr.shape != y_arr.shape:
        axes = "[N]" if ndim == 1 else "[N, P]"
        raise ValueError(f"{name}: expected labels and scores of one shape {axes}, found {y_arr.shape} and {s_arr.shape}")
    return y_arr, s_arr

