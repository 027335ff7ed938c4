"""CPC: predict the encodings of future segments from the causal context at t*.

The context is the backbone's state at the decision bar t* of a view (bars up to t* only).
The targets are the next ``n_segments`` segments of ``segment_len`` bars after t*, handed
over by the sampler in ``extras`` (``future_x``, ``future_observed``: ``[B, H, C]`` with
``H = n_segments * segment_len``, z-scored with the context window's own statistics). Future
bars are targets only: they never enter the context's input, and the sampler draws them from
the sampled split (the train split in pretraining).

Two losses:

* ``infonce`` (default): one linear predictor ``W_k`` per step; the candidates for an anchor's
  step-k prediction are the step-k target encodings of every window in the batch. The
  multi-view negative design applies: futures of the same ticker whose span (window plus
  horizon) overlaps the anchor's are never negatives; soft negatives are an option.
* ``predictive`` (negative-free): BYOL-style regression of an EMA target network's encoding
  of each future segment (``2 - 2 cos``), with an MLP predictor per step.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives._heads import l2_normalized_std, mlp_head, require_views
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective
from screener_ssl.ssl.objectives.byol import ema_step, regression_loss
from screener_ssl.ssl.objectives.contrastive import info_nce_loss, same_ticker_overlap, soft_negative_weights


class CPCConfig(ObjectiveConfig):
    n_segments: int = Field(2, ge=1, le=8)  # future segments after t*, one prediction step each
    segment_len: int = Field(8, ge=2, le=64)  # bars per future segment
    loss: Literal["infonce", "predictive"] = "infonce"
    temperature: float = Field(0.1, ge=0.01, le=10.0)
    projector_hidden_dim: int = Field(128, ge=4, le=8192)
    projector_dim: int = Field(64, ge=4, le=8192)
    soft_negative_threshold: float | None = Field(None, ge=-1.0, le=1.0)  # cosine; None = off
    soft_negative_weight: float = Field(0.5, ge=0.0, le=1.0)
    base_momentum: float = Field(0.99, ge=0.0, le=1.0)  # predictive: EMA target, rises to 1 on a cosine

    @property
    def horizon(self) -> int:
        return self.n_segments * self.segment_len


def split_segments(future_x: torch.Tensor, n_segments: int) -> torch.Tensor:
    """``[B, K*L, C]`` -> ``[K*B, L, C]``: segment k of every window, k-major (rows k*B .. k*B+B-1)."""
    batch_size, horizon, channels = future_x.shape
    assert horizon % n_segments == 0, f"future of {horizon} bars does not split into {n_segments} segments"
    seg_len = horizon // n_segments
    return future_x.reshape(batch_size, n_segments, seg_len, channels).transpose(0, 1).reshape(-1, seg_len, channels)


def cpc_candidate_masks(
    ticker_id: torch.Tensor, decision_row: torch.Tensor, span: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positives, negatives)`` ``[B, B]`` bool for one prediction step.

    Anchor i's positive is its own future; the negatives are the other windows' futures except
    those of the same ticker whose span (``span`` = window + horizon bars) overlaps anchor i's.
    """
    overlap = same_ticker_overlap(ticker_id, decision_row, span)  # diagonal True
    positives = torch.eye(ticker_id.shape[0], dtype=torch.bool, device=ticker_id.device)
    return positives, ~overlap


def cpc_info_nce(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    config: CPCConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean InfoNCE over steps: ``predictions, targets: [K, B, P]``; masks ``[B, B]`` shared by the steps.

    ``loss_k,i = -log( e^{s_ii/t} / (e^{s_ii/t} + sum_j w_ij e^{s_ij/t}) )`` with ``s_ij`` the
    cosine of prediction i and target j at step k.
    """
    assert predictions.shape == targets.shape and predictions.dim() == 3, (
        f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} must both be [K, B, P]"
    )
    losses, accuracy, pos_sim, neg_sim = [], [], [], []
    for pred_k, target_k in zip(predictions, targets, strict=True):
        with torch.autocast(device_type=pred_k.device.type, enabled=False):
            similarity = F.normalize(pred_k.float(), dim=1) @ F.normalize(target_k.float(), dim=1).T  # [B, B]
        weights = soft_negative_weights(
            similarity, negatives, config.soft_negative_threshold, config.soft_negative_weight
        )
        losses.append(info_nce_loss(similarity, positives, weights, config.temperature).mean())
        sim = similarity.detach()
        # Top-1: the own future beats every counted negative.
        best_negative = torch.where(weights > 0, sim, torch.full_like(sim, -2.0)).max(dim=1).values
        accuracy.append(float((sim.diagonal() > best_negative).float().mean()))
        pos_sim.append(float(sim.diagonal().mean()))
        neg_sim.append(float(sim[negatives].mean()) if bool(negatives.any()) else float("nan"))
    k = len(losses)
    return torch.stack(losses).mean(), {
        "top1_accuracy": sum(accuracy) / k,
        "positive_similarity": sum(pos_sim) / k,
        "negative_similarity": sum(neg_sim) / k,
    }


@register_objective
class CPC(Objective):
    """Contrastive Predictive Coding (van den Oord et al., 2018, arXiv:1807.03748), after its
    InfoNCE-over-future-steps formulation with one bilinear predictor ``W_k`` per step
    (reference: facebookresearch/CPC_audio ``cpc/criterion/criterion.py``).

    Context ``c = backbone.pooled(view)`` at t*; targets ``z_k = backbone.pooled(segment_k)`` of
    each future segment encoded on its own (the same causal backbone, so ``z_k`` sees only bars
    of segment k). ``loss="predictive"`` swaps InfoNCE for BYOL's regression on an EMA target.
    Only ``self.backbone`` is the saved encoder.
    """

    name = "cpc"
    n_views = 1
    config_cls = CPCConfig

    def __init__(self, backbone: SSLBackbone, config: CPCConfig) -> None:
        super().__init__(backbone, config)
        dim, hidden, proj = backbone.embed_dim, config.projector_hidden_dim, config.projector_dim
        self.context_projector = mlp_head(dim, hidden, proj, 2)
        self.target_projector = mlp_head(dim, hidden, proj, 2)
        if config.loss == "infonce":
            self.predictors = nn.ModuleList(nn.Linear(proj, proj, bias=False) for _ in range(config.n_segments))
        else:
            self.predictors = nn.ModuleList(mlp_head(proj, hidden, proj, 2) for _ in range(config.n_segments))
            self.ema_backbone = copy.deepcopy(backbone)
            self.ema_projector = copy.deepcopy(self.target_projector)
            for p in (*self.ema_backbone.parameters(), *self.ema_projector.parameters()):
                p.requires_grad_(False)
        self.momentum = config.base_momentum

    @classmethod
    def sampler_settings(cls, config: dict) -> dict:
        """The sampler hands over the ``n_segments * segment_len`` bars after t* (train split only)."""
        return {"future_bars": cls.config_cls.model_validate(config).horizon}

    def context(self, batch: SSLBatch) -> torch.Tensor:
        """``[B, D]``: the backbone's state at t* of view 0 (bars <= t* only)."""
        view = batch.views[0]
        return self.backbone.pooled(view.x, view.observed)

    def _future(self, batch: SSLBatch) -> tuple[torch.Tensor, torch.Tensor]:
        future_x = batch.extras.get("future_x")
        future_obs = batch.extras.get("future_observed")
        if future_x is None or future_obs is None:
            raise ValueError(
                f"objective {self.name!r} needs the bars after t* in batch.extras['future_x'/'future_observed']; "
                f"build the sampler with future_bars={self.future_bars}"
            )
        expected = (batch.batch_size, self.future_bars, batch.clean.x.shape[2])
        assert tuple(future_x.shape) == expected and future_obs.shape == future_x.shape, (
            f"future_x {tuple(future_x.shape)} / future_observed {tuple(future_obs.shape)}, expected {expected}"
        )
        return future_x, future_obs

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        require_views(batch, self.n_views, self.name)
        config = self.config
        future_x, future_obs = self._future(batch)
        batch_size, k = batch.batch_size, config.n_segments
        c = self.context(batch)  # [B, D]
        q = self.context_projector(c)  # [B, P]
        predictions = torch.stack([w(q) for w in self.predictors])  # [K, B, P]
        seg_x, seg_obs = split_segments(future_x, k), split_segments(future_obs, k)  # [K*B, L, C]
        logs: dict[str, float] = {}
        if config.loss == "infonce":
            z = self.target_projector(self.backbone.pooled(seg_x, seg_obs)).view(k, batch_size, -1)  # [K, B, P]
            span = batch.views[0].x.shape[1] + config.horizon
            positives, negatives = cpc_candidate_masks(batch.ticker_id, batch.decision_row, span)
            loss, logs = cpc_info_nce(predictions, z, positives, negatives, config)
            off_self = ~positives
            logs["excluded_fraction"] = float((off_self & ~negatives).sum() / off_self.sum().clamp_min(1))
        else:
            with torch.no_grad():  # stop-gradient on the target branch
                z = self.ema_projector(self.ema_backbone.pooled(seg_x, seg_obs)).view(k, batch_size, -1)
            per_step = regression_loss(predictions.reshape(k * batch_size, -1), z.reshape(k * batch_size, -1))
            loss = per_step.mean()
            logs["momentum"] = self.momentum
            logs["target_std"] = float(l2_normalized_std(z.reshape(k * batch_size, -1)))
        logs.update(loss=float(loss.detach()), embedding_std=float(l2_normalized_std(c)))
        return ObjectiveOutput(loss=loss, logs=logs)

    def on_after_step(self, step: int, total_steps: int) -> None:
        if self.config.loss == "predictive":
            self.momentum = ema_step(
                step, total_steps, self.config.base_momentum,
                (self.ema_backbone, self.backbone), (self.ema_projector, self.target_projector),
            )
