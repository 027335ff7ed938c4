"""Supervised training of a backbone + linear head on the pattern labels.

Two uses, one loop: the ``supervised`` baseline (a backbone trained from scratch
on the labels the probe scores) and the finetune of a pretrained encoder
(load it from its run dir, schema-checked against the dataset's window spec,
then train encoder + head end to end).

Windows come from the train split only and are gathered at their own decision
bar (open-only, nothing after it): the label of a window belongs to that
decision. Labels are rare (about 1 % per pattern), so each batch mixes windows
with any positive label and uniformly drawn windows; after training the head's
bias is shifted back to the train prevalence (case-control prior correction),
so the predicted probabilities are calibrated to the data, not to the batches.

Batches come from :mod:`screener_ssl.ssl.classifier_sampler`. A classifier run is written by
the one run writer (:func:`screener_ssl.runs.finetune.write_classifier_run`) and read back by
:mod:`screener_ssl.runs.run_dirs`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from screener_ssl.data.dataset import Dataset
from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone, build_backbone
from screener_ssl.ssl.classifier_sampler import ClassifierBatches, ClassifierBatchSampler, require_labels
from screener_ssl.ssl.device import resolve_device
from screener_ssl.ssl.trainer import StepLoss, TrainConfig, run_training_loop, seed_everything

VAL_SAMPLE_MAX = 4096


class FinetuneConfig(BaseModel):
    """Hyperparameters of supervised training; recorded in pretrain_config.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(300, ge=1, le=1_000_000)
    batch_size: int = Field(64, ge=2, le=8192)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    # Backbone lr = lr * encoder_lr_scale: ~0.1 to finetune a pretrained encoder, 1.0 from scratch, 0 freezes it.
    encoder_lr_scale: float = Field(1.0, ge=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    warmup_frac: float = Field(0.05, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    # Share of each batch drawn from train windows with any positive label (the rest uniformly).
    positive_fraction: float = Field(0.5, ge=0.0, le=1.0)
    # Shift the head's bias after training so probabilities match the train prevalence, not the batch mix.
    prior_correction: bool = True
    jitter_sigma: float = Field(0.0, ge=0.0, le=1.0)  # Gaussian noise on observed cells, z-score units
    val_windows: int = Field(VAL_SAMPLE_MAX, ge=1, le=1_000_000)  # seeded val sample for val_loss
    # Model selection on val: every ``checkpoint_every`` steps and at the end, the val sample's macro
    # AUPRC is measured and the weights of the best step are kept (test never chooses).
    select_on_val: bool = True
    seed: int = Field(0, ge=0, lt=2**63)
    threads: int = Field(2, ge=1, le=256)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(50, ge=1)


def finetune_config(train: TrainConfig, **settings: Any) -> FinetuneConfig:
    """The one TrainConfig -> FinetuneConfig mapping: the run's optimizer, schedule, seed and logging, plus ``settings``."""
    return FinetuneConfig(
        steps=train.steps, batch_size=train.batch_size, lr=train.lr, weight_decay=train.weight_decay,
        warmup_frac=train.warmup_frac, grad_clip=train.grad_clip, seed=train.seed, threads=train.threads,
        log_every=train.log_every, **settings,
    )


class PatternClassifier(nn.Module):
    """Backbone + ``Linear(D, P)`` on the embedding at the decision bar; ``forward -> logits [B, P]``."""

    def __init__(self, backbone: SSLBackbone, patterns: tuple[str, ...]) -> None:
        super().__init__()
        if not patterns:
            raise ValueError("a pattern classifier needs at least one pattern")
        self.backbone = backbone
        self.patterns = tuple(patterns)
        self.head = nn.Linear(backbone.embed_dim, len(self.patterns))

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """x float32 [B, T, C], observed bool [B, T, C] (decision bar last) -> logits [B, P]."""
        return self.head(self.backbone.pooled(x, observed))


@dataclass
class ClassifierResult:
    classifier: PatternClassifier
    losses: list[float]  # per-step train BCE on the positive-enriched batches
    val_loss: float  # mean BCE on the val sample, after the prior correction
    val_baseline_loss: float  # the same for a constant predictor of the train prevalence
    windows_per_s: float
    seconds: float
    train_windows: int
    positive_windows: int  # train windows with any positive label
    prior_shift: list[float]  # per pattern, subtracted from the head's bias (0 without correction)
    resumed_from_step: int = 0
    val_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    selected_step: int = 0  # the step whose weights were kept (the last one without selection on val)
    selection_history: list = field(default_factory=list)  # [step, val macro AUPRC] at each check

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses))

    @property
    def first_loss(self) -> float:
        # Mean of the first tenth: one step's loss is noisy.
        head = max(len(self.losses) // 10, 1)
        return float(np.mean(self.losses[:head]))

    @property
    def final_loss(self) -> float:
        tail = max(len(self.losses) // 10, 1)
        return float(np.mean(self.losses[-tail:]))


# --------------------------------------------------------------------------- scoring


@torch.inference_mode()
def predict_positions(
    classifier: PatternClassifier,
    dataset: Dataset,
    positions: np.ndarray,
    values: np.ndarray | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Logits float32 [n, P] of the windows at ``positions`` in the index (classifier left in eval mode)."""
    classifier.eval()
    on = next(classifier.parameters()).device  # during training: the device the steps run on
    out = np.zeros((len(positions), len(classifier.patterns)), dtype=np.float32)
    for i in range(0, len(positions), batch_size):
        x, observed = dataset.windows(positions[i : i + batch_size], values)
        logits = classifier(torch.from_numpy(x).to(on), torch.from_numpy(observed).to(on))
        out[i : i + len(x)] = logits.cpu().numpy()
    return out


def _logit(p: np.ndarray, n: int) -> np.ndarray:
    # Clip to half a window's worth so a pattern absent from train gives a finite logit.
    eps = 0.5 / max(n, 1)
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def constant_bce(prevalence: np.ndarray, labels: np.ndarray, n_reference: int) -> float:
    """Mean BCE on ``labels [n, P]`` of predicting ``prevalence [P]`` (clipped as :func:`_logit` does)."""
    logits = torch.from_numpy(np.broadcast_to(_logit(prevalence, n_reference), labels.shape).copy())
    return float(nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels.astype(np.float64))))


def _bce(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(
        nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(logits.astype(np.float64)), torch.from_numpy(labels.astype(np.float64))
        )
    )


def val_macro_auprc(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean average precision over the patterns with a val positive (NaN when none has one)."""
    from sklearn.metrics import average_precision_score

    used = [p for p in range(labels.shape[1]) if labels[:, p].any()]
    if not used:
        return float("nan")
    return float(np.mean([average_precision_score(labels[:, p], logits[:, p]) for p in used]))


def val_sample(dataset: Dataset, size: int, seed: int) -> np.ndarray:
    """Sorted int64 positions of a seeded sample of at most ``size`` val windows."""
    val_pos = dataset.index.rows_of("val")
    if len(val_pos) == 0:
        raise ValueError("the val split has no windows; val_loss cannot be measured")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(val_pos, size=min(size, len(val_pos)), replace=False))


# --------------------------------------------------------------------------- training


def scratch_backbone(config: BackboneConfig, n_channels: int, seed: int) -> SSLBackbone:
    """A freshly initialised backbone; the same seed gives the same initial weights."""
    torch.manual_seed(seed)
    return build_backbone(config, n_channels)


def train_classifier(
    backbone: SSLBackbone,
    dataset: Dataset,
    config: FinetuneConfig,
    log: Callable[[str], None] = print,
    checkpoint_path: Path | None = None,
    labelled_rows: np.ndarray | None = None,
    snapshot: Callable[[nn.Module, int], None] | None = None,
    device: str = "cpu",
) -> ClassifierResult:
    """Train a copy of ``backbone`` + a linear head on the train split's labels; score BCE on val.

    ``labelled_rows`` (positions into the window index) limits training to those train windows,
    a label budget: no other train window's label is read. With ``config.select_on_val`` the
    weights of the step with the best val macro AUPRC (every ``checkpoint_every`` steps and the
    last) are kept. The caller's backbone is not modified. Same seed and threads give
    bit-identical weights; with ``checkpoint_path`` a killed run resumes where its last
    checkpoint left off. ``snapshot``: the training loop's snapshot hook (the classifier's
    ``backbone`` is the encoder). ``device`` (as ``TrainConfig.device``) is where the steps run;
    the classifier comes back on the CPU.
    """
    on = resolve_device(device)
    labels = require_labels(dataset)
    if backbone.input_channels != dataset.spec.n_features:
        raise ValueError(
            f"backbone takes {backbone.input_channels} channels but the dataset's windows have "
            f"{dataset.spec.n_features} ({list(dataset.spec.feature_names)})"
        )
    seed_everything(config.seed, config.threads)
    classifier = PatternClassifier(copy.deepcopy(backbone), dataset.patterns)
    batches = ClassifierBatches(
        dataset, labels,
        ClassifierBatchSampler(dataset, config.batch_size, config.positive_fraction, config.seed, labelled_rows),
        config.jitter_sigma, config.seed,
    )
    loss_fn = nn.BCEWithLogitsLoss()
    val_pos = val_sample(dataset, config.val_windows, config.seed)
    val_labels = labels[val_pos]

    def select(done: int, total: int) -> None:
        if not config.select_on_val or (done % config.checkpoint_every and done != total):
            return
        score = val_macro_auprc(predict_positions(classifier, dataset, val_pos), val_labels)
        classifier.train()
        selection = batches.selection
        selection["history"].append([done, score])
        if selection["state"] is None or score > selection["val_auprc"]:
            selection.update(step=done, val_auprc=score,
                             state={k: v.detach().clone() for k, v in classifier.state_dict().items()})

    def loss_step(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> StepLoss:
        x, observed, target = (t.to(on) for t in batch)
        return loss_fn(classifier(x, observed), target), {}, len(target)

    loop = run_training_loop(
        classifier, batches, loss_step, config,
        name="supervised classifier",
        param_groups=[
            {"params": list(classifier.backbone.parameters()), "lr": config.lr * config.encoder_lr_scale},
            {"params": list(classifier.head.parameters()), "lr": config.lr},
        ],
        device=on,
        checkpoint_path=checkpoint_path,
        guard_config=config,
        snapshot=snapshot,
        on_after_step=select,
        loss_label="bce",
        hint="Lower the learning rate or check the backbone weights and inputs for NaN.",
        log=log,
    )
    sampler, losses, seconds, start_step = batches.sampler, loop.losses, loop.seconds, loop.resumed_from_step
    window_count = loop.windows
    selection = batches.selection
    if config.select_on_val and selection["state"] is not None:
        classifier.load_state_dict(selection["state"])
        log(
            f"classifier: kept step {selection['step']} of {config.steps} (val macro AUPRC "
            f"{selection['val_auprc']:.4f}; checked at {[int(s) for s, _ in selection['history']]})"
        )

    train_labels = labels[sampler.train_positions]
    n_train = len(sampler.train_positions)
    prevalence = train_labels.mean(axis=0)
    shift = np.zeros(len(dataset.patterns))
    if config.prior_correction:
        shift = _logit(sampler.sampled_prevalence(labels), n_train) - _logit(prevalence, n_train)
        with torch.no_grad():
            classifier.head.bias -= torch.from_numpy(shift.astype(np.float32))

    val_loss = _bce(predict_positions(classifier, dataset, val_pos), val_labels)
    baseline = constant_bce(prevalence, val_labels, n_train)
    log(
        f"classifier val BCE {val_loss:.4f} vs {baseline:.4f} for the train prevalence "
        f"({len(val_pos)} val windows)"
    )
    if checkpoint_path is not None:
        checkpoint_path.unlink(missing_ok=True)
    trained = config.steps - start_step
    return ClassifierResult(
        classifier=classifier,
        losses=losses,
        val_loss=val_loss,
        val_baseline_loss=baseline,
        windows_per_s=window_count / max(seconds, 1e-9) if trained else 0.0,
        seconds=seconds,
        train_windows=n_train,
        positive_windows=int(len(sampler.positive_positions)),
        prior_shift=[float(s) for s in shift],
        resumed_from_step=start_step,
        val_positions=val_pos,
        selected_step=int(selection["step"]) if config.select_on_val and selection["state"] is not None else len(losses),
        selection_history=[[int(s), float(v)] for s, v in selection["history"]],
    )


__all__ = [
    "ClassifierResult",
    "FinetuneConfig",
    "PatternClassifier",
    "constant_bce",
    "finetune_config",
    "predict_positions",
    "scratch_backbone",
    "train_classifier",
    "val_macro_auprc",
    "val_sample",
]
