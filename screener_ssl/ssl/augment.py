"""Causal augmentations and the view maker.

Index-level choices happen before gathering, so bars after the decision index
never reach a view: decision-index randomization (t*; bars after t* are removed,
t* is open-only) and prefix-consistent crops (a view keeps the last L bars up to
t*). Value-level augmentations act on gathered ``[B, T, C]`` windows whose last
position is the decision bar: jitter, amplitude scaling (global and per feature),
channel dropout and a monotonic time warp whose source index never exceeds the
output index (so position t only ever reads positions <= t).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field


class AugmentConfig(BaseModel):
    """Pretraining view regime; every range is recorded in the schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_min_frac: float = Field(0.5, gt=0.0, le=1.0)  # t* uniform in the last (1 - frac) of the window
    censor_last_prob: float = Field(1.0, ge=0.0, le=1.0)  # else bar t* is kept whole (decision = next open)
    crop: bool = True  # each view keeps L bars up to t*, L drawn from the spec's crop_lengths
    jitter_sigma: float = Field(0.05, ge=0.0, le=1.0)  # in z-score units
    scale_global: tuple[float, float] = (0.8, 1.25)
    scale_per_feature: tuple[float, float] = (0.9, 1.1)
    channel_dropout_p: float = Field(0.1, ge=0.0, lt=1.0)
    time_warp_max: float = Field(0.2, ge=0.0, lt=1.0)  # local speed in [1 - w, 1 + w]
    strength: float = Field(1.0, ge=0.0, le=3.0)  # multiplies jitter, scaling spread, dropout and warp


def sample_decision_offsets(rng: np.random.Generator, batch: int, window: int, config: AugmentConfig) -> np.ndarray:
    """int64 [B]: bars removed after t* (0 = t* is the window's own decision bar). Shared by paired views."""
    max_drop = window - max(int(math.ceil(config.decision_min_frac * window)), 1)
    return rng.integers(0, max_drop + 1, size=batch, dtype=np.int64)


def sample_crop_lengths(
    rng: np.random.Generator, batch: int, window: int, crop_lengths: tuple[int, ...], config: AugmentConfig
) -> np.ndarray:
    """int64 [B]: bars each view keeps up to and including t* (prefix-consistent crop)."""
    if not config.crop:
        return np.full(batch, window, dtype=np.int64)
    return rng.choice(np.asarray(crop_lengths, dtype=np.int64), size=batch)


def _spread(bounds: tuple[float, float], strength: float) -> tuple[float, float]:
    # Scale a multiplicative range around 1 in log space.
    lo, hi = bounds
    return math.exp(math.log(lo) * strength), math.exp(math.log(hi) * strength)


def jitter(x: torch.Tensor, observed: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Independent Gaussian noise on observed cells of ``x [B, T, C]``."""
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device) * sigma
    return torch.where(observed, x + noise, x)


def amplitude_scale(
    x: torch.Tensor, global_range: tuple[float, float], feature_range: tuple[float, float], gen: torch.Generator
) -> torch.Tensor:
    """Multiply ``x [B, T, C]`` by a per-window factor and a per-window-per-feature factor."""
    batch, _, channels = x.shape
    g = _uniform((batch, 1, 1), global_range, gen, x.device)
    f = _uniform((batch, 1, channels), feature_range, gen, x.device)
    return x * g * f


def channel_dropout(observed: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Hide whole channels of ``observed [B, T, C]`` with probability p (at least one channel kept)."""
    batch, _, channels = observed.shape
    drop = torch.rand((batch, 1, channels), generator=gen, device=observed.device) < p
    all_dropped = drop.all(dim=-1, keepdim=True)
    drop = drop & ~all_dropped
    return observed & ~drop


def time_warp_source(
    batch: int, length: int, max_warp: float, gen: torch.Generator, device: torch.device | None = None
) -> torch.Tensor:
    """long [B, T]: source position of each output position; monotonic, source[t] <= t, source[-1] = T-1.

    Positions are anchored at the decision bar and walk backwards with local speeds in
    [1 - w, 1 + w]; a source before the window start is -1 (padding).
    """
    speeds = 1.0 + (torch.rand((batch, length), generator=gen, device=device) * 2.0 - 1.0) * max_warp  # [B, T]
    # phi[t] = (T - 1) - sum_{u > t} speeds[u]
    suffix = torch.flip(torch.cumsum(torch.flip(speeds, [1]), 1), [1]) - speeds
    phi = (length - 1) - suffix
    shifted = phi + 1e-6
    # floor(): truncation equals floor for shifted >= 0, and every negative floor ends as -1 below.
    # (torch.floor enters a parallel region even for [B, T]; on an oversubscribed host it waited ~15 ms a call.)
    source = torch.where(shifted < 0, -1, shifted.to(torch.long))
    # Floor of a value < t+1 stays <= t; the clamp only guards rounding at the anchor.
    source = torch.minimum(source, torch.arange(length, device=device).expand(batch, length))
    return torch.where(source < 0, torch.full_like(source, -1), source)


def apply_time_warp(x: torch.Tensor, observed: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample ``x, observed [B, T, C]`` at ``source [B, T]`` (nearest past bar; -1 = padding)."""
    idx = source.clamp_min(0).unsqueeze(-1).expand_as(x)
    pad = (source < 0).unsqueeze(-1)
    xw = torch.where(pad, torch.zeros_like(x), x.gather(1, idx))
    ow = observed.gather(1, idx) & ~pad
    return xw, ow


def _uniform(
    shape: tuple[int, ...], bounds: tuple[float, float], gen: torch.Generator, device: torch.device | None = None
) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def augment_view(
    x: torch.Tensor, observed: torch.Tensor, config: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented view of normalized, censored windows ``x, observed [B, T, C]``; causal per position."""
    s = config.strength
    batch, length, _ = x.shape
    if config.time_warp_max > 0 and s > 0:
        source = time_warp_source(batch, length, min(config.time_warp_max * s, 0.9), gen, x.device)
        x, observed = apply_time_warp(x, observed, source)
    if s > 0:
        x = amplitude_scale(x, _spread(config.scale_global, s), _spread(config.scale_per_feature, s), gen)
    if config.jitter_sigma > 0 and s > 0:
        x = jitter(x, observed, config.jitter_sigma * s, gen)
    if config.channel_dropout_p > 0 and s > 0:
        observed = channel_dropout(observed, min(config.channel_dropout_p * s, 0.9), gen)
    x = torch.where(observed, x, torch.zeros_like(x))
    return x, observed
