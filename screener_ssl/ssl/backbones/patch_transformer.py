"""Causal patch transformer with a per-timestep, causal output.

The window is cut into non-overlapping patches of ``patch_len`` bars aligned to
the END of the sequence (the decision bar is the last position, so the final
patch is complete); when ``T`` is not a multiple of ``patch_len`` the sequence is
left-padded with zero values and ``observed=False``. Each patch becomes one token
(linear embedding of its bars + a learned position embedding), and a transformer
encoder with a causal attention mask lets token ``p`` attend to tokens ``<= p``.

A patch token summarises bars up to the END of its patch, so it may only feed the
outputs at or after that end. The output at step ``t`` (offset ``j`` inside patch
``p``) therefore combines

* the transformer state of the last complete patch: token ``p`` when ``t`` closes
  the patch (``j = patch_len - 1``), else token ``p - 1`` (a learned start state
  for ``p = 0``), and
* a causal within-patch summary of bars ``start(p) .. t``: the partial patch
  embedding ``sum_{k <= j} W_k u_k`` (a cumulative sum of per-offset linear maps,
  so bars after ``t`` inside the patch carry zero weight), plus a learned offset
  embedding saying how much of the patch has been seen.

Positions are learned for up to ``MAX_PATCHES`` (512) patch tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone, register_backbone

MAX_PATCHES = 512


@register_backbone("patch_transformer")
class PatchTransformerBackbone(SSLBackbone):
    """Patch tokens + causal self-attention; per-step readout from the last complete patch and the partial one."""

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__(input_channels, config)
        hidden, patch_len = config.hidden_dim, config.patch_len
        if hidden % config.n_heads != 0:
            raise ValueError(
                f"patch_transformer: hidden_dim={hidden} must be divisible by n_heads={config.n_heads}"
            )
        step_features = 2 * input_channels
        self.patch_len = patch_len
        self.patch_embed = nn.Linear(patch_len * step_features, hidden)
        # Learned positions, small init as in ViT/BERT so they do not swamp the patch content.
        self.position = nn.Parameter(torch.randn(MAX_PATCHES, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden,
            nhead=config.n_heads,
            dim_feedforward=2 * hidden,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=config.n_layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False
        )
        # State standing in for "patch -1" before any patch is complete.
        self.start_state = nn.Parameter(torch.randn(hidden) * 0.02)
        # Per-offset weights W_k of the partial patch embedding: [patch_len, 2C, H].
        self.partial_weight = nn.Parameter(
            torch.randn(patch_len, step_features, hidden) / (patch_len * step_features) ** 0.5
        )
        self.partial_bias = nn.Parameter(torch.zeros(hidden))
        self.offset = nn.Parameter(torch.randn(patch_len, hidden) * 0.02)
        self.readout_norm = nn.LayerNorm(hidden)
        self.readout_mlp = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(2 * hidden, hidden)
        )
        self.output_norm = nn.LayerNorm(hidden)
        self.output_proj = nn.Linear(hidden, config.embed_dim)

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, C]`` float, ``observed: [B, T, C]`` bool -> ``[B, T, D]``."""
        inp = self.checked_inputs(x, observed)  # [B, T, 2C]
        batch, steps, features = inp.shape
        patch_len = self.patch_len
        n_patches = -(-steps // patch_len)
        if n_patches > MAX_PATCHES:
            raise ValueError(
                f"patch_transformer: T={steps} gives {n_patches} patches of {patch_len} bars, "
                f"more than the {MAX_PATCHES} learned positions"
            )
        # Left padding keeps patches aligned to the end; zeros == unobserved after model_inputs.
        pad = n_patches * patch_len - steps
        patches = F.pad(inp, (0, 0, pad, 0)).view(batch, n_patches, patch_len, features)  # [B, P, L, 2C]

        tokens = self.patch_embed(patches.flatten(2)) + self.position[:n_patches]  # [B, P, H]
        causal = nn.Transformer.generate_square_subsequent_mask(n_patches, device=inp.device, dtype=inp.dtype)
        states = self.encoder(tokens, mask=causal, is_causal=True)  # [B, P, H]; token p saw patches <= p

        start = self.start_state.expand(batch, 1, -1)
        previous = torch.cat([start, states[:, :-1]], dim=1)  # [B, P, H]: state of patch p-1
        # Context per offset: the previous patch's state, except at the closing bar where patch p is complete.
        closes = torch.zeros(patch_len, 1, dtype=torch.bool, device=inp.device)
        closes[-1] = True
        context = torch.where(closes, states.unsqueeze(2), previous.unsqueeze(2))  # [B, P, L, H]

        # Partial patch embedding: cumulative sum over offsets k <= j of W_k u_k.
        per_offset = torch.einsum("bplf,lfh->bplh", patches, self.partial_weight)  # [B, P, L, H]
        partial = per_offset.cumsum(dim=2) + self.partial_bias + self.offset  # [B, P, L, H]

        h = (context + partial).reshape(batch, n_patches * patch_len, -1)[:, pad:]  # [B, T, H]
        h = h + self.readout_mlp(self.readout_norm(h))
        return self.output_proj(self.output_norm(h))  # [B, T, D]
