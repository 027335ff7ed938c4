"""The probe's report: every screener metric of each pattern and their macro, for ``probe_metrics.json``.

:func:`pattern_report` puts one pattern's thresholds (on val), AUPRC with its bootstrap CI,
alerts, earliest detection, stability and calibration (on test) together; :func:`macro`
averages them over the patterns; :func:`screener_report` does both for a ``[N, P]`` label set
and records how the CIs were resampled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score

from screener_ssl.probe.bootstrap import BootstrapDesign, _design_for, auprc_with_ci, macro_auprc_with_ci
from screener_ssl.probe.checks import binary_labels, finite_scores
from screener_ssl.probe.metric_names import (
    ALERTS_PER_DAY, AUPRC, BRIER, CALIBRATION, CI_HIGH, CI_LOW, EARLIEST_DETECTION, ECE, MACRO, N_REACHABLE,
    PRECISION, PREVALENCE, REACHABLE, RECALL, VAL_AUPRC,
)
from screener_ssl.probe.metrics import (
    alerts_at_threshold,
    calibration,
    earliest_detection_auprc,
    earliest_detection_curve,
    stability,
    threshold_at_budget,
    threshold_at_precision,
)

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
    y_val_arr = binary_labels(y_val, "y_val")
    score_val_arr = finite_scores(score_val, "score_val", y_val_arr.shape[0])
    val_auprc = float(average_precision_score(y_val_arr, score_val_arr)) if y_val_arr.any() else float("nan")
    thr = threshold_at_precision(y_val_arr, score_val_arr, target_precision)
    if thr["achievable"]:
        alerts = alerts_at_threshold(y_test, score_test, thr["threshold"], n_ticker_days) | {"reachable": True}
    else:
        n_pos = int(binary_labels(y_test, "y_test").sum())
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
    negatives = np.asarray(score_test, dtype=np.float64)[binary_labels(y_test, "y_test") == 0]
    return {
        AUPRC: auprc,
        VAL_AUPRC: val_auprc,
        "threshold": thr,
        "alerts": alerts,
        "alert_budget": budget,
        EARLIEST_DETECTION: (
            None if event_scores is None else earliest_detection_curve(event_scores, budget["threshold"])
        ),
        "earliest_detection_auprc": (
            None if event_scores is None else earliest_detection_auprc(event_scores, negatives)
        ),
        "stability": None if scores_aug is None else stability(scores_aug),
        CALIBRATION: None if prob_test is None else calibration(y_test, prob_test, n_bins),
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
    used = [p for p in names if reports[p][AUPRC]["defined"]]
    out: dict = {
        "patterns": used,
        "n_patterns": len(names),
        AUPRC: _nanmean([reports[p][AUPRC][AUPRC] for p in used]),
        # A random score's expected AUPRC: the reference for "x times the prevalence".
        PREVALENCE: _nanmean([reports[p][AUPRC][PREVALENCE] for p in used]),
        CI_LOW: float("nan"),
        CI_HIGH: float("nan"),
    }
    if y_test is not None and score_test is not None:
        y_arr, s_arr = np.asarray(y_test), np.asarray(score_test)
        if y_arr.ndim != 2 or y_arr.shape[1] != len(names):
            raise ValueError(
                f"macro: y_test must be [N, P] with P = {len(names)} patterns {names}, "
                f"found shape {y_arr.shape}"
            )
        ci = macro_auprc_with_ci(y_arr, s_arr, n_boot=n_boot, seed=seed, alpha=alpha, design=design)
        out[CI_LOW], out[CI_HIGH] = ci[CI_LOW], ci[CI_HIGH]
        out["n_boot_used"] = ci["n_boot_used"]
    val_used = [p for p in names if not math.isnan(reports[p].get(VAL_AUPRC, float("nan")))]
    out[VAL_AUPRC] = _nanmean([reports[p][VAL_AUPRC] for p in val_used])
    reachable = [p for p in names if reports[p]["alerts"].get("reachable", reports[p]["threshold"]["achievable"])]
    out[N_REACHABLE] = len(reachable)
    out[REACHABLE] = f"{len(reachable)} of {len(names)} reachable"
    for key in (ALERTS_PER_DAY, PRECISION, RECALL):
        out[key] = _nanmean([reports[p]["alerts"][key] for p in reachable])
    out["achievable_share"] = _nanmean(
        [float(reports[p]["threshold"]["achievable"]) for p in names]
    )
    for key in (EARLIEST_DETECTION, "earliest_detection_auprc"):
        curves = [reports[p].get(key) for p in names if reports[p].get(key)]
        fracs = sorted({f for c in curves for f in c})
        out[key] = {f: _nanmean([c.get(f, float("nan")) for c in curves]) for f in fracs} if curves else None
    stabs = [reports[p]["stability"] for p in names if reports[p]["stability"]]
    out["stability_mean_std"] = _nanmean([s["mean_std"] for s in stabs])
    cals = [reports[p][CALIBRATION] for p in names if reports[p][CALIBRATION]]
    out[ECE] = _nanmean([c[ECE] for c in cals])
    out[BRIER] = _nanmean([c[BRIER] for c in cals])
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
    boot = {"n_boot": n_boot, "seed": seed, "alpha": alpha}  # the same resamples for every pattern and the macro
    per_pattern = {}
    for p, name in enumerate(patterns):
        column = {key: arr[:, p] for key, arr in arrays.items() if key != "prob_test"}
        per_pattern[name] = pattern_report(
            **column,
            n_ticker_days=n_ticker_days,
            target_precision=target_precision,
            prob_test=None if prob_test is None else arrays["prob_test"][:, p],
            event_scores=None if event_scores is None else event_scores.get(name),
            scores_aug=None if scores_aug is None else scores_aug.get(name),
            n_bins=n_bins,
            alert_budget_per_1000=alert_budget_per_1000,
            design=design,
            **boot,
        )
    design = _design_for(design, arrays["y_test"].shape[0])
    return {
        "per_pattern": per_pattern,
        MACRO: macro(per_pattern, arrays["y_test"], arrays["score_test"], design=design, **boot),
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
