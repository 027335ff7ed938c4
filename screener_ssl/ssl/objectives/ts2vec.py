"""TS2Vec: hierarchical contrastive loss between two overlapping crops of each window, made causal."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives._heads import l2_normalized_std, require_views
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective


class TS2VecConfig(ObjectiveConfig):
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the instance-wise term; 1 - alpha: temporal
    temporal_unit: int = Field(0, ge=0, le=6)  # temporal contrast only at scales >= 2**temporal_unit
    mask_prob: float = Field(0.5, ge=0.0, lt=1.0)  # timestamp masking: P(a step of a crop is hidden)
    min_overlap: int = Field(4, ge=2, le=1024)  # shortest overlap of the two crops, in bars
    # Windows with fewer visible bars (t* near a ticker's first bar) sit out the step, so one
    # short history does not shrink every crop of the batch.
    min_region: int = Field(16, ge=2, le=4096)


def _off_diagonal_logits(sim: torch.Tensor) -> torch.Tensor:
    """``sim [G, 2n, 2n]`` -> ``[G, 2n, 2n-1]``: each row without its own diagonal entry (reference trick)."""
    logits = torch.tril(sim, diagonal=-1)[:, :, :-1]
    return logits + torch.triu(sim, diagonal=1)[:, :, 1:]


def instance_contrastive_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """At each timestamp, the same window's other crop is the positive; other windows are negatives.

    ``z_a, z_b: [B, T, D]`` (crop a and crop b at the same overlapping timestamps) -> scalar.
    """
    assert z_a.shape == z_b.shape and z_a.dim() == 3, f"expected two equal [B, T, D], got {z_a.shape}, {z_b.shape}"
    batch = z_a.shape[0]
    if batch == 1:
        return z_a.new_zeros(())
    z = torch.cat([z_a, z_b], dim=0).transpose(0, 1)  # [T, 2B, D]
    nll = -F.log_softmax(_off_diagonal_logits(z @ z.transpose(1, 2)), dim=-1)  # [T, 2B, 2B-1]
    i = torch.arange(batch, device=z_a.device)
    return (nll[:, i, batch + i - 1].mean() + nll[:, batch + i, i].mean()) / 2


def temporal_contrastive_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Within each window, the other crop at the same timestamp is the positive; other timestamps are negatives.

    ``z_a, z_b: [B, T, D]`` -> scalar.
    """
    assert z_a.shape == z_b.shape and z_a.dim() == 3, f"expected two equal [B, T, D], got {z_a.shape}, {z_b.shape}"
    steps = z_a.shape[1]
    if steps == 1:
        return z_a.new_zeros(())
    z = torch.cat([z_a, z_b], dim=1)  # [B, 2T, D]
    nll = -F.log_softmax(_off_diagonal_logits(z @ z.transpose(1, 2)), dim=-1)  # [B, 2T, 2T-1]
    t = torch.arange(steps, device=z_a.device)
    return (nll[:, t, steps + t - 1].mean() + nll[:, steps + t, t].mean()) / 2


def hierarchical_contrastive_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, alpha: float = 0.5, temporal_unit: int = 0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Instance + temporal contrast at every scale of a max-pool-by-2 pyramid, averaged over scales.

    ``z_a, z_b: [B, T, D]`` -> (scalar loss, logs). Pooling happens inside the loss only, on
    timestamps that are all at or before the decision bar: it never feeds the encoder.
    """
    assert z_a.shape == z_b.shape and z_a.dim() == 3, f"expected two equal [B, T, D], got {z_a.shape}, {z_b.shape}"
    with torch.autocast(device_type=z_a.device.type, enabled=False):
        z_a, z_b = z_a.float(), z_b.float()
        loss = z_a.new_zeros(())
        instance_total = temporal_total = 0.0
        depth = 0
        while z_a.shape[1] > 1:
            if alpha != 0:
                inst = instance_contrastive_loss(z_a, z_b)
                loss = loss + alpha * inst
                instance_total += float(inst.detach())
            if depth >= temporal_unit and alpha != 1:
                temp = temporal_contrastive_loss(z_a, z_b)
                loss = loss + (1 - alpha) * temp
                temporal_total += float(temp.detach())
            depth += 1
            z_a = F.max_pool1d(z_a.transpose(1, 2), kernel_size=2).transpose(1, 2)
            z_b = F.max_pool1d(z_b.transpose(1, 2), kernel_size=2).transpose(1, 2)
        if z_a.shape[1] == 1:
            if alpha != 0:
                inst = instance_contrastive_loss(z_a, z_b)
                loss = loss + alpha * inst
                instance_total += float(inst.detach())
            depth += 1
    return loss / depth, {"instance": instance_total / depth, "temporal": temporal_total / depth, "scales": depth}


def first_visible(observed: torch.Tensor) -> torch.Tensor:
    """``observed [B, T, C]`` -> long ``[B]``: first step with any channel observed (T when none is)."""
    any_obs = observed.any(dim=2)  # [B, T]
    steps = torch.full_like(any_obs[:, 0], observed.shape[1], dtype=torch.long)
    return torch.where(any_obs.any(dim=1), any_obs.long().argmax(dim=1), steps)


def gather_crop(x: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """Rows ``x[b, start[b] : start[b] + length]`` of ``x: [B, T, C]`` -> ``[B, length, C]``."""
    assert x.dim() == 3, f"gather_crop expects [B, T, C], got {tuple(x.shape)}"
    idx = start.view(-1, 1) + torch.arange(length, device=x.device).view(1, -1)  # [B, L]
    assert int(idx.min()) >= 0 and int(idx.max()) < x.shape[1], "crop outside the window"
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


@register_objective
class TS2Vec(Objective):
    """TS2Vec (Yue et al., "TS2Vec: Towards Universal Representation of Time Series", AAAI 2022),
    following zhihanyue/ts2vec ``ts2vec.py`` and ``models/losses.py``.

    Each step draws, per batch, an overlap ``[a2, b1)`` and two crops around it,
    crop 1 = ``[a1, b1)`` and crop 2 = ``[a2, b2)`` with ``a1 <= a2 < b1 <= b2``, shifted by
    a per-window offset, all inside the observed part of the window: every crop ends at
    or before the decision bar t*, which stays the window's last position. Each crop gets
    timestamp masking (a hidden step is zeroed and marked unobserved, so the backbone's
    mask channel knows), goes through the causal backbone, and the embeddings of the
    overlap in the two contexts (contextual consistency) are contrasted instance-wise
    and temporally at every scale of max pooling. The reference masks the latent after
    its input projection; the backbones here are opaque, so the input is masked. With a
    causal backbone the crops' right ends only decide where the overlap ends.
    Augmentations: cropping and masking only (the paper's), on the clean censored window.
    """

    name = "ts2vec"
    n_views = 1
    config_cls = TS2VecConfig

    def __init__(self, backbone: SSLBackbone, config: TS2VecConfig) -> None:
        super().__init__(backbone, config)

    def _crop_geometry(self, observed: torch.Tensor) -> tuple[int, int, int, int, int, torch.Tensor]:
        """(a1, a2, b1, b2, region_start, offset [B]) in window positions; drawn from torch's global RNG."""
        cfg = self.config
        batch, steps, _ = observed.shape
        region_start = int(first_visible(observed).max())  # every window is observed from here to its end
        region = steps - region_start
        shortest = max(cfg.min_overlap, 2 ** (cfg.temporal_unit + 1))
        if region < shortest:
            raise ValueError(
                f"ts2vec: only {region} bars are observed in every window of the batch; the overlap needs "
                f"{shortest} (min_overlap={cfg.min_overlap}, temporal_unit={cfg.temporal_unit})"
            )

        def randint(lo: int, hi: int) -> int:  # uniform on [lo, hi)
            return int(torch.randint(lo, hi, ()))

        overlap = randint(shortest, region + 1)
        a2 = randint(0, region - overlap + 1)
        b1 = a2 + overlap
        a1 = randint(0, a2 + 1)
        b2 = randint(b1, region + 1)
        # Shift every window's crops by its own offset, staying inside [0, region).
        offset = torch.randint(-a1, region - b2 + 1, (batch,)).to(observed.device)
        return a1, a2, b1, b2, region_start, offset

    def _mask_timestamps(self, observed: torch.Tensor) -> torch.Tensor:
        if self.config.mask_prob <= 0:
            return observed
        keep = torch.rand(observed.shape[:2], device=observed.device) >= self.config.mask_prob  # [B, L]
        return observed & keep.unsqueeze(-1)

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        require_views(batch, self.n_views, self.name)
        x, observed = batch.clean.x, batch.clean.observed  # [B, T, C]
        keep = (x.shape[1] - first_visible(observed)) >= min(self.config.min_region, x.shape[1])  # [B]
        if int(keep.sum()) < 2:
            raise ValueError(
                f"ts2vec: only {int(keep.sum())} of {x.shape[0]} windows have >= {self.config.min_region} "
                "visible bars (min_region); need 2"
            )
        x, observed = x[keep], observed[keep]
        a1, a2, b1, b2, region_start, offset = self._crop_geometry(observed)
        base = region_start + offset  # [B]
        x1, o1 = gather_crop(x, base + a1, b1 - a1), gather_crop(observed, base + a1, b1 - a1)  # [B, b1-a1, C]
        x2, o2 = gather_crop(x, base + a2, b2 - a2), gather_crop(observed, base + a2, b2 - a2)  # [B, b2-a2, C]
        o1, o2 = self._mask_timestamps(o1), self._mask_timestamps(o2)
        x1, x2 = torch.where(o1, x1, torch.zeros_like(x1)), torch.where(o2, x2, torch.zeros_like(x2))
        overlap = b1 - a2
        z1 = self.backbone(x1, o1)[:, -overlap:]  # [B, overlap, D]: crop 1's last steps are the overlap
        z2 = self.backbone(x2, o2)[:, :overlap]  # [B, overlap, D]: crop 2's first steps are the overlap
        loss, logs = hierarchical_contrastive_loss(z1, z2, self.config.alpha, self.config.temporal_unit)
        logs["overlap"] = float(overlap)
        logs["windows_used"] = float(keep.sum())
        logs["embedding_std"] = float(l2_normalized_std(z1[:, -1].detach()))
        logs["loss"] = float(loss.detach())
        return ObjectiveOutput(loss=loss, logs=logs)
