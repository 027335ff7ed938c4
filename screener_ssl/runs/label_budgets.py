"""A run's probe at label budgets: which encoder each ``(budget, draw)`` is probed with.

- a frozen encoder (every self-supervised objective, ``random_init``, ``raw_features``,
  ``shape_free``, ``minirocket``): the run's own encoder, its head fitted on the draw's rows;
- an entry that trains on labels (``needs_labels``: ``supervised``): retrained from scratch
  on the draw's labelled rows, exactly as its run was trained on all of them;
- a finetuned classifier: the source run's pretrained encoder finetuned on the draw's rows
  with the finetune's settings (:func:`screener_ssl.runs.finetune.finetune_settings`).

Every one of them sees the identical labelled rows for the same ``(budget, draw)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from screener_ssl.data.dataset import Dataset
from screener_ssl.data.label_budget import LabelDraw
from screener_ssl.probe.label_budgets import LabelBudgetResult, RetrainPerDraw, run_label_budgets
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.runs.finetune import finetune_settings
from screener_ssl.runs.pretrain import resolve_point
from screener_ssl.runs.run_dirs import load_pretrained_backbone
from screener_ssl.runs.sweep import SweepPoint
from screener_ssl.ssl.backbones.base import build_backbone
from screener_ssl.ssl.encoder import Encoder, load_encoder
from screener_ssl.ssl.finetune import train_classifier
from screener_ssl.ssl.objectives.base import FitJob
from screener_ssl.ssl.trainer import seed_everything


def _quiet(prefix: str, log: Callable[[str], None]) -> Callable[[str], None]:
    return lambda message: log(f"{prefix}: {message}")


def budget_encoder(
    point: SweepPoint,
    dataset: Dataset,
    run_dir: Path,
    finetune_source: Path | None = None,
    log: Callable[[str], None] = print,
) -> Encoder | RetrainPerDraw:
    """The encoder (or per-draw encoder builder) of ``point``'s run at ``run_dir`` under a label budget."""
    if finetune_source is not None:
        backbone, _ = load_pretrained_backbone(finetune_source, dataset.spec)
        config = finetune_settings(point)

        def finetuned(draw: LabelDraw) -> Encoder:
            fitted = train_classifier(
                backbone, dataset, config, log=_quiet(f"finetune at budget {draw.key}", log), labelled_rows=draw.rows,
                device=point.train.device,
            )
            return Encoder(fitted.classifier.backbone, normalization="none")

        return RetrainPerDraw(finetuned)
    resolved = resolve_point(point)
    if resolved.entry.needs_labels:
        resolved_point = resolved.point

        def from_scratch(draw: LabelDraw) -> Encoder:
            # The same initial weights as the run's own training (pretrain_partition seeds the same way).
            seed_everything(resolved_point.train.seed, resolved_point.train.threads)
            backbone = build_backbone(resolved_point.backbone, dataset.spec.n_features)
            job = FitJob(dataset, resolved_point.train, resolved_point.augment, resolved_point.objective_config,
                         None, labelled_rows=draw.rows)
            fitted, _ = resolved.entry.fit(backbone, job, log=_quiet(f"{point.objective} at budget {draw.key}", log))
            return fitted if isinstance(fitted, Encoder) else Encoder(fitted, normalization="none")

        return RetrainPerDraw(from_scratch)
    return load_encoder(run_dir)


def probe_label_budgets(
    point: SweepPoint,
    dataset: Dataset,
    run_dir: Path,
    config: ProbeConfig,
    full: dict | None = None,
    finetune_source: Path | None = None,
    log: Callable[[str], None] = print,
    embedded: dict | None = None,
) -> LabelBudgetResult:
    """Probe the run at ``run_dir`` at every label budget of ``config`` (see :func:`run_label_budgets`).

    ``embedded``: the full-label probe's val/test embeddings of this run's encoder, reused when it is frozen.
    """
    encoder = budget_encoder(point, dataset, run_dir, finetune_source, log)
    return run_label_budgets(encoder, dataset, config, full=full, log=log,
                             embedded=None if isinstance(encoder, RetrainPerDraw) else embedded)
