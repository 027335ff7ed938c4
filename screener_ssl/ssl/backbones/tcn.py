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

The decision step needs one output per window, the last. :meth:`TCNBackbone.last_step`
evaluates only its receptive cone: block ``l`` (dilation ``d``) reads its input at
positions ``T-1 - m*d`` only, so on that strided subsequence each dilated convolution
becomes an undilated one and the second one needs only every other output (stride 2).
With the defaults that is 148 convolution positions instead of 8 x 64.
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


def _strided_conv(z: torch.Tensor, conv: nn.Conv1d, stride: int) -> torch.Tensor:
    """Undilated, unpadded ``conv`` over ``z: [B, n, H]`` (time-major) -> ``[B, (n - k) // stride + 1, H]``.

    One matmul over the unfolded taps: on the short strided sequences of the cone this is
    several times faster than ``conv1d``, and it needs no [B, H, T] transposes.
    """
    out_channels, in_channels, k = conv.weight.shape
    taps = z.unfold(1, k, stride)  # [B, n_out, H, k]
    weight = conv.weight.reshape(out_channels, in_channels * k)  # (H, k) order, as the unfold
    return torch.matmul(taps.reshape(*taps.shape[:2], in_channels * k), weight.t()) + conv.bias


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

    def cone_lengths(self) -> list[int]:
        """Positions each block reads, first block first (block ``l`` at stride ``2**l``); ends at 1 output.

        Block output positions ``n_out`` at stride ``2d`` need ``2 (n_out - 1) + k`` first-conv
        outputs at stride ``d`` and so ``2 (n_out - 1) + 2k - 1`` inputs; the first entry equals
        :attr:`receptive_field`.
        """
        k = self.config.kernel_size
        lengths, n_out = [], 1
        for _ in self.blocks:
            n_out = 2 * (n_out - 1) + 2 * k - 1
            lengths.append(n_out)
        return lengths[::-1]

    def last_step(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``x, observed: [B, T, C]`` -> ``[B, D]``, equal to ``forward(x, observed)[:, -1]``.

        Evaluates only the receptive cone of position ``T-1``. Positions before the window
        (``T`` shorter than the cone) are the zero padding of the full forward: each
        convolution's input is zeroed there, exactly as ``F.pad`` does.
        """
        inp = self.model_inputs(x, observed)  # [B, T, 2C]
        assert inp.shape[-1] == 2 * self.input_channels, (
            f"tcn backbone built for {self.input_channels} channels, got x with {x.shape[-1]}"
        )
        k = self.config.kernel_size
        steps = inp.shape[1]
        lengths = self.cone_lengths()
        need = lengths[0]
        h = self.input_proj(inp[:, max(steps - need, 0) :])  # [B, min(T, need), H]
        short = need - h.shape[1]
        if short > 0:
            h = F.pad(h, (0, 0, short, 0))  # rows before the window: masked below, never read
        # Positions (relative to the window start) of the rows of h; negative = before the window.
        position = torch.arange(steps - need, steps, device=h.device)
        for block in self.blocks:
            # h: [B, n_in, H] at stride d ending at T-1, so the dilated conv is undilated here.
            before = (position < 0).view(1, -1, 1)
            z = block.norm(h)  # [B, n_in, H]
            if short > 0:
                z = z.masked_fill(before, 0.0)
            z = block.dropout(F.gelu(_strided_conv(z, block.conv1.conv, stride=1)))  # [B, n_in - k + 1, H]
            if short > 0:
                z = z.masked_fill(before[:, k - 1 :], 0.0)
            # Only every other first-conv output feeds an output the next block reads.
            z = block.dropout(F.gelu(_strided_conv(z, block.conv2.conv, stride=2)))  # [B, n_out, H]
            h = h[:, 2 * (k - 1) :: 2] + z  # [B, n_out, H] at stride 2d
            position = position[2 * (k - 1) :: 2]
        assert h.shape[1] == 1, f"cone ended with {h.shape[1]} positions, expected 1"
        return self.output_proj(self.output_norm(h[:, 0]))  # [B, D]

    def pooled(
        self,
        x: torch.Tensor,
        observed: torch.Tensor,
        decision_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embedding at ``decision_pos`` ``[B, D]``; at the last position through :meth:`last_step`."""
        if decision_pos is None:
            return self.last_step(x, observed)
        return super().pooled(x, observed, decision_pos)
