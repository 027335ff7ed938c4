"""The ``raw_features`` baseline: a parameter-free backbone whose embedding is the censored input itself.

Output step ``t`` is the flattened model input (values with unobserved cells
zeroed, then the observed mask; see :meth:`SSLBackbone.model_inputs`) of the
last ``lags`` steps up to and including ``t``, oldest first, zero-padded on the
left where fewer than ``lags`` steps exist. ``lags = 8 * config.patch_len``
(64 with the defaults, the default ``window_max``), so the width is fixed by the
config and not by the window length: ``embed_dim = lags * 2C``, whatever
``config.embed_dim`` says. A probe on it measures what a linear head gets from
the censored features alone, the reference every pretrained encoder must beat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone, register_backbone

LAGS_PER_PATCH = 8


@register_backbone("raw_window")
class RawWindowBackbone(SSLBackbone):
    """``[B, T, C]`` -> ``[B, T, lags * 2C]``: step t holds the model inputs of steps ``t-lags+1 .. t``."""

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__(input_channels, config)
        self.lags = LAGS_PER_PATCH * config.patch_len
        # The true output width, not config.embed_dim: a probe head is sized from this.
        self.embed_dim = self.lags * 2 * input_channels

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, C]`` float, ``observed: [B, T, C]`` bool -> ``[B, T, lags * 2C]``."""
        inp = self.checked_inputs(x, observed)  # [B, T, 2C]
        batch, steps, width = inp.shape
        # Left padding only: step t reads steps t-lags+1 .. t, never a later one.
        padded = F.pad(inp, (0, 0, self.lags - 1, 0))  # [B, T + lags - 1, 2C]
        frames = padded.unfold(1, self.lags, 1)  # [B, T, 2C, lags]
        return frames.transpose(2, 3).reshape(batch, steps, self.lags * width)
