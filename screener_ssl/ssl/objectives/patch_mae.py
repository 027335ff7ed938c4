"""Patch-MAE: hide contiguous runs of patches, reconstruct them with a small bidirectional decoder.

The window is cut into patches of ``patch_len`` bars aligned to its END (the decision bar
closes the last patch; a partial first patch is left-padded). A share ``mask_ratio`` of the
patches that hold any observed cell is hidden, in contiguous runs (uniform noise smoothed
over ``span_patches`` patches, top share masked). The causal backbone is unchanged: hidden
bars are zeroed with ``observed`` False, so it sees only the visible patches. Each visible
patch becomes a decoder token (the backbone state at the patch's last bar); hidden patches
get a learned mask token; a small transformer WITHOUT a causal mask (it is discarded after
pretraining) predicts each hidden patch: its bars (``target="raw"``) or an EMA copy of the
backbone's state at the patch's end on the unmasked window (``target="latent"``).

Normalization excludes the hidden bars: the encoder's input is re-standardized per channel
with the mean and std of the window's VISIBLE cells only (an affine map, so the sampler's
z-score cancels exactly up to its +-10 clip). With the sampler's statistics, which include
the hidden bars, the visible z-scores would sum to minus the hidden ones and give the target
away. The raw target is the clean window on the sampler's scale (``target_scale="window"``,
bounded like masked_recon's target) or on the visible statistics (``"visible"``); either way
the encoder input carries nothing of the hidden bars. The loss counts only cells that are
hidden, observed (not censored, missing or padding) and whose channel has at least two
visible cells.

Optional: a small InfoNCE term between two independent patch masks of the same window
(``contrastive_weight`` > 0), with the multi-view family's negative design.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from screener_ssl.data.windows import ZSCORE_CLIP, ZSCORE_EPS
from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives._heads import l2_normalized_std
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective
from screener_ssl.ssl.objectives.byol import ema_step
from screener_ssl.ssl.objectives.contrastive import ContrastiveHead, InfoNCEConfig

MAX_DECODER_PATCHES = 512


class PatchMAEConfig(ObjectiveConfig):
    patch_len: int = Field(8, ge=2, le=64)  # bars per patch; 4-16 suit 64-bar windows
    mask_ratio: float = Field(0.5, ge=0.05, le=0.95)  # share of (non-empty) patches hidden; 0.3-0.7 typical
    span_patches: int = Field(2, ge=1, le=32)  # noise smoothing width: 1 = independent patches, more = longer runs
    target: Literal["raw", "latent"] = "raw"
    # Scale of the raw target: "window" = the sampler's z-score over every observed cell (bounded,
    # like masked_recon's), "visible" = the encoder input's visible-cell statistics.
    target_scale: Literal["window", "visible"] = "window"
    decoder_dim: int = Field(64, ge=8, le=1024)
    decoder_layers: int = Field(1, ge=1, le=4)
    decoder_heads: int = Field(4, ge=1, le=16)
    loss: Literal["huber", "l1", "mse"] = "huber"
    huber_delta: float = Field(1.0, gt=0.0)
    base_momentum: float = Field(0.996, ge=0.0, le=1.0)  # latent target: EMA momentum, rises to 1 on a cosine
    contrastive_weight: float = Field(0.0, ge=0.0, le=1.0)  # loss = (1 - w) * recon + w * InfoNCE(two masks)
    contrastive: InfoNCEConfig = Field(default_factory=lambda: InfoNCEConfig(projector_dim=64))


def patch_layout(length: int, patch_len: int) -> tuple[int, int]:
    """``(n_patches, pad)``: patches aligned to the end of ``length`` steps, ``pad`` steps of left padding."""
    n_patches = math.ceil(length / patch_len)
    return n_patches, n_patches * patch_len - length


def patch_of_step(length: int, patch_len: int, device=None) -> torch.Tensor:
    """long ``[T]``: the patch each time step belongs to."""
    _, pad = patch_layout(length, patch_len)
    return (torch.arange(length, device=device) + pad) // patch_len


def patch_end_steps(length: int, patch_len: int, device=None) -> torch.Tensor:
    """long ``[N]``: the last time step of each patch (the last patch ends at ``T - 1``)."""
    n_patches, pad = patch_layout(length, patch_len)
    return torch.arange(n_patches, device=device) * patch_len + patch_len - 1 - pad


def sample_patch_mask(valid: torch.Tensor, mask_ratio: float, span_patches: int) -> torch.Tensor:
    """``[B, N]`` bool, True = hidden, from ``valid: [B, N]`` bool (patches holding an observed cell).

    Exactly ``round(mask_ratio * n_valid)`` valid patches per row are hidden, at least one and
    at least one left visible when a row has two or more. Uniform noise box-smoothed over
    ``span_patches`` patches ranks them, so neighbours tend to be hidden together.
    """
    assert valid.dim() == 2, f"valid must be [B, N], got {tuple(valid.shape)}"
    batch_size, n_patches = valid.shape
    noise = torch.rand(batch_size, n_patches, device=valid.device)
    if span_patches > 1:
        left = (span_patches - 1) // 2
        padded = F.pad(noise.unsqueeze(1), (left, span_patches - 1 - left), mode="replicate")
        noise = F.avg_pool1d(padded, span_patches, stride=1).squeeze(1)
    noise = torch.where(valid, noise, torch.full_like(noise, -1.0))
    rank = noise.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = highest noise
    n_valid = valid.sum(dim=1)
    n_hidden = torch.round(mask_ratio * n_valid.float()).long()
    n_hidden = torch.minimum(torch.clamp(n_hidden, min=1), (n_valid - 1).clamp_min(1))
    return (rank < n_hidden[:, None]) & valid


def visible_standardize(
    x: torch.Tensor, observed: torch.Tensor, visible: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-standardize ``x: [B, T, C]`` per window and channel with statistics of ``visible`` cells only.

    Returns ``(z, channel_ok)``: ``z [B, T, C]`` for every ``observed`` cell (zero elsewhere,
    clipped to +-10) and ``channel_ok [B, 1, C]`` bool, True where a channel has two or more
    visible cells (else its statistics are undefined and its cells are not counted).
    """
    assert x.shape == observed.shape == visible.shape and x.dim() == 3, (
        f"x {tuple(x.shape)}, observed {tuple(observed.shape)}, visible {tuple(visible.shape)} must be [B, T, C]"
    )
    vis = visible.to(x.dtype)
    count = vis.sum(dim=1, keepdim=True)
    safe = count.clamp_min(1.0)
    mean = (x * vis).sum(dim=1, keepdim=True) / safe
    var = (((x - mean) * vis) ** 2).sum(dim=1, keepdim=True) / safe
    z = torch.clamp((x - mean) / (var.sqrt() + ZSCORE_EPS), -ZSCORE_CLIP, ZSCORE_CLIP)
    return torch.where(observed, z, torch.zeros_like(z)), count >= 2


def mae_inputs_and_targets(
    x: torch.Tensor, observed: torch.Tensor, hidden_steps: torch.Tensor, target_scale: str = "visible"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder input and reconstruction target of a clean window ``x, observed: [B, T, C]``.

    ``hidden_steps: [B, T]`` bool. Returns ``(x_in, visible, target, counted)``, all ``[B, T, C]``:
    ``x_in`` is the window under its visible cells' statistics, zero off ``visible``;
    ``target`` is every observed cell under the same statistics (``target_scale="visible"``)
    or ``x`` itself (``"window"``: the sampler's z-score); ``counted`` = hidden & observed &
    the channel has >= 2 visible cells.
    """
    assert target_scale in ("visible", "window"), f"unknown target_scale {target_scale!r}"
    hidden = hidden_steps.unsqueeze(-1) & observed
    visible = observed & ~hidden
    z_visible, channel_ok = visible_standardize(x, observed, visible)
    x_in = torch.where(visible, z_visible, torch.zeros_like(z_visible))
    target = z_visible if target_scale == "visible" else torch.where(observed, x, torch.zeros_like(x))
    return x_in, visible, target, hidden & channel_ok


def elementwise_error(pred: torch.Tensor, target: torch.Tensor, config: PatchMAEConfig) -> torch.Tensor:
    assert pred.shape == target.shape, f"pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
    if config.loss == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=config.huber_delta)
    if config.loss == "l1":
        return (pred - target).abs()
    return (pred - target) ** 2


class PatchDecoder(nn.Module):
    """Visible-patch tokens + mask tokens -> per-patch predictions, attending both ways (discarded downstream)."""

    def __init__(self, embed_dim: int, out_dim: int, config: PatchMAEConfig) -> None:
        super().__init__()
        width = config.decoder_dim
        assert width % config.decoder_heads == 0, (
            f"decoder_dim={width} must be a multiple of decoder_heads={config.decoder_heads}"
        )
        self.embed = nn.Linear(embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.position = nn.Parameter(torch.randn(MAX_DECODER_PATCHES, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, config.decoder_heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, config.decoder_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``tokens: [B, N, D]`` backbone states at patch ends; ``hidden, valid: [B, N]`` bool -> ``[B, N, out]``."""
        n_patches = tokens.shape[1]
        if n_patches > MAX_DECODER_PATCHES:
            raise ValueError(f"{n_patches} patches exceed the decoder's {MAX_DECODER_PATCHES} positions")
        u = torch.where(hidden.unsqueeze(-1), self.mask_token.expand_as(self.embed(tokens)), self.embed(tokens))
        u = u + self.position[:n_patches]
        # Empty (all-padding) patches are ignored as keys; every row keeps at least one valid patch.
        return self.out(self.norm(self.blocks(u, src_key_padding_mask=~valid)))


@register_objective
class PatchMAE(Objective):
    """Patch masked autoencoding (He et al., MAE, CVPR 2022, after facebookresearch/mae ``models_mae.py``;
    for series Li et al., Ti-MAE, arXiv:2301.08871), on a causal backbone.

    The backbone encodes the window with the hidden patches removed (zeroed, ``observed``
    False); :class:`PatchDecoder` reconstructs the hidden patches. ``target="latent"`` regresses
    layer-normalized states of an EMA copy of the backbone (data2vec-style) instead of the bars.
    Only ``self.backbone`` is the saved encoder; it stays causal.
    """

    name = "patch_mae"
    n_views = 0  # reads only the clean window: the patch mask is the augmentation
    config_cls = PatchMAEConfig

    def __init__(self, backbone: SSLBackbone, config: PatchMAEConfig) -> None:
        super().__init__(backbone, config)
        channels, dim = backbone.input_channels, backbone.embed_dim
        out_dim = config.patch_len * channels if config.target == "raw" else dim
        self.decoder = PatchDecoder(dim, out_dim, config)
        if config.target == "latent":
            self.ema_backbone = copy.deepcopy(backbone)
            for p in self.ema_backbone.parameters():
                p.requires_grad_(False)
        if config.contrastive_weight > 0:
            self.contrastive_head = ContrastiveHead(dim, config.contrastive)
        self.momentum = config.base_momentum

    def _mask(self, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(hidden_patches [B, N], valid_patches [B, N], hidden_steps [B, T])`` for ``observed [B, T, C]``."""
        batch_size, length, _ = observed.shape
        n_patches, _ = patch_layout(length, self.config.patch_len)
        step_patch = patch_of_step(length, self.config.patch_len, observed.device)  # [T]
        any_observed = observed.any(dim=-1).to(torch.float32)  # [B, T]
        per_patch = torch.zeros(batch_size, n_patches, device=observed.device).index_add_(1, step_patch, any_observed)
        valid = per_patch > 0
        hidden = sample_patch_mask(valid, self.config.mask_ratio, self.config.span_patches)
        return hidden, valid, hidden[:, step_patch]

    def _reconstruct(self, x: torch.Tensor, observed: torch.Tensor):
        """One masked pass over a clean window ``[B, T, C]``: (loss, logs, pooled embedding ``[B, D]``)."""
        config = self.config
        batch_size, length, channels = x.shape
        hidden_patches, valid, hidden_steps = self._mask(observed)
        x_in, visible, target, counted = mae_inputs_and_targets(x, observed, hidden_steps, config.target_scale)
        h = self.backbone(x_in, visible)  # [B, T, D]; causal, sees visible bars only
        ends = patch_end_steps(length, config.patch_len, x.device)  # [N], all >= 0 (pad < patch_len)
        tokens = h[:, ends]  # [B, N, D]
        pred = self.decoder(tokens, hidden_patches, valid)  # [B, N, out]
        if config.target == "raw":
            n_patches, pad = patch_layout(length, config.patch_len)
            pred_steps = pred.view(batch_size, n_patches * config.patch_len, channels)[:, pad:]  # [B, T, C]
            weight = counted.to(pred.dtype)
            err = elementwise_error(pred_steps, target, config)
        else:
            with torch.no_grad():
                latent = self.ema_backbone(x, observed)[:, ends]  # [B, N, D], the whole clean window
                latent = F.layer_norm(latent, latent.shape[-1:])
            weight = (hidden_patches & valid).to(pred.dtype).unsqueeze(-1).expand_as(pred)
            err = elementwise_error(pred, latent, config)
        n_counted = weight.sum()
        loss = (err * weight).sum() / n_counted.clamp_min(1.0)
        logs = {
            "recon_loss": float(loss.detach()),
            "counted_cells": float(n_counted),
            "hidden_patch_share": float(hidden_patches.sum() / valid.sum().clamp_min(1)),
        }
        return loss, logs, h[:, -1]

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        config = self.config
        clean = batch.clean
        recon_loss, logs, pooled_a = self._reconstruct(clean.x, clean.observed)
        loss = recon_loss
        if config.contrastive_weight > 0:
            # A second, independent patch mask of the same window is the positive view; its
            # reconstruction counts too (both passes are paid for).
            recon_b, _, pooled_b = self._reconstruct(clean.x, clean.observed)
            recon_loss = 0.5 * (recon_loss + recon_b)
            logs["recon_loss"] = float(recon_loss.detach())
            window_length = clean.x.shape[1]
            contrastive_loss, contrastive_logs = self.contrastive_head(
                pooled_a, pooled_b, batch.ticker_id, batch.decision_row, window_length
            )
            loss = (1.0 - config.contrastive_weight) * recon_loss + config.contrastive_weight * contrastive_loss
            logs.update({f"infonce_{k}": v for k, v in contrastive_logs.items()})
            logs["contrastive_loss"] = float(contrastive_loss.detach())
        logs.update(loss=float(loss.detach()), embedding_std=float(l2_normalized_std(pooled_a)))
        return ObjectiveOutput(loss=loss, logs=logs)

    def on_after_step(self, step: int, total_steps: int) -> None:
        if self.config.target == "latent":
            self.momentum = ema_step(step, total_steps, self.config.base_momentum, (self.ema_backbone, self.backbone))
