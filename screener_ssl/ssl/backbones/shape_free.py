"""The ``shape_free`` baseline: a parameter-free backbone that sees volume and volatility, never the path.

Output step ``t`` holds, for each of the last ``SHAPE_FREE_LAGS`` steps up to
and including ``t`` (oldest first; zero where fewer exist), the magnitudes that
carry no shape:

- ``|log_return|``, ``|log_close_open|`` and ``|gap|`` (the input is z-scored per
  window on past bars, so these are in units of the trailing window's vol),
- the intraday range ``log_high_open - log_low_open`` in the same units,
- ``rel_log_volume`` (volume against its trailing mean),
- whether the step is observed at all.

No sign, no level, no order beyond "how long ago": a probe on it measures how
much of a benchmark can be solved from volume and volatility around the
decision, which a shape benchmark must keep near the prevalence. It is probed
by the same code as every encoder, like ``raw_window``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from screener_ssl.data.contracts import FEATURE_NAMES
from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone, register_backbone

SHAPE_FREE_LAGS = 6  # the decision bar (its gap) and the 5 complete bars of the default label horizon
_MAGNITUDES = ("log_return", "log_close_open", "gap")
_FEATURES_PER_STEP = len(_MAGNITUDES) + 3  # + range, relative volume, observed


@register_backbone("shape_free")
class ShapeFreeBackbone(SSLBackbone):
    """``[B, T, C]`` -> ``[B, T, lags * 6]``: magnitudes, range and volume of steps ``t-lags+1 .. t``."""

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__(input_channels, config)
        if input_channels != len(FEATURE_NAMES):
            raise ValueError(
                f"shape_free backbone reads the shape features {FEATURE_NAMES} by name; "
                f"got {input_channels} input channels"
            )
        self.lags = SHAPE_FREE_LAGS
        self.magnitude_channels = [FEATURE_NAMES.index(n) for n in _MAGNITUDES]
        self.high, self.low = FEATURE_NAMES.index("log_high_open"), FEATURE_NAMES.index("log_low_open")
        self.volume = FEATURE_NAMES.index("rel_log_volume")
        self.embed_dim = self.lags * _FEATURES_PER_STEP

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, C]`` float, ``observed: [B, T, C]`` bool -> ``[B, T, lags * 6]``."""
        assert x.shape == observed.shape and x.shape[-1] == self.input_channels, (
            f"shape_free backbone built for {self.input_channels} channels, got x {tuple(x.shape)}"
        )
        values = torch.where(observed, x, torch.zeros_like(x))  # [B, T, C]
        seen = observed.to(x.dtype)
        both = seen[..., self.high] * seen[..., self.low]  # range needs high and low
        per_step = torch.cat(
            [
                values[..., self.magnitude_channels].abs(),  # [B, T, 3]
                ((values[..., self.high] - values[..., self.low]) * both).unsqueeze(-1),  # [B, T, 1]
                values[..., self.volume].unsqueeze(-1),  # [B, T, 1]
                observed.any(dim=-1, keepdim=True).to(x.dtype),  # [B, T, 1]
            ],
            dim=-1,
        )  # [B, T, 6]
        batch, steps, width = per_step.shape
        # Left padding only: step t reads steps t-lags+1 .. t, never a later one.
        padded = F.pad(per_step, (0, 0, self.lags - 1, 0))  # [B, T + lags - 1, 6]
        frames = padded.unfold(1, self.lags, 1)  # [B, T, 6, lags]
        return frames.transpose(2, 3).reshape(batch, steps, self.lags * width)
