"""Hybrid: a multi-view loss plus masked reconstruction on one shared backbone."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives._heads import pool_views, require_views
from screener_ssl.ssl.objectives.barlow import BarlowConfig, BarlowHead
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective
from screener_ssl.ssl.objectives.contrastive import ContrastiveHead, InfoNCEConfig
from screener_ssl.ssl.objectives.masked_recon import MaskedReconConfig, masked_recon_loss
from screener_ssl.ssl.objectives.vicreg import VICRegConfig, VICRegHead


class HybridConfig(ObjectiveConfig):
    multiview: Literal["vicreg", "barlow", "infonce"] = "vicreg"
    # lambda: loss = lambda * multiview + (1 - lambda) * reconstruction.
    multiview_weight: float = Field(0.5, ge=0.0, le=1.0)
    vicreg: VICRegConfig = Field(default_factory=VICRegConfig)
    barlow: BarlowConfig = Field(default_factory=BarlowConfig)
    infonce: InfoNCEConfig = Field(default_factory=InfoNCEConfig)
    recon: MaskedReconConfig = Field(default_factory=MaskedReconConfig)


@register_objective
class Hybrid(Objective):
    """Multi-view + masked reconstruction: ``L = lambda * L_multiview + (1 - lambda) * L_masked_recon``.

    The multi-view part is VICReg (default), Barlow Twins or InfoNCE on the two views; the
    reconstruction part is :func:`masked_recon_loss` on ``views[0]`` with ``views[0]`` itself
    as target: the view may be time-warped or cropped, so the clean window's bar t is not the
    view's bar t, and only the view's own bars align with what the encoder sees. Reconstruction
    keeps the embedding grounded in the bars while the views teach invariance. Both parts train
    ``self.backbone``; their heads are separate.
    """

    name = "hybrid"
    n_views = 2
    config_cls = HybridConfig

    def __init__(self, backbone: SSLBackbone, config: HybridConfig) -> None:
        super().__init__(backbone, config)
        self.multiview_head: nn.Module
        if config.multiview == "vicreg":
            self.multiview_head = VICRegHead(backbone.embed_dim, config.vicreg)
        elif config.multiview == "barlow":
            self.multiview_head = BarlowHead(backbone.embed_dim, config.barlow)
        else:
            self.multiview_head = ContrastiveHead(backbone.embed_dim, config.infonce)
        self.recon_head = nn.Linear(backbone.embed_dim, backbone.input_channels)

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        require_views(batch, self.n_views, self.name)
        config = self.config
        h_a, h_b = pool_views(self.backbone, batch.views[:2])
        if config.multiview == "infonce":
            window_length = batch.views[0].x.shape[1]
            multiview_loss, multiview_logs = self.multiview_head(
                h_a, h_b, batch.ticker_id, batch.decision_row, window_length
            )
        else:
            multiview_loss, multiview_logs = self.multiview_head(h_a, h_b)
        # Targets from the encoded view itself: aligned bar for bar (a warped view is not the clean window).
        recon_loss, recon_logs = masked_recon_loss(
            self.backbone, self.recon_head, batch.views[0], batch.views[0], config.recon
        )
        weight = config.multiview_weight
        loss = weight * multiview_loss + (1.0 - weight) * recon_loss
        logs = {f"{config.multiview}_{key}": value for key, value in multiview_logs.items()}
        logs.update(recon_logs)
        logs.update(
            loss=float(loss.detach()),
            multiview_loss=float(multiview_loss.detach()),
            recon_loss=float(recon_loss.detach()),
            embedding_std=multiview_logs["embedding_std"],
        )
        return ObjectiveOutput(loss=loss, logs=logs)
