"""SimSiam: a predictor maps one view's projection onto the other's, with a stop-gradient instead of negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives._heads import check_pair, l2_normalized_std, mlp_head, pool_views, require_views
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective


class SimSiamConfig(ObjectiveConfig):
    projector_dim: int = Field(128, ge=4, le=8192)  # paper: 2048 (also its hidden width)
    projector_layers: int = Field(3, ge=1, le=4)  # paper: 3
    predictor_hidden_dim: int = Field(32, ge=2, le=8192)  # bottleneck, paper: dim / 4


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-mean_b cos(prediction_b, stopgrad(target_b))`` of ``[B, P]`` inputs; ``target`` is detached here."""
    check_pair(prediction, target, "negative_cosine")
    return -F.cosine_similarity(prediction.float(), target.detach().float(), dim=1).mean()


@register_objective
class SimSiam(Objective):
    """SimSiam (Chen & He, CVPR 2021), following facebookresearch/simsiam ``simsiam/builder.py``.

    Projector (Linear-BN-ReLU blocks ending in a non-affine BN) and a bottleneck predictor; the
    symmetric loss ``(D(p_a, z_b) + D(p_b, z_a)) / 2`` with ``D`` the negative cosine and the
    projection side detached. The stop-gradient is what prevents collapse.
    """

    name = "simsiam"
    n_views = 2
    config_cls = SimSiamConfig

    def __init__(self, backbone: SSLBackbone, config: SimSiamConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp_head(
            backbone.embed_dim, config.projector_dim, config.projector_dim, config.projector_layers,
            last_batch_norm=True,
        )
        self.predictor = mlp_head(config.projector_dim, config.predictor_hidden_dim, config.projector_dim, 2)

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        require_views(batch, self.n_views, self.name)
        h_a, h_b = pool_views(self.backbone, batch.views[:2])
        z_a, z_b = self.projector(h_a), self.projector(h_b)
        p_a, p_b = self.predictor(z_a), self.predictor(z_b)
        loss = 0.5 * (negative_cosine(p_a, z_b) + negative_cosine(p_b, z_a))
        logs = {
            "loss": float(loss.detach()),
            "projection_std": float(l2_normalized_std(torch.cat([z_a, z_b]))),
            "embedding_std": float(l2_normalized_std(torch.cat([h_a, h_b]))),
        }
        return ObjectiveOutput(loss=loss, logs=logs)
