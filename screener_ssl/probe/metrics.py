"""Screener metrics of one pattern for the frozen-encoder probe (DESIGN.md section 6).

Pure functions: numpy arrays in, plain dicts of Python floats/ints/bools out, so
every result can go straight into ``probe_metrics.json``. Undefined values (no
positives, no alerts) are ``float("nan")``, never an exception; the JSON writer
stores them as ``null``.

Conventions:
- ``y`` is a binary label vector ``[N]`` with values in {0, 1}.
- ``score`` is a real-valued score ``[N]`` (higher = more likely the pattern);
  ``prob`` is a score that claims to be a probability, in [0, 1].
- Thresholds are applied as ``score >= threshold`` everywhere.

The bootstrap CIs are :mod:`screener_ssl.probe.bootstrap`'s; the report of every pattern and
their macro is :mod:`screener_ssl.probe.report`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, precision_recall_curve

from screener_ssl.probe.checks import binary_labels, finite_scores, ratio
from screener_ssl.probe.metric_names import BRIER, ECE

PREFIX_FRACS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)

# --------------------------------------------------------------------------- thresholds and alerts


def threshold_at_precision(
    y_val: np.ndarray, score_val: np.ndarray, target_precision: float = 0.8
) -> dict:
    """The lowest validation threshold whose precision reaches ``target_precision``.

    Args:
        y_val: validation labels ``[N]``.
        score_val: validation scores ``[N]``.

    The lowest such threshold gives the most recall at that precision. When no
    threshold reaches the target, the threshold of maximum precision is used
    (lowest one on ties) and ``achievable`` is False. With no validation
    positive the threshold is NaN (every ``score >= NaN`` is False: no alerts).
    Returns dict(threshold, achieved_precision, recall, target_precision, achievable).
    """
    y_val = binary_labels(y_val, "y_val")
    score_val = finite_scores(score_val, "score_val", y_val.shape[0])
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], found {target_precision}")
    out = {
        "threshold": float("nan"),
        "achieved_precision": float("nan"),
        "recall": float("nan"),
        "target_precision": float(target_precision),
        "achievable": False,
    }
    if not y_val.any():
        return out
    precision, recall, thresholds = precision_recall_curve(y_val, score_val)
    # The last (precision=1, recall=0) point has no threshold: drop it.
    precision, recall = precision[:-1], recall[:-1]
    reach = np.flatnonzero(precision >= target_precision)
    if reach.size:
        i = int(reach[0])  # thresholds ascend: the first hit is the lowest
        out["achievable"] = True
    else:
        i = int(np.flatnonzero(precision == precision.max())[0])
    out["threshold"] = float(thresholds[i])
    out["achieved_precision"] = float(precision[i])
    out["recall"] = float(recall[i])
    return out


def threshold_at_budget(score_val: np.ndarray, alerts_per_1000: float) -> dict:
    """The val threshold that raises ``alerts_per_1000`` alerts per 1,000 ticker-days.

    Args:
        score_val: validation scores ``[N]`` (one row per ticker-day).
        alerts_per_1000: the alert budget.

    The threshold is the score of the ``k``-th highest val row, ``k = max(1,
    round(budget * N / 1000))``; ties at it alert too. Unlike a precision target
    it always exists, so the earliest-detection curve built on it is defined for
    every model and compares them at the same alert volume.
    Returns dict(threshold, alerts_per_1000, val_alerts_per_1000, k).
    """
    score_val = finite_scores(score_val, "score_val")
    if not alerts_per_1000 > 0:
        raise ValueError(f"alerts_per_1000 must be positive, found {alerts_per_1000}")
    out = {"threshold": float("nan"), "alerts_per_1000": float(alerts_per_1000), "val_alerts_per_1000": float("nan"), "k": 0}
    n = score_val.shape[0]
    if n == 0:
        return out
    k = int(min(n, max(1, round(alerts_per_1000 * n / 1000.0))))
    thr = float(np.sort(score_val)[::-1][k - 1])
    out.update(threshold=thr, k=k, val_alerts_per_1000=1000.0 * float((score_val >= thr).sum()) / n)
    return out


def alerts_at_threshold(
    y_test: np.ndarray, score_test: np.ndarray, threshold: float, n_ticker_days: int
) -> dict:
    """Alert volume and quality of ``score_test >= threshold`` on test.

    Args:
        y_test: test labels ``[N]``.
        score_test: test scores ``[N]``.
        threshold: usually from :func:`threshold_at_precision` on val.
        n_ticker_days: number of (ticker, decision day) pairs scored, the
            denominator of alerts/day/ticker.

    Returns dict(alerts, alerts_per_day_per_ticker, precision, recall, true_alerts, n_pos).
    """
    y_test = binary_labels(y_test, "y_test")
    score_test = finite_scores(score_test, "score_test", y_test.shape[0])
    if n_ticker_days <= 0:
        raise ValueError(f"n_ticker_days must be positive, found {n_ticker_days}")
    alert = score_test >= threshold
    alerts = int(alert.sum())
    true_alerts = int((alert & (y_test == 1)).sum())
    n_pos = int(y_test.sum())
    return {
        "alerts": alerts,
        "alerts_per_day_per_ticker": alerts / float(n_ticker_days),
        "precision": ratio(true_alerts, alerts),
        "recall": ratio(true_alerts, n_pos),
        "true_alerts": true_alerts,
        "n_pos": n_pos,
    }


# --------------------------------------------------------------------------- earliest detection


def prefix_decision_rows(
    start_idx: np.ndarray, end_idx: np.ndarray, fracs: Sequence[float] = PREFIX_FRACS
) -> np.ndarray:
    """Decision row for each event and prefix fraction.

    Args:
        start_idx: first row of each event ``[E]`` (int, inclusive).
        end_idx: last row of each event ``[E]`` (int, inclusive).
        fracs: prefix fractions in (0, 1].

    Returns ``[E, F]`` int64 with ``start + round(frac * (end - start + 1))``
    (halves round up). At that decision bar's open the first ``round(frac * L)``
    bars of the event are complete; frac 1.0 gives ``end + 1``, the first
    decision at which the whole pattern is visible. Never beyond ``end + 1``.
    """
    start = np.asarray(start_idx)
    end = np.asarray(end_idx)
    if start.ndim != 1 or end.shape != start.shape:
        raise ValueError(
            f"start_idx and end_idx must both be [E], found {start.shape} and {end.shape}"
        )
    integer = np.issubdtype(start.dtype, np.integer) and np.issubdtype(end.dtype, np.integer)
    if start.size and not integer:
        raise ValueError(f"start_idx/end_idx must be integers, found {start.dtype}/{end.dtype}")
    if (end < start).any():
        bad = int(np.flatnonzero(end < start)[0])
        raise ValueError(f"event {bad}: end_idx {int(end[bad])} < start_idx {int(start[bad])}")
    fr = np.asarray(fracs, dtype=np.float64)
    if fr.ndim != 1 or not ((fr > 0) & (fr <= 1)).all():
        raise ValueError(f"fracs must be a list of values in (0, 1], found {list(fracs)}")
    length = (end - start + 1).astype(np.float64)[:, None]  # [E, 1]
    visible = np.floor(fr[None, :] * length + 0.5).astype(np.int64)  # [E, F]
    return start.astype(np.int64)[:, None] + visible


def earliest_detection_curve(event_scores: Mapping[float, np.ndarray], threshold: float) -> dict:
    """Recall at ``threshold`` for each prefix fraction.

    Args:
        event_scores: prefix fraction -> scores ``[n_events]`` of every event
            decided at that prefix (see :func:`prefix_decision_rows`).
        threshold: alert threshold (``score >= threshold`` is a detection).

    Returns dict(frac -> recall), fractions ascending; NaN where no event. A
    NaN threshold (none could be chosen on val) detects nothing: recall 0.
    """
    curve = {}
    for frac in sorted(event_scores):
        s = finite_scores(event_scores[frac], f"event_scores[{frac}]")
        curve[float(frac)] = float((s >= threshold).mean()) if s.size else float("nan")
    return curve


def earliest_detection_auprc(
    event_scores: Mapping[float, np.ndarray], negative_scores: np.ndarray
) -> dict:
    """Threshold-free detection per prefix: AUPRC of the events among the test negatives.

    Args:
        event_scores: prefix fraction -> scores ``[n_events]`` of every event
            decided at that prefix.
        negative_scores: ``[M]`` scores of the test windows not labelled with the pattern.

    For each fraction the events decided there are the positives and the
    negatives are ranked against them. Returns dict(frac -> AUPRC); NaN where
    no event (or no negative).
    """
    neg = finite_scores(negative_scores, "negative_scores")
    curve = {}
    for frac in sorted(event_scores):
        pos = finite_scores(event_scores[frac], f"event_scores[{frac}]")
        if pos.size == 0 or neg.size == 0:
            curve[float(frac)] = float("nan")
            continue
        y = np.r_[np.ones(pos.size, dtype=np.int8), np.zeros(neg.size, dtype=np.int8)]
        curve[float(frac)] = float(average_precision_score(y, np.r_[pos, neg]))
    return curve


# --------------------------------------------------------------------------- stability


def stability(scores_aug: np.ndarray) -> dict:
    """Spread of each window's score over K augmentations of it.

    Args:
        scores_aug: ``[N, K]`` scores, row = window, column = augmentation.

    Returns dict(mean_std, median_std, p90_std, n_windows, n_aug); std is the
    population std (ddof=0) across the K scores of a window.
    """
    arr = np.asarray(scores_aug, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"scores_aug: expected [N, K] with K >= 2, found shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"scores_aug: {int((~np.isfinite(arr)).sum())} scores are NaN or inf")
    out = {"n_windows": int(arr.shape[0]), "n_aug": int(arr.shape[1])}
    if arr.shape[0] == 0:
        return out | {"mean_std": float("nan"), "median_std": float("nan"), "p90_std": float("nan")}
    std = arr.std(axis=1)
    return out | {
        "mean_std": float(std.mean()),
        "median_std": float(np.median(std)),
        "p90_std": float(np.quantile(std, 0.9)),
    }


# --------------------------------------------------------------------------- calibration


def calibration(y: np.ndarray, prob: np.ndarray, n_bins: int = 15) -> dict:
    """Expected calibration error, Brier score and reliability bins.

    Args:
        y: labels ``[N]``.
        prob: predicted probabilities ``[N]`` in [0, 1].
        n_bins: equal-width bins on [0, 1] (same edges as sklearn's
            ``calibration_curve(strategy="uniform")``).

    ECE = sum over bins of (count / N) * |frac_pos - mean_pred|. ``bins`` lists
    the non-empty bins as dict(lo, hi, count, mean_pred, frac_pos).
    """
    y = binary_labels(y, "y")
    prob = finite_scores(prob, "prob", y.shape[0])
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, found {n_bins}")
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise ValueError(
            f"prob: probabilities must lie in [0, 1], found range [{prob.min()}, {prob.max()}]"
        )
    n = int(y.shape[0])
    if n == 0:
        return {ECE: float("nan"), BRIER: float("nan"), "n": 0, "n_bins": n_bins, "bins": []}
    frac_pos, mean_pred = calibration_curve(y, prob, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], prob), minlength=n_bins)
    nonempty = np.flatnonzero(counts)
    assert nonempty.size == frac_pos.size, "bin edges disagree with sklearn's calibration_curve"
    bins = [
        {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": int(counts[b]),
            "mean_pred": float(mp),
            "frac_pos": float(fp),
        }
        for b, mp, fp in zip(nonempty, mean_pred, frac_pos, strict=True)
    ]
    ece = float(np.sum(counts[nonempty] / n * np.abs(frac_pos - mean_pred)))
    return {
        ECE: ece,
        BRIER: float(brier_score_loss(y, prob)),
        "n": n,
        "n_bins": n_bins,
        "bins": bins,
    }

