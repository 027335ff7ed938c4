"""Masked reconstruction: the baseline objective.

Point and span masks over time; the masked steps are hidden from the encoder
(value zeroed, ``observed`` False) and a linear head reconstructs them from the
per-timestep embedding. With a causal backbone, the embedding at a masked step
sees only earlier steps, so the task is "fill in the hidden bar from the past".
The loss counts only bars that were masked AND visible in the clean window
(never censored decision-bar fields, never padding, never missing values).

Normalization excludes the masked bars: the window arrives z-scored over all its
visible bars, masked ones included, so the masked values would be recoverable
from the visible normalized ones (each channel sums to zero). Input and target
are therefore re-standardized per window and channel with statistics of the
bars the encoder still sees (:func:`restandardize_visible`), which is the same
as z-scoring the raw window on the visible bars only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch, View
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective


class MaskedReconConfig(ObjectiveConfig):
    mask_ratio: float = Field(0.15, gt=0.0, lt=1.0)  # share of time steps hidden
    span_prob: float = Field(0.5, ge=0.0, le=1.0)  # share of the masking budget spent on contiguous spans
    mean_span: int = Field(5, ge=1, le=64)
    loss: Literal["huber", "l1"] = "huber"
    huber_delta: float = Field(1.0, gt=0.0)


def sample_time_mask(batch_size: int, length: int, config: MaskedReconConfig, device=None) -> torch.Tensor:
    """``[B, T]`` bool, True where a time step is hidden: points plus spans, each about half the budget."""
    point_rate = config.mask_ratio * (1.0 - config.span_prob)
    mask = torch.rand(batch_size, length, device=device) < point_rate
    if config.span_prob > 0:
        # Span starts at rate budget/mean_span; each covers mean_span steps forward (clipped at T).
        start_rate = config.mask_ratio * config.span_prob / config.mean_span
        starts = (torch.rand(batch_size, length, device=device) < start_rate).to(torch.float32)
        kernel = torch.ones(1, 1, config.mean_span, device=device)
        covered = F.conv1d(F.pad(starts.unsqueeze(1), (config.mean_span - 1, 0)), kernel).squeeze(1) > 0
        mask |= covered
    return mask


RESTANDARDIZE_EPS = 1e-6
RESTANDARDIZE_CLIP = 10.0


def restandardize_visible(
    x: torch.Tensor, visible: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score ``x`` and ``target`` (``[B, T, C]``) by the mean/std of ``x`` over ``visible`` cells only.

    ``x`` is already an affine function of the raw window per (window, channel), so
    this equals z-scoring the raw window on the visible bars: nothing about the
    hidden cells enters the statistics. Returns (input ``[B, T, C]``, zero where not
    visible; target ``[B, T, C]`` on the same scale).
    """
    weight = visible.to(x.dtype)  # [B, T, C]
    count = weight.sum(dim=1, keepdim=True).clamp_min(1.0)  # [B, 1, C]
    mean = (x * weight).sum(dim=1, keepdim=True) / count
    var = (((x - mean) * weight) ** 2).sum(dim=1, keepdim=True) / count
    scale = var.sqrt() + RESTANDARDIZE_EPS  # [B, 1, C]
    x_in = torch.where(visible, (x - mean) / scale, torch.zeros_like(x)).clamp(-RESTANDARDIZE_CLIP, RESTANDARDIZE_CLIP)
    target_z = ((target - mean) / scale).clamp(-RESTANDARDIZE_CLIP, RESTANDARDIZE_CLIP)
    return x_in, target_z


def reconstruction_error(pred: torch.Tensor, target: torch.Tensor, config: MaskedReconConfig) -> torch.Tensor:
    """Elementwise error ``[B, T, C]`` of ``pred`` vs ``target`` (both ``[B, T, C]``)."""
    assert pred.shape == target.shape, f"pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
    if config.loss == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=config.huber_delta)
    return (pred - target).abs()


def masked_recon_loss(
    backbone: SSLBackbone,
    recon_head: nn.Module,
    view: View,
    target: View,
    config: MaskedReconConfig,
    time_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hide steps of ``view`` ([B, T, C]), reconstruct ``target`` ([B, T, C]) there.

    ``target`` must be aligned with ``view`` (step t of both is the same bar).
    Counted cells: masked in time AND observed in the input view AND observed in the target.
    ``time_mask`` ([B, T] bool, True = hidden) defaults to :func:`sample_time_mask`.
    """
    assert view.x.shape == target.x.shape, f"view {tuple(view.x.shape)} vs target {tuple(target.x.shape)}"
    batch_size, length, _ = view.x.shape
    if time_mask is None:
        time_mask = sample_time_mask(batch_size, length, config, device=view.x.device)
    assert time_mask.shape == (batch_size, length), f"time_mask {tuple(time_mask.shape)} vs [B, T] {batch_size, length}"
    hidden = time_mask.unsqueeze(-1) & view.observed
    visible = view.observed & ~hidden
    x_in, target_x = restandardize_visible(view.x, visible, target.x)
    h = backbone(x_in, visible)  # [B, T, D]
    pred = recon_head(h)  # [B, T, C]
    counted = (hidden & target.observed).to(pred.dtype)
    n_counted = counted.sum()
    err = reconstruction_error(pred, target_x, config)
    loss = (err * counted).sum() / n_counted.clamp_min(1.0)
    return loss, {"recon_loss": float(loss.detach()), "masked_cells": float(n_counted)}


@register_objective
class MaskedRecon(Objective):
    """Masked time-step reconstruction (Huber or L1) on censored shape features."""

    name = "masked_recon"
    n_views = 0  # reads only the clean window
    config_cls = MaskedReconConfig

    def __init__(self, backbone: SSLBackbone, config: MaskedReconConfig) -> None:
        super().__init__(backbone, config)
        self.recon_head = nn.Linear(backbone.embed_dim, backbone.input_channels)

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        # The mask is the augmentation: input and target are the same clean window, so positions align.
        loss, logs = masked_recon_loss(self.backbone, self.recon_head, batch.clean, batch.clean, self.config)
        return ObjectiveOutput(loss=loss, logs=logs)
