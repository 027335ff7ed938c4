"""Screener metrics for the frozen-encoder probe (DESIGN.md section 6).

Pure functions: numpy arrays in, plain dicts of Python floats/ints/bools out, so
every result can go straight into ``probe_metrics.json``. Undefined values (no
positives, no alerts) are ``float("nan")``, never an exception; the JSON writer
stores them as ``null``.

Conventions:
- ``y`` is a binary label vector ``[N]`` with values in {0, 1}.
- ``score`` is a real-valued score ``[N]`` (higher = more likely the pattern);
  ``prob`` is a score that claims to be a probability, in [0, 1].
- Thresholds are applied as ``score >= threshold`` everywhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterator, Mapping, MutableMapping, Sequence

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, precision_recall_curve

PREFIX_FRACS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
BLOCK_DAYS = 20  # trading days per time block of the block bootstrap (about a month)
BOOTSTRAP_SCHEMES: tuple[str, ...] = ("ticker_time_block", "window")
BOOT_BLOCK_VALUES = 1_000_000  # row weights scored at once by the vectorized bootstrap ([b, N], b * N at most this)


# --------------------------------------------------------------------------- input checks


def _binary_labels(y: np.ndarray, name: str) -> np.ndarray:
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


def _scores(score: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    """Return ``score`` as a finite float64 vector ``[N]``; fail naming ``name`` otherwise."""
    arr = np.asarray(score, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected scores of shape [N], found shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} scores to match the labels, found {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} scores are NaN or inf")
    return arr


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


# --------------------------------------------------------------------------- bootstrap designs


class BootstrapDesign:
    """How a bootstrap resample weights the rows of one evaluation set.

    Overlapping windows are not independent: neighbouring decision days of a
    ticker share all but one bar and an event is positive on several consecutive
    days, and every ticker shares the market factor on a given day. The default
    scheme, ``"ticker_time_block"``, is a two-way (pigeonhole) bootstrap: each
    resample draws whole tickers with replacement AND contiguous time blocks of
    ``block_days`` calendar positions with replacement; row ``i`` then counts
    ``ticker_draws[ticker_i] * block_draws[block_i]`` times. Scheme ``"window"``
    draws rows independently (the naive bootstrap, kept to show why it is wrong).

    Args:
        ticker_id: ``[N]`` integer ticker of each row.
        day: ``[N]`` integer calendar position of each row's decision day.
        scheme: one of ``BOOTSTRAP_SCHEMES``.
        block_days: calendar positions per time block.
    """

    def __init__(
        self,
        ticker_id: np.ndarray | None,
        day: np.ndarray | None,
        scheme: str = "ticker_time_block",
        block_days: int = BLOCK_DAYS,
        n: int | None = None,
    ) -> None:
        if scheme not in BOOTSTRAP_SCHEMES:
            raise ValueError(f"bootstrap scheme must be one of {BOOTSTRAP_SCHEMES}, found {scheme!r}")
        if block_days < 1:
            raise ValueError(f"block_days must be >= 1, found {block_days}")
        self.scheme = scheme
        self.block_days = int(block_days)
        if scheme == "window" and ticker_id is None:
            if n is None:
                raise ValueError("a window bootstrap design needs n (rows) when no ticker/day is given")
            self.n = int(n)
            self.ticker_code = self.block_code = None
            self.n_tickers = self.n_blocks = 0
            return
        if ticker_id is None or day is None:
            raise ValueError(f"bootstrap scheme {scheme!r} needs ticker_id and day for every row")
        tid = np.asarray(ticker_id)
        d = np.asarray(day)
        if tid.ndim != 1 or d.shape != tid.shape:
            raise ValueError(f"ticker_id and day must both be [N], found {tid.shape} and {d.shape}")
        if n is not None and tid.shape[0] != n:
            raise ValueError(f"bootstrap design: expected {n} rows, found {tid.shape[0]}")
        self.n = int(tid.shape[0])
        _, self.ticker_code = np.unique(tid, return_inverse=True)
        block = (d.astype(np.int64) - (int(d.min()) if d.size else 0)) // self.block_days
        _, self.block_code = np.unique(block, return_inverse=True)
        self.n_tickers = int(self.ticker_code.max() + 1) if self.n else 0
        self.n_blocks = int(self.block_code.max() + 1) if self.n else 0

    @classmethod
    def window(cls, n: int) -> "BootstrapDesign":
        """The naive design: rows drawn independently."""
        return cls(None, None, scheme="window", n=n)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """Integer weights ``[N]``: how often each row enters one resample."""
        if self.scheme == "window":
            return np.bincount(rng.integers(0, self.n, size=self.n), minlength=self.n)
        tickers = np.bincount(rng.integers(0, self.n_tickers, size=self.n_tickers), minlength=self.n_tickers)
        blocks = np.bincount(rng.integers(0, self.n_blocks, size=self.n_blocks), minlength=self.n_blocks)
        return tickers[self.ticker_code] * blocks[self.block_code]

    def draws(self, rng: np.random.Generator, n_boot: int) -> Iterator[np.ndarray]:
        """``n_boot`` resamples as integer weight blocks ``[b, N]`` (the same stream as ``draw``, in order).

        Blocks hold at most :data:`BOOT_BLOCK_VALUES` weights, so scoring a block stays within
        tens of MB whatever N is.
        """
        per_block = max(1, BOOT_BLOCK_VALUES // max(self.n, 1))
        for start in range(0, n_boot, per_block):
            yield np.stack([self.draw(rng) for _ in range(min(per_block, n_boot - start))])

    def describe(self) -> dict:
        """What ``probe_metrics.json`` records about the resampling."""
        out: dict = {"scheme": self.scheme, "n_rows": self.n}
        if self.scheme != "window":
            out |= {"block_days": self.block_days, "n_tickers": self.n_tickers, "n_blocks": self.n_blocks}
        return out


def _design_for(design: BootstrapDesign | None, n: int) -> BootstrapDesign:
    if design is None:
        return BootstrapDesign.window(n)
    if design.n != n:
        raise ValueError(f"bootstrap design covers {design.n} rows, the labels have {n}")
    return design


def _percentile_ci(boot: list[float], alpha: float) -> tuple[float, float]:
    if not boot:
        return float("nan"), float("nan")
    return float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2))


# --------------------------------------------------------------------------- AUPRC


class _SortedScores:
    """One score column sorted once, so each bootstrap resample costs O(N), not a sort.

    A resample with replacement is the original rows weighted by how often each
    was drawn; average precision under those weights equals sklearn's
    ``average_precision_score(y[idx], score[idx])`` (tests check the equality).
    """

    def __init__(self, y: np.ndarray, score: np.ndarray):
        self.order = np.argsort(-score, kind="stable")  # [N] descending score
        self.y_sorted = y[self.order].astype(np.float64)  # [N]
        sorted_score = score[self.order]
        # Last row of each group of tied scores: one threshold per distinct score, as sklearn.
        self.ends = np.r_[np.flatnonzero(np.diff(sorted_score)), sorted_score.size - 1]

    def average_precision(self, draw_counts: np.ndarray) -> float:
        """AP of the resample in which row i was drawn ``draw_counts[i]`` times (``[N]``)."""
        return float(self.average_precisions(draw_counts[None, :])[0])

    def average_precisions(self, draw_counts: np.ndarray) -> np.ndarray:
        """AP ``[b]`` of ``b`` resamples at once, row i drawn ``draw_counts[k, i]`` times in resample k (``[b, N]``).

        NaN for a resample without a drawn positive. Weights are integers, so every cumulative
        count is exact in float64 and the result equals the one-resample loop.
        """
        w = draw_counts[:, self.order].astype(np.float64)  # [b, N]
        tp = np.cumsum(w * self.y_sorted, axis=1)[:, self.ends]  # [b, T] true alerts at each threshold
        alerts = np.cumsum(w, axis=1)[:, self.ends]
        total = tp[:, -1]
        precision = np.divide(tp, alerts, out=np.zeros_like(tp), where=alerts > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall_step = np.diff(tp, axis=1, prepend=0.0) / total[:, None]
            ap = np.sum(recall_step * precision, axis=1)
        return np.where(total > 0, ap, np.nan)


def auprc_with_ci(
    y: np.ndarray,
    score: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    design: BootstrapDesign | None = None,
) -> dict:
    """Average precision with a percentile bootstrap CI.

    Args:
        y: labels ``[N]`` in {0, 1}.
        score: scores ``[N]``.
        n_boot: bootstrap resamples; a resample without a positive is skipped
            (AUPRC is undefined there) and ``n_boot_used`` says how many counted.
        alpha: the CI covers ``1 - alpha``.
        design: how a resample weights the rows (:class:`BootstrapDesign`);
            None = rows drawn independently (only right for independent rows).

    Returns dict(auprc, ci_low, ci_high, prevalence, n_pos, n, n_boot_used,
    defined, reason). With no positive at all every AUPRC field is NaN,
    ``defined`` is False and ``reason`` says why.
    """
    y = _binary_labels(y, "y")
    score = _scores(score, "score", y.shape[0])
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), found {alpha}")
    n = int(y.shape[0])
    n_pos = int(y.sum())
    out = {
        "n": n,
        "n_pos": n_pos,
        "prevalence": _ratio(n_pos, n),
        "auprc": float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "n_boot_used": 0,
        "defined": False,
        "reason": None,
    }
    if n_pos == 0:
        out["reason"] = "no positive labels"
        return out
    out["auprc"] = float(average_precision_score(y, score))
    out["defined"] = True
    design = _design_for(design, n)
    sorted_scores = _SortedScores(y, score)
    rng = np.random.default_rng(seed)
    boot = []
    for draws in design.draws(rng, n_boot):
        aps = sorted_scores.average_precisions(draws)
        boot.extend(aps[~np.isnan(aps)].tolist())  # no positive drawn: AUPRC undefined, resample skipped
    out["n_boot_used"] = len(boot)
    out["ci_low"], out["ci_high"] = _percentile_ci(boot, alpha)
    return out


def macro_auprc_with_ci(
    y: np.ndarray,
    score: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    design: BootstrapDesign | None = None,
) -> dict:
    """Macro AUPRC (mean over patterns with positives) with a joint bootstrap CI.

    Args:
        y: labels ``[N, P]`` (one column per pattern).
        score: scores ``[N, P]``.

    Each resample draws one set of row weights (``design``) shared by all patterns, so the CI
    keeps the correlation between patterns scored on the same windows. Within a
    resample the mean runs over the patterns that have a positive there.
    Returns dict(auprc, ci_low, ci_high, n_patterns_used, n_boot_used, defined).
    """
    y_arr = np.asarray(y)
    s_arr = np.asarray(score, dtype=np.float64)
    if y_arr.ndim != 2 or s_arr.shape != y_arr.shape:
        raise ValueError(
            f"macro AUPRC: expected y and score of the same shape [N, P], "
            f"found {y_arr.shape} and {s_arr.shape}"
        )
    cols = [_binary_labels(y_arr[:, p], f"y[:, {p}]") for p in range(y_arr.shape[1])]
    for p in range(s_arr.shape[1]):
        _scores(s_arr[:, p], f"score[:, {p}]")
    used = [p for p, col in enumerate(cols) if col.any()]
    out = {
        "auprc": float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "n_patterns_used": len(used),
        "n_boot_used": 0,
        "defined": bool(used),
    }
    if not used:
        return out
    out["auprc"] = float(np.mean([average_precision_score(cols[p], s_arr[:, p]) for p in used]))
    design = _design_for(design, y_arr.shape[0])
    sorted_scores = [_SortedScores(cols[p], s_arr[:, p]) for p in used]
    rng = np.random.default_rng(seed)
    boot = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any drawn positive: all NaN
        for draws in design.draws(rng, n_boot):  # one draw of rows shared by every pattern
            aps = np.stack([ss.average_precisions(draws) for ss in sorted_scores])  # [P, b]
            means = np.nanmean(aps, axis=0)
            boot.extend(means[~np.isnan(means)].tolist())
    out["n_boot_used"] = len(boot)
    out["ci_low"], out["ci_high"] = _percentile_ci(boot, alpha)
    return out


def _check_score_set(y_arr: np.ndarray, scores: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    out = [np.asarray(s, dtype=np.float64) for s in scores]
    if not out:
        raise ValueError(f"{name}: at least one score array is needed")
    for i, arr in enumerate(out):
        if arr.shape != y_arr.shape:
            raise ValueError(f"{name}[{i}]: expected scores of shape {y_arr.shape} like the labels, found {arr.shape}")
        for p in range(arr.shape[1]):
            _scores(arr[:, p], f"{name}[{i}][:, {p}]")
    return out


def pooled_macro_comparison(
    y: np.ndarray,
    scores_a: Sequence[np.ndarray],
    scores_b: Sequence[np.ndarray] | None = None,
    design: BootstrapDesign | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    memo: MutableMapping | None = None,
    keys_a: Sequence[Hashable] | None = None,
    keys_b: Sequence[Hashable] | None = None,
) -> dict:
    """Mean macro AUPRC over the runs (seeds) of group a, minus that of group b, with shared draws.

    Args:
        y: labels ``[N, P]``, the rows every run scored.
        scores_a: one ``[N, P]`` score array per run of group a (e.g. its seeds).
        scores_b: the same for group b; None gives group a's pooled estimate and CI alone.
        memo, keys_a, keys_b: a caller comparing many pairs of runs on the same rows passes one
            dict and a key per run (naming the run and the rows): a run's resampled macro AUPRC
            depends only on its scores, the rows and the seeded draws, so it is computed once
            and reused by every comparison it enters. Results are the same as without.

    Each resample weights the rows once and scores every run of both groups
    under those weights, so the CI covers row sampling and the seeds' spread
    is kept apart (report it beside). Patterns without a positive are left out.
    ``verdict`` (with b) is "better" when the CI lies above 0, "worse" below,
    else "tie". Returns dict(diff, auprc_a, auprc_b, ci_low, ci_high, verdict,
    n, n_runs_a, n_runs_b, n_patterns_used, n_boot_used, alpha).
    """
    y_arr = np.asarray(y)
    if y_arr.ndim != 2:
        raise ValueError(f"labels must be [N, P], found shape {y_arr.shape}")
    group_a = _check_score_set(y_arr, scores_a, "scores_a")
    group_b = None if scores_b is None else _check_score_set(y_arr, scores_b, "scores_b")
    cols = [_binary_labels(y_arr[:, p], f"y[:, {p}]") for p in range(y_arr.shape[1])]
    used = [p for p, col in enumerate(cols) if col.any()]
    out = {
        "diff": float("nan"),
        "auprc_a": float("nan"),
        "auprc_b": float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "verdict": "undefined",
        "n": int(y_arr.shape[0]),
        "n_runs_a": len(group_a),
        "n_runs_b": 0 if group_b is None else len(group_b),
        "n_patterns_used": len(used),
        "n_boot_used": 0,
        "alpha": float(alpha),
    }
    if not used:
        return out

    def point(group: list[np.ndarray]) -> float:
        return float(np.mean([np.mean([average_precision_score(cols[p], s[:, p]) for p in used]) for s in group]))

    out["auprc_a"] = point(group_a)
    if group_b is not None:
        out["auprc_b"] = point(group_b)
        out["diff"] = out["auprc_a"] - out["auprc_b"]
    design = _design_for(design, y_arr.shape[0])

    def resampled(group: list[np.ndarray], keys: Sequence[Hashable] | None) -> np.ndarray:
        per_run = []
        for i, score in enumerate(group):
            key = None if memo is None or keys is None else (keys[i], n_boot, seed)
            if key is not None and key in memo:
                per_run.append(memo[key])
                continue
            vector = _macro_resamples(cols, used, score, design, n_boot, seed)
            if key is not None:
                memo[key] = vector
            per_run.append(vector)
        return np.mean(np.stack(per_run), axis=0)  # [n_boot]

    values = resampled(group_a, keys_a) - (resampled(group_b, keys_b) if group_b is not None else 0.0)
    boot = values[~np.isnan(values)].tolist()
    out["n_boot_used"] = len(boot)
    out["ci_low"], out["ci_high"] = _percentile_ci(boot, alpha)
    if group_b is not None and boot:
        out["verdict"] = "better" if out["ci_low"] > 0 else "worse" if out["ci_high"] < 0 else "tie"
    return out


def _macro_resamples(
    cols: list[np.ndarray], used: list[int], score: np.ndarray, design: BootstrapDesign, n_boot: int, seed: int
) -> np.ndarray:
    """One run's macro AUPRC ``[n_boot]`` under the draws seeded by ``seed`` (the same for every run
    of these rows); NaN for a resample without a drawn positive in any pattern."""
    sorted_scores = [_SortedScores(cols[p], score[:, p]) for p in used]
    rng = np.random.default_rng(seed)
    blocks = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resample: no positive drawn anywhere
        for draws in design.draws(rng, n_boot):
            # Same labels for every run: a pattern without a drawn positive is NaN for all and is skipped.
            blocks.append(np.nanmean(np.stack([ss.average_precisions(draws) for ss in sorted_scores]), axis=0))
    return np.concatenate(blocks)


def paired_macro_difference(
    y: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    design: BootstrapDesign | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Macro AUPRC of ``score_a`` minus that of ``score_b`` (both ``[N, P]``) on the same rows ``y [N, P]``.

    Every resample weights the rows once and scores both runs under those
    weights, so the CI is of the difference itself (far narrower than two
    overlapping intervals when the runs err on the same rows); see
    :func:`pooled_macro_comparison`, of which this is the one-run-per-side case.
    """
    return pooled_macro_comparison(y, [score_a], [score_b], design=design, n_boot=n_boot, seed=seed, alpha=alpha)


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
    y_val = _binary_labels(y_val, "y_val")
    score_val = _scores(score_val, "score_val", y_val.shape[0])
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
    score_val = _scores(score_val, "score_val")
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
    y_test = _binary_labels(y_test, "y_test")
    score_test = _scores(score_test, "score_test", y_test.shape[0])
    if n_ticker_days <= 0:
        raise ValueError(f"n_ticker_days must be positive, found {n_ticker_days}")
    alert = score_test >= threshold
    alerts = int(alert.sum())
    true_alerts = int((alert & (y_test == 1)).sum())
    n_pos = int(y_test.sum())
    return {
        "alerts": alerts,
        "alerts_per_day_per_ticker": alerts / float(n_ticker_days),
        "precision": _ratio(true_alerts, alerts),
        "recall": _ratio(true_alerts, n_pos),
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
        s = _scores(event_scores[frac], f"event_scores[{frac}]")
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
    neg = _scores(negative_scores, "negative_scores")
    curve = {}
    for frac in sorted(event_scores):
        pos = _scores(event_scores[frac], f"event_scores[{frac}]")
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
    y = _binary_labels(y, "y")
    prob = _scores(prob, "prob", y.shape[0])
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, found {n_bins}")
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise ValueError(
            f"prob: probabilities must lie in [0, 1], found range [{prob.min()}, {prob.max()}]"
        )
    n = int(y.shape[0])
    if n == 0:
        return {"ece": float("nan"), "brier": float("nan"), "n": 0, "n_bins": n_bins, "bins": []}
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
        "ece": ece,
        "brier": float(brier_score_loss(y, prob)),
        "n": n,
        "n_bins": n_bins,
        "bins": bins,
    }


# --------------------------------------------------------------------------- reports


def pattern_report(
    *,
    y_val: np.ndarray,
    score_val: np.ndarray,
    y_test: np.ndarray,
    score_test: np.ndarray,
    n_ticker_days: int,
    target_precision: float = 0.8,
    prob_test: np.ndarray | None = None,
    event_scores: Mapping[float, np.ndarray] | None = None,
    scores_aug: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = 15,
    alert_budget_per_1000: float = 5.0,
    design: BootstrapDesign | None = None,
) -> dict:
    """Every screener metric of one pattern: thresholds on val, everything else on test.

    Args:
        y_val, score_val: validation labels/scores ``[Nv]`` (threshold only).
        y_test, score_test: test labels/scores ``[N]``.
        n_ticker_days: (ticker, decision day) pairs scored on test.
        prob_test: test probabilities ``[N]`` for calibration; defaults to
            ``score_test`` when that lies in [0, 1], else calibration is None.
        event_scores: prefix fraction -> test event scores ``[n_events]``; the
            earliest-detection curve is None without it.
        scores_aug: ``[M, K]`` test scores under K augmentations; stability is
            None without it.
        alert_budget_per_1000: alerts per 1,000 ticker-days at which the
            earliest-detection recall is read (threshold chosen on val).
        design: the bootstrap design of the test rows (see :class:`BootstrapDesign`).

    The alert report follows the saved head: when no val threshold reaches
    ``target_precision`` the pattern raises no alerts (``reachable`` False,
    0 alerts, recall 0, precision undefined), never alerts at a fallback threshold.

    Returns dict(auprc, val_auprc, threshold, alerts, alert_budget,
    earliest_detection, earliest_detection_auprc, stability, calibration).
    """
    auprc = auprc_with_ci(y_test, score_test, n_boot=n_boot, seed=seed, alpha=alpha, design=design)
    y_val_arr = _binary_labels(y_val, "y_val")
    score_val_arr = _scores(score_val, "score_val", y_val_arr.shape[0])
    val_auprc = float(average_precision_score(y_val_arr, score_val_arr)) if y_val_arr.any() else float("nan")
    thr = threshold_at_precision(y_val_arr, score_val_arr, target_precision)
    if thr["achievable"]:
        alerts = alerts_at_threshold(y_test, score_test, thr["threshold"], n_ticker_days) | {"reachable": True}
    else:
        n_pos = int(_binary_labels(y_test, "y_test").sum())
        alerts = {
            "alerts": 0,
            "alerts_per_day_per_ticker": 0.0,
            "precision": float("nan"),
            "recall": 0.0 if n_pos else float("nan"),
            "true_alerts": 0,
            "n_pos": n_pos,
            "reachable": False,
        }
    budget = threshold_at_budget(score_val_arr, alert_budget_per_1000)
    if prob_test is None:
        s = np.asarray(score_test, dtype=np.float64)
        prob_test = s if s.size and s.min() >= 0 and s.max() <= 1 else None
    negatives = np.asarray(score_test, dtype=np.float64)[_binary_labels(y_test, "y_test") == 0]
    return {
        "auprc": auprc,
        "val_auprc": val_auprc,
        "threshold": thr,
        "alerts": alerts,
        "alert_budget": budget,
        "earliest_detection": (
            None if event_scores is None else earliest_detection_curve(event_scores, budget["threshold"])
        ),
        "earliest_detection_auprc": (
            None if event_scores is None else earliest_detection_auprc(event_scores, negatives)
        ),
        "stability": None if scores_aug is None else stability(scores_aug),
        "calibration": None if prob_test is None else calibration(y_test, prob_test, n_bins),
    }


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def macro(
    reports: Mapping[str, dict],
    y_test: np.ndarray | None = None,
    score_test: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    design: BootstrapDesign | None = None,
) -> dict:
    """Macro averages over the per-pattern reports of :func:`pattern_report`.

    Args:
        reports: pattern -> pattern report.
        y_test: ``[N, P]`` test labels, columns in the order of ``reports``;
            with ``score_test`` it gives the joint bootstrap CI of macro AUPRC.
        score_test: ``[N, P]`` test scores.

    Macro AUPRC is the mean over patterns with a test positive (val AUPRC over
    patterns with a val positive); alert volume, precision and recall average
    the patterns whose precision target is reachable on val (``reachable`` says
    "k of n"); the other metrics are NaN-skipping means over patterns (earliest
    detection per fraction). ``patterns`` lists the patterns whose AUPRC entered the mean.
    """
    names = list(reports)
    used = [p for p in names if reports[p]["auprc"]["defined"]]
    out: dict = {
        "patterns": used,
        "n_patterns": len(names),
        "auprc": _nanmean([reports[p]["auprc"]["auprc"] for p in used]),
        # A random score's expected AUPRC: the reference for "x times the prevalence".
        "prevalence": _nanmean([reports[p]["auprc"]["prevalence"] for p in used]),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
    }
    if y_test is not None and score_test is not None:
        y_arr, s_arr = np.asarray(y_test), np.asarray(score_test)
        if y_arr.ndim != 2 or y_arr.shape[1] != len(names):
            raise ValueError(
                f"macro: y_test must be [N, P] with P = {len(names)} patterns {names}, "
                f"found shape {y_arr.shape}"
            )
        ci = macro_auprc_with_ci(y_arr, s_arr, n_boot=n_boot, seed=seed, alpha=alpha, design=design)
        out["ci_low"], out["ci_high"] = ci["ci_low"], ci["ci_high"]
        out["n_boot_used"] = ci["n_boot_used"]
    val_used = [p for p in names if not math.isnan(reports[p].get("val_auprc", float("nan")))]
    out["val_auprc"] = _nanmean([reports[p]["val_auprc"] for p in val_used])
    reachable = [p for p in names if reports[p]["alerts"].get("reachable", reports[p]["threshold"]["achievable"])]
    out["n_reachable"] = len(reachable)
    out["reachable"] = f"{len(reachable)} of {len(names)} reachable"
    for key in ("alerts_per_day_per_ticker", "precision", "recall"):
        out[key] = _nanmean([reports[p]["alerts"][key] for p in reachable])
    out["achievable_share"] = _nanmean(
        [float(reports[p]["threshold"]["achievable"]) for p in names]
    )
    for key in ("earliest_detection", "earliest_detection_auprc"):
        curves = [reports[p].get(key) for p in names if reports[p].get(key)]
        fracs = sorted({f for c in curves for f in c})
        out[key] = {f: _nanmean([c.get(f, float("nan")) for c in curves]) for f in fracs} if curves else None
    stabs = [reports[p]["stability"] for p in names if reports[p]["stability"]]
    out["stability_mean_std"] = _nanmean([s["mean_std"] for s in stabs])
    cals = [reports[p]["calibration"] for p in names if reports[p]["calibration"]]
    out["ece"] = _nanmean([c["ece"] for c in cals])
    out["brier"] = _nanmean([c["brier"] for c in cals])
    return out


def screener_report(
    *,
    patterns: Sequence[str],
    y_val: np.ndarray,
    score_val: np.ndarray,
    y_test: np.ndarray,
    score_test: np.ndarray,
    n_ticker_days: int,
    target_precision: float = 0.8,
    prob_test: np.ndarray | None = None,
    event_scores: Mapping[str, Mapping[float, np.ndarray]] | None = None,
    scores_aug: Mapping[str, np.ndarray] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = 15,
    alert_budget_per_1000: float = 5.0,
    design: BootstrapDesign | None = None,
) -> dict:
    """Per-pattern reports and their macro, ready for ``probe_metrics.json``.

    Args:
        patterns: names of the P label columns.
        y_val, score_val: ``[Nv, P]`` validation labels/scores.
        y_test, score_test: ``[N, P]`` test labels/scores.
        prob_test: ``[N, P]`` test probabilities, optional (see pattern_report).
        event_scores: pattern -> (prefix fraction -> scores ``[n_events]``).
        scores_aug: pattern -> ``[M, K]`` scores under K augmentations.
        design: bootstrap design of the test rows; None = rows drawn
            independently (recorded as scheme "window": only for independent rows).

    Returns dict(per_pattern={pattern: report}, macro=..., config=...).
    """
    patterns = list(patterns)
    arrays = {"y_val": y_val, "score_val": score_val, "y_test": y_test, "score_test": score_test}
    if prob_test is not None:
        arrays["prob_test"] = prob_test
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for key, arr in arrays.items():
        if arr.ndim != 2 or arr.shape[1] != len(patterns):
            raise ValueError(
                f"{key}: expected [N, {len(patterns)}] for patterns {patterns}, found {arr.shape}"
            )
    per_pattern = {}
    for p, name in enumerate(patterns):
        per_pattern[name] = pattern_report(
            y_val=arrays["y_val"][:, p],
            score_val=arrays["score_val"][:, p],
            y_test=arrays["y_test"][:, p],
            score_test=arrays["score_test"][:, p],
            n_ticker_days=n_ticker_days,
            target_precision=target_precision,
            prob_test=None if prob_test is None else arrays["prob_test"][:, p],
            event_scores=None if event_scores is None else event_scores.get(name),
            scores_aug=None if scores_aug is None else scores_aug.get(name),
            n_boot=n_boot,
            seed=seed,
            alpha=alpha,
            n_bins=n_bins,
            alert_budget_per_1000=alert_budget_per_1000,
            design=design,
        )
    design = _design_for(design, arrays["y_test"].shape[0])
    return {
        "per_pattern": per_pattern,
        "macro": macro(
            per_pattern,
            arrays["y_test"],
            arrays["score_test"],
            n_boot=n_boot,
            seed=seed,
            alpha=alpha,
            design=design,
        ),
        "config": {
            "bootstrap": design.describe(),
            "alert_budget_per_1000": float(alert_budget_per_1000),
            "target_precision": float(target_precision),
            "n_boot": int(n_boot),
            "seed": int(seed),
            "alpha": float(alpha),
            "n_bins": int(n_bins),
            "n_ticker_days": int(n_ticker_days),
        },
    }
