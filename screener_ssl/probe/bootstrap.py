"""The bootstrap engine of the probe's CIs and paired comparisons (DESIGN.md section 6).

How a resample weights the rows of one evaluation set (:class:`BootstrapDesign`), average
precision under those weights for many resamples at once (:class:`_SortedScores`), the one
resampling loop (:func:`resample`) and the intervals built on it: one pattern's AUPRC, the
macro AUPRC, and the pooled or paired difference of two groups of runs on the same rows.
Numpy arrays in, plain dicts of Python floats out; undefined values are ``float("nan")``.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterator, MutableMapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score

from screener_ssl.probe.checks import binary_labels, finite_scores, ratio, same_shape

BLOCK_DAYS = 20  # trading days per time block of the block bootstrap (about a month)
BOOTSTRAP_SCHEMES: tuple[str, ...] = ("ticker_time_block", "window")
BOOT_BLOCK_VALUES = 1_000_000  # row weights scored at once by the vectorized bootstrap ([b, N], b * N at most this)

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


def _percentile_ci(boot: np.ndarray, alpha: float) -> tuple[float, float]:
    if not len(boot):
        return float("nan"), float("nan")
    return float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2))


def _ci_fields(values: np.ndarray, alpha: float) -> dict:
    """``n_boot_used``, ``ci_low`` and ``ci_high`` of resampled values ``[n_boot]``; a NaN resample is skipped."""
    boot = values[~np.isnan(values)]
    low, high = _percentile_ci(boot, alpha)
    return {"n_boot_used": int(boot.size), "ci_low": low, "ci_high": high}


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


def resample(
    sorted_scores: Sequence[_SortedScores], design: BootstrapDesign, n_boot: int, seed: int
) -> np.ndarray:
    """Mean AP over the score columns in each of ``n_boot`` resamples ``[n_boot]``: the one bootstrap loop.

    The draws are seeded by ``seed`` alone, so every column, and every run scored on the same
    rows, is weighted by the same resamples (one draw of rows shared by every pattern keeps their
    correlation). Within a resample the mean runs over the columns with a drawn positive; NaN
    where none has one (AUPRC undefined: the callers skip that resample). One column gives its
    AP itself.
    """
    rng = np.random.default_rng(seed)
    blocks = [np.empty(0)]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any drawn positive: all NaN
        for draws in design.draws(rng, n_boot):
            blocks.append(np.nanmean(np.stack([ss.average_precisions(draws) for ss in sorted_scores]), axis=0))
    return np.concatenate(blocks)


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
    y = binary_labels(y, "y")
    score = finite_scores(score, "score", y.shape[0])
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), found {alpha}")
    n = int(y.shape[0])
    n_pos = int(y.sum())
    out = {
        "n": n,
        "n_pos": n_pos,
        "prevalence": ratio(n_pos, n),
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
    return out | _ci_fields(resample([_SortedScores(y, score)], _design_for(design, n), n_boot, seed), alpha)


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
    y_arr, s_arr = same_shape(y, score, "macro AUPRC", ndim=2)
    cols = [binary_labels(y_arr[:, p], f"y[:, {p}]") for p in range(y_arr.shape[1])]
    for p in range(s_arr.shape[1]):
        finite_scores(s_arr[:, p], f"score[:, {p}]")
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
    return out | _ci_fields(_macro_resamples(cols, used, s_arr, design, n_boot, seed), alpha)


def _check_score_set(y_arr: np.ndarray, scores: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    out = [same_shape(y_arr, s, f"{name}[{i}]", ndim=2)[1] for i, s in enumerate(scores)]
    if not out:
        raise ValueError(f"{name}: at least one score array is needed")
    for i, arr in enumerate(out):
        for p in range(arr.shape[1]):
            finite_scores(arr[:, p], f"{name}[{i}][:, {p}]")
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
    cols = [binary_labels(y_arr[:, p], f"y[:, {p}]") for p in range(y_arr.shape[1])]
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
    out |= _ci_fields(values, alpha)
    if group_b is not None and out["n_boot_used"]:
        out["verdict"] = "better" if out["ci_low"] > 0 else "worse" if out["ci_high"] < 0 else "tie"
    return out


def _macro_resamples(
    cols: list[np.ndarray], used: list[int], score: np.ndarray, design: BootstrapDesign, n_boot: int, seed: int
) -> np.ndarray:
    """One run's macro AUPRC ``[n_boot]`` under the draws seeded by ``seed`` (the same for every run
    of these rows); NaN for a resample without a drawn positive in any pattern (the same labels for
    every run: a pattern without a drawn positive is NaN for all and is skipped)."""
    return resample([_SortedScores(cols[p], score[:, p]) for p in used], design, n_boot, seed)


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

