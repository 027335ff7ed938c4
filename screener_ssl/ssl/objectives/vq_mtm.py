"""VQ tokens + masked-token modeling: a learned patch codebook, and a causal encoder that predicts masked patch ids.

Two parts trained together on the clean (censored, z-scored) window:

1. **Tokenizer** (VQ-VAE, van den Oord, Vinyals & Kavukcuoglu, NeurIPS 2017; EMA codebook
   and dead-code restarts as in the reference ``sonnet/python/modules/nets/vqvae.py`` and
   Dhariwal et al. 2020, Jukebox): each patch of ``patch_len`` bars (values + observed mask)
   is encoded to ``z_e``, snapped to its nearest code ``e_k`` of a ``codebook_size`` codebook,
   and decoded back to the patch. Loss: reconstruction of the patch's observed cells +
   ``commitment_weight * ||z_e - sg(e_k)||^2``; the codebook itself follows an exponential
   moving average of the encoder outputs assigned to each code (no codebook gradient), the
   decoder's gradient reaches the encoder straight through. A code whose EMA count falls
   below ``dead_code_threshold`` is restarted on a random encoder output of the batch.
2. **Masked-token modeling** (BERT-style over patch ids, as in BEiT, Bao et al., ICLR 2022,
   with the tokenizer learned jointly): a share ``mask_ratio`` of patches is hidden from the
   backbone (value zeroed, ``observed`` False); the remaining visible cells are z-scored again
   on their own, so normalization statistics exclude the masked bars; the backbone's
   embedding at each masked patch's last bar predicts that patch's code id (cross-entropy
   against the stop-gradient tokenizer id). With a causal backbone that embedding sees only
   earlier bars (the patch itself hidden): "which motif comes next, given the past".

Patches are anchored at the decision bar (the last patch ends at t*); the decision bar's
censored fields are unobserved in its patch, so no token carries information after t*.
Codebook usage (perplexity, share of codes used) is logged every step and reported to the
collapse check through :meth:`VQMaskedTokenModeling.collapse_facts`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch, View
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective

RENORM_EPS = 1e-6
RENORM_CLIP = 10.0  # as the window gatherer's z-score


class VQMTMConfig(ObjectiveConfig):
    patch_len: int = Field(4, ge=1, le=32)  # bars per token
    codebook_size: int = Field(64, ge=2, le=8192)
    code_dim: int = Field(16, ge=2, le=512)
    tokenizer_hidden: int = Field(64, ge=4, le=1024)
    mask_ratio: float = Field(0.4, gt=0.0, lt=1.0)  # share of patches hidden from the backbone
    commitment_weight: float = Field(0.25, ge=0.0)  # beta of VQ-VAE
    recon_weight: float = Field(1.0, ge=0.0)
    token_weight: float = Field(1.0, gt=0.0)
    # Share of the run during which the tokenizer's encoder and codebook learn; then they freeze, so the
    # ids the backbone predicts stop moving (BEiT predicts the ids of a fixed, pretrained tokenizer).
    tokenizer_train_frac: float = Field(0.3, gt=0.0, le=1.0)
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0)
    dead_code_threshold: float = Field(1.0, ge=0.0)  # EMA count (patches per step) below which a code restarts
    # Collapse rule on the codebook (over the EMA counts at the end of training).
    min_codebook_perplexity: float = Field(4.0, ge=1.0)
    min_codebook_usage: float = Field(0.1, ge=0.0, le=1.0)


# --------------------------------------------------------------------------- patches and masks


def patchify(x: torch.Tensor, patch_len: int) -> tuple[torch.Tensor, int]:
    """``x [B, T, C]`` -> patches ``[B, N, patch_len, C]`` anchored at the last bar, and the first covered position.

    ``N = T // patch_len``; the first ``T mod patch_len`` positions (the oldest bars) are left out.
    """
    batch, length, channels = x.shape
    n_patches = length // patch_len
    assert n_patches >= 1, f"a window of {length} bars has no patch of {patch_len} bars"
    offset = length - n_patches * patch_len
    return x[:, offset:].reshape(batch, n_patches, patch_len, channels), offset


def patch_mask_to_time(patch_mask: torch.Tensor, patch_len: int, length: int) -> torch.Tensor:
    """``[B, N]`` patch mask -> ``[B, T]`` time mask (uncovered oldest positions are never masked)."""
    batch, n_patches = patch_mask.shape
    time = patch_mask.repeat_interleave(patch_len, dim=1)  # [B, N * patch_len]
    offset = length - n_patches * patch_len
    return F.pad(time, (offset, 0), value=False)


def patch_end_positions(length: int, patch_len: int, device: torch.device | None = None) -> torch.Tensor:
    """long ``[N]``: the position of each patch's last bar (the last patch ends at T-1)."""
    n_patches = length // patch_len
    offset = length - n_patches * patch_len
    return offset + patch_len * torch.arange(1, n_patches + 1, device=device) - 1


def sample_patch_mask(real: torch.Tensor, mask_ratio: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """``[B, N]`` bool: each real patch hidden with probability ``mask_ratio`` (padding patches never)."""
    draw = torch.rand(real.shape, generator=gen, device=real.device) < mask_ratio
    return draw & real


def renormalize_visible(x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Per-window, per-channel z-score of ``x [B, T, C]`` from the ``visible`` cells only; 0 elsewhere.

    The z-score is affine in its input, so applied to an already z-scored window it equals
    the z-score of the raw visible values: the statistics no longer see the masked bars.
    """
    v = visible.to(x.dtype)
    count = v.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (x * v).sum(dim=1, keepdim=True) / count
    centered = (x - mean) * v
    std = torch.sqrt((centered * centered).sum(dim=1, keepdim=True) / count)
    z = (centered / (std + RENORM_EPS)).clamp(-RENORM_CLIP, RENORM_CLIP)
    return torch.where(visible, z, torch.zeros_like(z))


# --------------------------------------------------------------------------- codebook


def nearest_code(z_e: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids ``[M]`` (long) of the nearest code in ``codebook [K, d]`` to each row of ``z_e [M, d]``, and the squared distances ``[M, K]``."""
    assert z_e.dim() == 2 and codebook.dim() == 2 and z_e.shape[1] == codebook.shape[1], (
        f"nearest_code: z_e {tuple(z_e.shape)} and codebook {tuple(codebook.shape)} must be [M, d] and [K, d]"
    )
    distances = (
        z_e.pow(2).sum(dim=1, keepdim=True) - 2.0 * z_e @ codebook.T + codebook.pow(2).sum(dim=1)[None, :]
    )
    return distances.argmin(dim=1), distances


def commitment_loss(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """``mean ||z_e - sg(z_q)||^2`` over rows of ``z_e, z_q [M, d]`` (the encoder commits to its code)."""
    assert z_e.shape == z_q.shape, f"commitment_loss: z_e {tuple(z_e.shape)} vs z_q {tuple(z_q.shape)}"
    return F.mse_loss(z_e, z_q.detach())


def codebook_perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of the code frequencies ``counts [K]``: 1 when one code takes everything, K when uniform."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


class EMACodebook(nn.Module):
    """A ``[K, d]`` codebook updated by an exponential moving average of its assigned inputs (no gradient).

    Buffers: ``codebook [K, d]``, ``cluster_size [K]`` (EMA count of assignments per step),
    ``embed_sum [K, d]`` (EMA sum of assigned inputs). Laplace smoothing keeps an empty
    code's centre finite.
    """

    def __init__(self, size: int, dim: int, decay: float, dead_threshold: float) -> None:
        super().__init__()
        self.size, self.dim, self.decay, self.dead_threshold = size, dim, decay, dead_threshold
        init = torch.randn(size, dim)
        self.register_buffer("codebook", init.clone())
        self.register_buffer("embed_sum", init.clone())
        self.register_buffer("cluster_size", torch.ones(size))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def update(self, z_e: torch.Tensor, ids: torch.Tensor, move_codes: bool = True) -> None:
        """One EMA step with encoder outputs ``z_e [M, d]`` assigned to ``ids [M]``.

        ``move_codes=False`` only tracks usage (the EMA counts) and leaves the codes where they are.
        """
        onehot = F.one_hot(ids, self.size).to(z_e.dtype)  # [M, K]
        counts = onehot.sum(dim=0)  # [K]
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        if not move_codes:
            return
        sums = onehot.T @ z_e  # [K, d]
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (n + self.size * 1e-5) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def initialize_from(self, z_e: torch.Tensor, gen: torch.Generator | None = None) -> None:
        """Seed every code on a random input row (k-means++-free data init): no code starts far from the data."""
        picks = torch.randint(0, z_e.shape[0], (self.size,), generator=gen, device=z_e.device)
        start = z_e[picks] + 1e-3 * torch.randn(self.size, self.dim, generator=gen, device=z_e.device)
        self.codebook.copy_(start)
        self.embed_sum.copy_(start)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def restart_dead(self, z_e: torch.Tensor, gen: torch.Generator | None = None) -> int:
        """Move every code whose EMA count is below the threshold onto a random row of ``z_e [M, d]``; return how many."""
        dead = self.cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0 or z_e.shape[0] == 0:
            return 0
        picks = torch.randint(0, z_e.shape[0], (n_dead,), generator=gen, device=z_e.device)
        fresh = z_e[picks]
        self.codebook[dead] = fresh
        # Restarted codes count as used once, so they get a few steps to attract inputs.
        self.embed_sum[dead] = fresh
        self.cluster_size[dead] = 1.0
        return n_dead

    def usage(self) -> dict[str, float]:
        """Perplexity and share of codes whose EMA count is at least the dead threshold."""
        counts = self.cluster_size.detach().float()
        return {
            "perplexity": codebook_perplexity(counts),
            "usage_share": float((counts >= max(self.dead_threshold, 1e-12)).float().mean()),
        }


class PatchTokenizer(nn.Module):
    """Patch ``[M, P, C]`` values + mask -> ``z_e [M, d]`` -> nearest code -> decoded patch ``[M, P, C]``."""

    def __init__(self, patch_len: int, channels: int, config: VQMTMConfig) -> None:
        super().__init__()
        flat = patch_len * channels
        self.patch_len, self.channels = patch_len, channels
        self.encoder = nn.Sequential(
            nn.Linear(2 * flat, config.tokenizer_hidden), nn.GELU(), nn.Linear(config.tokenizer_hidden, config.code_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.code_dim, config.tokenizer_hidden), nn.GELU(), nn.Linear(config.tokenizer_hidden, flat)
        )
        self.codebook = EMACodebook(config.codebook_size, config.code_dim, config.ema_decay, config.dead_code_threshold)

    def encode(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``values, observed [M, P, C]`` -> ``z_e [M, d]``."""
        m = values.shape[0]
        inputs = torch.cat([torch.where(observed, values, 0.0).reshape(m, -1), observed.reshape(m, -1).float()], 1)
        return self.encoder(inputs)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """``z_q [M, d]`` -> patch ``[M, P, C]``."""
        return self.decoder(z_q).view(-1, self.patch_len, self.channels)


def vq_losses(
    tokenizer: PatchTokenizer, values: torch.Tensor, observed: torch.Tensor, freeze_encoder: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenize real patches ``values, observed [M, P, C]``: (ids [M], z_e [M, d], recon loss, commitment loss).

    ``freeze_encoder``: the encoder runs without gradient (ids fixed); the decoder still learns.
    """
    with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze_encoder):
        z_e = tokenizer.encode(values, observed)
    ids, _ = nearest_code(z_e.detach(), tokenizer.codebook.codebook)
    z_q = tokenizer.codebook.codebook[ids]  # [M, d], a buffer: no codebook gradient (EMA updates it)
    z_st = z_e + (z_q - z_e).detach()  # straight-through: the decoder's gradient reaches the encoder
    recon = tokenizer.decode(z_st)
    cells = observed.float()
    recon_loss = ((recon - values) ** 2 * cells).sum() / cells.sum().clamp_min(1.0)
    return ids, z_e, recon_loss, commitment_loss(z_e, z_q)


def token_cross_entropy(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cross-entropy of ``logits [M, K]`` against code ids ``[M]`` and the top-1 accuracy."""
    assert logits.dim() == 2 and ids.shape == (logits.shape[0],), (
        f"token_cross_entropy: logits {tuple(logits.shape)} vs ids {tuple(ids.shape)}"
    )
    if ids.numel() == 0:
        return logits.sum() * 0.0, float("nan")
    return F.cross_entropy(logits, ids), float((logits.argmax(dim=1) == ids).float().mean())


def masked_backbone_input(view: View, time_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide ``time_mask [B, T]`` steps of ``view`` and re-z-score what stays visible: ``(x, visible) [B, T, C]``."""
    visible = view.observed & ~time_mask.unsqueeze(-1)
    return renormalize_visible(view.x, visible), visible


@register_objective
class VQMaskedTokenModeling(Objective):
    """VQ patch tokens (EMA codebook, commitment, dead-code restart) + masked-token prediction by the causal backbone."""

    name = "vq_mtm"
    n_views = 0  # reads only the clean window: the patch mask is the augmentation
    config_cls = VQMTMConfig

    def __init__(self, backbone: SSLBackbone, config: VQMTMConfig) -> None:
        super().__init__(backbone, config)
        self.tokenizer = PatchTokenizer(config.patch_len, backbone.input_channels, config)
        self.token_head = nn.Linear(backbone.embed_dim, config.codebook_size)
        self.register_buffer("progress", torch.tensor(0.0))  # share of training steps done (checkpointed)

    @property
    def tokenizer_frozen(self) -> bool:
        return float(self.progress) >= self.config.tokenizer_train_frac

    def on_after_step(self, step: int, total_steps: int) -> None:
        self.progress.fill_(step / max(total_steps, 1))

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        config = self.config
        clean = batch.clean
        batch_size, length, channels = clean.x.shape
        values, _ = patchify(clean.x, config.patch_len)  # [B, N, P, C]
        observed, _ = patchify(clean.observed, config.patch_len)
        n_patches = values.shape[1]
        real = observed.flatten(2).any(dim=2)  # [B, N]: a patch with at least one observed cell
        flat_values, flat_observed = values[real], observed[real]  # [M, P, C]

        codebook = self.tokenizer.codebook
        if self.training and not bool(codebook.initialized):
            with torch.no_grad():
                codebook.initialize_from(self.tokenizer.encode(flat_values, flat_observed))
        frozen = self.tokenizer_frozen
        ids, z_e, recon_loss, commit_loss = vq_losses(self.tokenizer, flat_values, flat_observed, frozen)
        restarts = 0
        if self.training:
            codebook.update(z_e.detach(), ids, move_codes=not frozen)
            if not frozen:
                restarts = codebook.restart_dead(z_e.detach())

        # Masked-token modeling: hide patches, re-normalize the rest, predict hidden patch ids.
        patch_mask = sample_patch_mask(real, config.mask_ratio)  # [B, N]
        time_mask = patch_mask_to_time(patch_mask, config.patch_len, length)  # [B, T]
        x_in, visible = masked_backbone_input(clean, time_mask)
        h = self.backbone(x_in, visible)  # [B, T, D]
        ends = patch_end_positions(length, config.patch_len, h.device)  # [N]; made there: no copy, no sync
        logits = self.token_head(h[:, ends])  # [B, N, K]
        id_grid = torch.zeros(batch_size, n_patches, dtype=torch.long, device=h.device)
        id_grid[real] = ids
        token_loss, token_acc = token_cross_entropy(logits[patch_mask], id_grid[patch_mask].detach())

        loss = config.token_weight * token_loss + config.recon_weight * recon_loss + (
            config.commitment_weight * commit_loss
        )
        batch_counts = torch.bincount(ids, minlength=config.codebook_size).float()
        usage = codebook.usage()
        logs = {
            "loss": float(loss.detach()),
            "token_ce": float(token_loss.detach()),
            "token_accuracy": token_acc,
            "token_ce_uniform": math.log(config.codebook_size),
            "recon_loss": float(recon_loss.detach()),
            "commitment": float(commit_loss.detach()),
            "masked_patches": float(patch_mask.sum()),
            "codebook_perplexity_batch": codebook_perplexity(batch_counts),
            "codebook_usage_batch": float((batch_counts > 0).float().mean()),
            "codebook_perplexity": usage["perplexity"],
            "codebook_usage": usage["usage_share"],
            "dead_code_restarts": float(restarts),
            "tokenizer_frozen": float(frozen),
        }
        return ObjectiveOutput(loss=loss, logs=logs)

    def collapse_facts(self) -> dict[str, dict[str, Any]]:
        """Codebook usage from the EMA assignment counts: collapsed when few codes carry the tokens."""
        config = self.config
        usage = self.tokenizer.codebook.usage()
        collapsed = usage["perplexity"] < config.min_codebook_perplexity or usage["usage_share"] < (
            config.min_codebook_usage
        )
        return {
            "codebook": {
                "codebook_size": config.codebook_size,
                "perplexity": usage["perplexity"],
                "usage_share": usage["usage_share"],
                "thresholds": {
                    "min_perplexity": config.min_codebook_perplexity,
                    "min_usage_share": config.min_codebook_usage,
                    "dead_code_threshold": config.dead_code_threshold,
                },
                "collapsed": bool(collapsed),
            }
        }
