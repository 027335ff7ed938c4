"""Masked reconstruction: the baseline objective.

Point and span masks over time; the masked steps are hidden from the encoder
(value zeroed, ``observed`` False) and a linear head reconstructs them from the
per-timestep embedding. With a causal backbone, the embedding at a masked step
sees only earlier steps, so the task is "fill in the hidden bar from the past".
The loss counts only bars that were masked AND visible in the clean window
(never censored decision-bar fields, never padding, never missing values).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives.base import (
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    SSLBatch,
    View,
    register_objective,
)


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
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hide steps of ``view`` ([B, T, C]), reconstruct ``target`` ([B, T, C]) there.

    Counted cells: masked in time AND observed in the input view AND observed in the target.
    """
    assert view.x.shape == target.x.shape, f"view {tuple(view.x.shape)} vs target {tuple(target.x.shape)}"
    batch_size, length, _ = view.x.shape
    time_mask = sample_time_mask(batch_size, length, config, device=view.x.device)
    hidden = time_mask.unsqueeze(-1) & view.observed
    visible = view.observed & ~hidden
    h = backbone(torch.where(visible, view.x, torch.zeros_like(view.x)), visible)  # [B, T, D]
    pred = recon_head(h)  # [B, T, C]
    counted = (hidden & target.observed).to(pred.dtype)
    n_counted = counted.sum()
    err = reconstruction_error(pred, target.x, config)
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
