"""Probing a run: its encoder at full labels, at every label budget and along its budget curve
(:func:`probe_run`, what the ``probe_metrics`` and ``finetuned_classifier`` assets and the
benchmarks run), and its reference encoders (e.g. a distillation teacher).

The registry entry of the run's objective names the reference encoders
(``Objective.reference_encoders``); each is scored by the same probe as the run's own encoder and
written to ``<run dir>/<name>/``, so the student and its reference can be read side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from screener_ssl.data.dataset import Dataset
from screener_ssl.probe.curves import record_budget_curve
from screener_ssl.probe.label_budgets import (
    BUDGET_PLOT_FILE,
    BUDGET_PREDICTIONS_FILE,
    METRICS_KEY as BUDGET_METRICS_KEY,
    LabelBudgetResult,
    write_label_budget_artifacts,
)
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.metric_names import MACRO
from screener_ssl.probe.probe import ProbeResult, run_probe, write_probe_artifacts
from screener_ssl.runs.label_budgets import probe_label_budgets
from screener_ssl.runs.sweep import SweepPoint
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.encoder import load_encoder
from screener_ssl.ssl.objectives.base import get_objective_class
from screener_ssl.store.artifacts import to_jsonable


@dataclass
class ProbedRun:
    """What :func:`probe_run` wrote into a run dir, for the caller to describe."""

    result: ProbeResult  # the full-label probe; its metrics hold ``label_budgets`` and ``budget_curve``
    budgets: LabelBudgetResult | None  # None when the point lists no label budgets
    curve_png: bytes | None  # the budget-curve plot; None for an encoder that did not train


def probe_run(
    point: SweepPoint,
    dataset: Dataset,
    run_dir: Path,
    finetune_source: Path | None = None,
    log: Callable[[str], None] = print,
) -> ProbedRun:
    """Probe the encoder in ``run_dir`` with ``point``'s probe settings: full labels, then every label
    budget, then the budget curve of its training snapshots; writes the probe's files into ``run_dir``.

    ``finetune_source`` (the pretrained run a finetune started from) makes every label budget
    finetune that encoder again on the budget's labelled rows.
    """
    run_dir = Path(run_dir)
    encoder = load_encoder(run_dir)
    config = ProbeConfig(**point.probe)
    result = run_probe(encoder, dataset, config, augment=point.augment, log=log)
    budgets = None
    if config.label_budgets:
        budgets = probe_label_budgets(
            point, dataset, run_dir, config, full=result.metrics[MACRO], finetune_source=finetune_source,
            log=log, embedded=result.embeddings,
        )
        result.metrics[BUDGET_METRICS_KEY] = to_jsonable(budgets.metrics)
        # Before probe_metrics.json: a run the index reads has its budget predictions beside it.
        write_label_budget_artifacts(budgets, run_dir)
    else:
        for name in (BUDGET_PREDICTIONS_FILE, BUDGET_PLOT_FILE):
            (run_dir / name).unlink(missing_ok=True)  # from an earlier probe with budgets
    # A trained run's encoder snapshots, probed lightly: AUPRC against windows seen (None for fixed encoders).
    curve_png = record_budget_curve(result, run_dir, encoder, dataset, config, log=log)
    write_probe_artifacts(result, run_dir)
    return ProbedRun(result=result, budgets=budgets, curve_png=curve_png)


def probe_reference_encoders(
    run_dir: Path,
    objective: str,
    dataset: Dataset,
    config: ProbeConfig,
    augment: AugmentConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Probe every reference encoder of ``run_dir``; returns ``name -> macro metrics``."""
    out: dict[str, dict] = {}
    for name, encoder in get_objective_class(objective).reference_encoders(Path(run_dir)).items():
        log(f"probing the reference encoder {name!r} of {run_dir}")
        result = run_probe(encoder, dataset, config, augment=augment, log=log)
        write_probe_artifacts(result, Path(run_dir) / name)
        out[name] = result.metrics[MACRO]
    return out
