"""BYOL: an online network predicts a slowly moving (EMA) target network's projection of the other view."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives._heads import check_pair, l2_normalized_std, mlp_head, pool_views, require_views
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective


class BYOLConfig(ObjectiveConfig):
    projector_hidden_dim: int = Field(256, ge=4, le=8192)  # paper: 4096
    projector_dim: int = Field(64, ge=4, le=8192)  # paper: 256
    predictor_hidden_dim: int = Field(256, ge=4, le=8192)  # paper: 4096
    base_momentum: float = Field(0.996, ge=0.0, le=1.0)  # tau_base; tau rises to 1 on a cosine


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos(prediction, target)`` per row of ``[B, P]`` inputs -> ``[B]``: squared distance of unit vectors."""
    check_pair(prediction, target, "regression_loss")
    return 2.0 - 2.0 * F.cosine_similarity(prediction.float(), target.float(), dim=1)


def cosine_momentum(step: int, total_steps: int, base_momentum: float) -> float:
    """``tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``: ``tau_base`` at k = 0, 1 at k = K (k clipped to [0, K])."""
    assert total_steps >= 1, f"total_steps must be >= 1, got {total_steps}"
    k = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online``, parameter by parameter (buffers untouched)."""
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    assert len(target_params) == len(online_params), (
        f"EMA target has {len(target_params)} parameters, online network {len(online_params)}"
    )
    for t, o in zip(target_params, online_params, strict=True):
        assert t.shape == o.shape, f"EMA parameter shape {tuple(t.shape)} vs online {tuple(o.shape)}"
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)


def ema_step(step: int, total_steps: int, base_momentum: float, *pairs: tuple[nn.Module, nn.Module]) -> float:
    """After optimizer step ``step`` of ``total_steps``: the cosine-scheduled momentum, with every
    ``(target, online)`` pair's target moved toward its online network by it (:func:`ema_update`)."""
    momentum = cosine_momentum(step, total_steps, base_momentum)
    for target, online in pairs:
        ema_update(target, online, momentum)
    return momentum


@register_objective
class BYOL(Objective):
    """BYOL (Grill et al., NeurIPS 2020), following google-deepmind/deepmind-research ``byol/byol_experiment.py``.

    Online = ``self.backbone`` + projector + predictor; target = EMA copies of backbone and
    projector (no gradient, never seen by the optimizer). The loss is symmetric: each view's
    online prediction regresses the target projection of the other view. After each optimizer
    step :meth:`on_after_step` moves the target toward the online weights with a momentum that
    rises from ``base_momentum`` to 1 on a cosine. Only ``self.backbone`` is the saved encoder.
    """

    name = "byol"
    n_views = 2
    config_cls = BYOLConfig

    def __init__(self, backbone: SSLBackbone, config: BYOLConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp_head(backbone.embed_dim, config.projector_hidden_dim, config.projector_dim, 2)
        self.predictor = mlp_head(config.projector_dim, config.predictor_hidden_dim, config.projector_dim, 2)
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_parameters():
            p.requires_grad_(False)
        self.momentum = config.base_momentum  # the last momentum used, for logs

    def _target_parameters(self):
        yield from self.target_backbone.parameters()
        yield from self.target_projector.parameters()

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        require_views(batch, self.n_views, self.name)
        views = batch.views[:2]
        h_a, h_b = pool_views(self.backbone, views)
        p_a, p_b = self.predictor(self.projector(h_a)), self.predictor(self.projector(h_b))
        with torch.no_grad():  # stop-gradient on the target branch
            t_a, t_b = pool_views(self.target_backbone, views)
            z_a, z_b = self.target_projector(t_a), self.target_projector(t_b)
        loss = (regression_loss(p_a, z_b) + regression_loss(p_b, z_a)).mean()
        logs = {
            "loss": float(loss.detach()),
            "momentum": self.momentum,
            "embedding_std": float(l2_normalized_std(torch.cat([h_a, h_b]))),
        }
        return ObjectiveOutput(loss=loss, logs=logs)

    def on_after_step(self, step: int, total_steps: int) -> None:
        """EMA update after optimizer step ``step`` (0-based) of ``total_steps``."""
        self.momentum = ema_step(
            step, total_steps, self.config.base_momentum,
            (self.target_backbone, self.backbone), (self.target_projector, self.projector),
        )
