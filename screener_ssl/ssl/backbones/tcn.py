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
Positions before the window are the zero padding and are skipped. With the defaults and
a 64-bar window that is 172 convolution positions instead of 8 x 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from screener_ssl.ssl.backbones.base import BackboneConfig, StackedBackbone, register_backbone


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


def _causal_taps(z: torch.Tensor, conv: nn.Conv1d, stride: int, n_out: int) -> torch.Tensor:
    """Undilated causal ``conv`` of ``z: [B, n, H]`` (time-major) at rows ``n-1, n-1-stride, ...``.

    Returns ``[B, n_out, O]``, oldest first. Rows before ``z[0]`` are the zero padding of
    the full forward. A time-major ``[B, n, H]`` tensor *is* a channels-last
    ``[B, H, 1, n]`` image, so the convolution runs as a ``conv2d`` on that view (no
    transpose, no im2col copy); its symmetric padding ``p`` is chosen so that the output
    steps end exactly on the rows wanted, and the few outputs past row ``n-1`` that the
    right-hand padding adds are dropped.
    """
    k = conv.kernel_size[0]
    n = z.shape[1]
    last = (n - 1) // stride  # output j ends on row j * stride + (n - 1) % stride
    first = last - n_out + 1
    begin = max(0, first * stride + (n - 1) % stride - (k - 1))  # oldest row an output reads
    if begin:  # rows no wanted output reads
        z = z[:, begin:]
        n -= begin
        last = (n - 1) // stride
        first = last - n_out + 1
    pad = k - 1 - (n - 1) % stride
    image = z.transpose(1, 2).unsqueeze(2)  # [B, H, 1, n], channels-last strides
    out = F.conv2d(image, conv.weight.unsqueeze(2), conv.bias, stride=(1, stride), padding=(0, pad))
    return out.squeeze(2).transpose(1, 2)[:, first : last + 1]  # [B, n_out, O], time-major


@register_backbone("tcn")
class TCNBackbone(StackedBackbone):
    """Causal dilated TCN: ``Linear(2C -> H)``, ``n_layers`` temporal blocks, ``LayerNorm + Linear(H -> D)``."""

    def build_stack(self, config: BackboneConfig) -> None:
        self.blocks = nn.ModuleList(
            TemporalBlock(config.hidden_dim, config.kernel_size, dilation=2**i, dropout=config.dropout)
            for i in range(config.n_layers)
        )

    def stack(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h)
        return h

    @property
    def receptive_field(self) -> int:
        """Bars that output step ``t`` can see, ``t`` included: ``1 + 2 (k - 1) (2^L - 1)``."""
        k, n_layers = self.config.kernel_size, self.config.n_layers
        return 1 + 2 * (k - 1) * (2**n_layers - 1)

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

        Evaluates only the receptive cone of position ``T-1``, and of it only the positions
        inside the window: before the window every convolution of the full forward reads
        its zero padding, so those taps are skipped (:func:`_causal_taps`) rather than
        computed on zero rows and masked.
        """
        inp = self.checked_inputs(x, observed)  # [B, T, 2C]
        k = self.config.kernel_size
        steps = inp.shape[1]
        lengths = self.cone_lengths()[1:] + [1]  # outputs each block must deliver
        n_in = min(self.receptive_field, steps)
        h = self.input_proj(inp[:, steps - n_in :] if n_in < steps else inp)  # [B, n_in, H]
        for block, n_cone in zip(self.blocks, lengths):
            # h: [B, n_in, H], the block's input at stride d ending at T-1, so its dilated
            # convolutions are undilated here; the block's output is read at stride 2d.
            dilation = block.conv1.conv.dilation[0]
            n_out = min(n_cone, (steps - 1) // (2 * dilation) + 1)  # of those, inside the window
            n_mid = min(2 * (n_out - 1) + k, n_in)  # first-conv outputs the second conv reads
            z = block.dropout(F.gelu(_causal_taps(block.norm(h), block.conv1.conv, 1, n_mid)))
            z = block.dropout(F.gelu(_causal_taps(z, block.conv2.conv, 2, n_out)))  # [B, n_out, H]
            h = h[:, n_in - 1 - 2 * (n_out - 1) :: 2] + z  # the residual at the same positions
            n_in = n_out
        assert h.shape[1] == 1, f"cone ended with {h.shape[1]} positions, expected 1"
        return self.output_proj(self.output_norm(h[:, 0]))  # [B, D]

    def pooled(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Embedding ``[B, D]`` at the last position, through :meth:`last_step`."""
        return self.last_step(x, observed)
