"""The names of the probe's metrics, declared once.

``probe_metrics.json`` (written by :func:`screener_ssl.probe.probe.run_probe`) holds sections
(``macro``, ``val``, ...) of named values; the experiment index flattens it into dotted columns
``probe_metrics.<section>.<key>`` (:func:`column`). The report that writes a value, the index,
the leaderboard and the asset checks that read it all spell its name through these constants.
"""

from __future__ import annotations

METRICS_STEM = "probe_metrics"  # probe_metrics.json, flattened in the index under this stem

# Sections of probe_metrics.json.
MACRO = "macro"  # the macro over patterns of the test report (plus the val macro AUPRC)
VAL = "val"  # what selection reads: the val macro AUPRC and each pattern's
TIMINGS = "timings"
COST = "cost"
LABEL_BUDGETS = "label_budgets"
BUDGET_CURVE = "budget_curve"

# Keys of a pattern's report and of the macro.
AUPRC = "auprc"
VAL_AUPRC = "val_auprc"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
PREVALENCE = "prevalence"
N_REACHABLE = "n_reachable"
REACHABLE = "reachable"
ALERTS_PER_DAY = "alerts_per_day_per_ticker"
PRECISION = "precision"
RECALL = "recall"
EARLIEST_DETECTION = "earliest_detection"
CALIBRATION = "calibration"
ECE = "ece"
BRIER = "brier"
VAL_MACRO_AUPRC = "macro_auprc"  # the val section's macro AUPRC


def column(*keys: str | float) -> str:
    """The index column of the value at ``keys`` in probe_metrics.json (``column(MACRO, ECE)`` is
    ``probe_metrics.macro.ece``)."""
    return ".".join((METRICS_STEM, *(str(key) for key in keys)))


MACRO_AUPRC_COLUMN = column(MACRO, AUPRC)  # what the board reports and the index's currency scores
VAL_MACRO_AUPRC_COLUMN = column(VAL, VAL_MACRO_AUPRC)  # what ranks and selects
MACRO_ECE_COLUMN = column(MACRO, ECE)
