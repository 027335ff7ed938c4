"""Causal dilated temporal convolutional network (the default backbone).

Residual blocks of two dilated ``Conv1d`` each, padded on the LEFT only by
``(kernel_size - 1) * dilation`` so that output step ``t`` is a function of input
steps ``<= t``; the dilation doubles per block (1, 2, 4, ...). Normalisation is a
per-timestep ``LayerNorm`` over channels, never a ``BatchNorm`` over time, which
would leak statistics of future bars into the past.

Receptive field: ``1 + 2 * (kernel_size - 1) * (2 ** n_layers - 1)`` bars, i.e.
91 bars with the defaults (kernel_size=4, n_layers=4, two convolutions per block):
more than the default 64-bar window, so the decision-bar embedding sees every bar
of it (with kernel_size=3 it would see 61 and miss the oldest 3).
See :attr:`TCNBackbone.receptive_field`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone, register_backbone


class CausalConv1d(nn.Module):
    """``Conv1d`` on ``[B, H, T]`` padded on the left only, so step ``t`` sees steps ``t - (k-1)*d .. t``."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.left_pad = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h: [B, H, T]`` -> ``[B, H, T]``."""
        return self.conv(F.pad(h, (self.left_pad, 0)))


class TemporalBlock(nn.Module):
    """Pre-norm residual block: LayerNorm -> causal conv -> GELU -> causal conv -> GELU, plus the input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv1 = CausalConv1d(channels, kernel_size, dilation)
        self.conv2 = CausalConv1d(channels, kernel_size, dilation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h: [B, T, H]`` -> ``[B, T, H]``."""
        z = self.norm(h).transpose(1, 2)  # [B, H, T] for Conv1d
        z = self.dropout(F.gelu(self.conv1(z)))
        z = self.dropout(F.gelu(self.conv2(z)))
        return h + z.transpose(1, 2)


@register_backbone("tcn")
class TCNBackbone(SSLBackbone):
    """Causal dilated TCN: ``Linear(2C -> H)``, ``n_layers`` temporal blocks, ``LayerNorm + Linear(H -> D)``."""

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__(input_channels, config)
        hidden = config.hidden_dim
        self.input_proj = nn.Linear(2 * input_channels, hidden)
        self.blocks = nn.ModuleList(
            TemporalBlock(hidden, config.kernel_size, dilation=2**i, dropout=config.dropout)
            for i in range(config.n_layers)
        )
        self.output_norm = nn.LayerNorm(hidden)
        self.output_proj = nn.Linear(hidden, config.embed_dim)

    @property
    def receptive_field(self) -> int:
        """Bars that output step ``t`` can see, ``t`` included: ``1 + 2 (k - 1) (2^L - 1)``."""
        k, n_layers = self.config.kernel_size, self.config.n_layers
        return 1 + 2 * (k - 1) * (2**n_layers - 1)

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, C]`` float, ``observed: [B, T, C]`` bool -> ``[B, T, D]``."""
        inp = self.model_inputs(x, observed)  # [B, T, 2C]
        assert inp.shape[-1] == 2 * self.input_channels, (
            f"tcn backbone built for {self.input_channels} channels, got x with {x.shape[-1]}"
        )
        h = self.input_proj(inp)  # [B, T, H]
        for block in self.blocks:
            h = block(h)
        return self.output_proj(self.output_norm(h))  # [B, T, D]
