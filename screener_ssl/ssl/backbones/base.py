"""The backbone contract every encoder family implements.

A backbone maps a window ``x: [B, T, C]`` plus its ``observed: [B, T, C]`` mask
(False where a value is censored, missing or padding) to per-timestep embeddings
``[B, T, D]`` whose row ``t`` depends only on inputs at positions ``<= t``.
Causality is a property test (``screener_ssl_tests/ssl/test_backbones.py``),
not a promise.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class BackboneConfig(BaseModel):
    """Hyperparameters of an encoder; recorded verbatim in the schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tcn", "patch_transformer", "ssm", "raw_window", "shape_free"] = "tcn"
    embed_dim: int = Field(64, ge=4, le=1024)
    hidden_dim: int = Field(64, ge=4, le=1024)
    n_layers: int = Field(4, ge=1, le=16)
    kernel_size: int = Field(4, ge=2, le=9)  # tcn; 4 with 4 layers sees 91 bars, more than window_max 64
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    patch_len: int = Field(8, ge=1, le=64)  # patch_transformer
    n_heads: int = Field(4, ge=1, le=16)  # patch_transformer
    state_dim: int = Field(16, ge=2, le=256)  # ssm


class SSLBackbone(nn.Module):
    """Base class: subclasses implement :meth:`forward` causally."""

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__()
        self.input_channels = input_channels
        self.config = config
        self.embed_dim = config.embed_dim

    @staticmethod
    def model_inputs(x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``[B, T, C]`` values + mask -> ``[B, T, 2C]``: zeroed unobserved values, then the mask itself.

        The encoder sees the mask channels, so "censored" and "zero" are distinguishable.
        """
        assert x.shape == observed.shape and x.dim() == 3, (
            f"x {tuple(x.shape)} and observed {tuple(observed.shape)} must both be [B, T, C]"
        )
        obs = observed.to(x.dtype)
        values = torch.where(observed, x, torch.zeros_like(x))
        return torch.cat([values, obs], dim=-1)

    def checked_inputs(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """:meth:`model_inputs` of windows with the channel count this backbone was built for."""
        inp = self.model_inputs(x, observed)
        assert x.shape[-1] == self.input_channels, (
            f"{self.config.kind} backbone built for {self.input_channels} channels, got x with {x.shape[-1]}"
        )
        return inp

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def pooled(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Embedding ``[B, D]`` at the window's last position (the decision bar)."""
        return self.forward(x, observed)[:, -1]


class StackedBackbone(SSLBackbone):
    """``Linear(2C -> H)``, the subclass's causal stack at width H (:meth:`build_stack`, :meth:`stack`),
    then ``LayerNorm + Linear(H -> D)`` per step. Modules are created in that order (so a seed gives
    the same weights as a backbone that creates them inline)."""

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__(input_channels, config)
        self.input_proj = nn.Linear(2 * input_channels, config.hidden_dim)
        self.build_stack(config)
        self.output_norm = nn.LayerNorm(config.hidden_dim)
        self.output_proj = nn.Linear(config.hidden_dim, config.embed_dim)

    def build_stack(self, config: BackboneConfig) -> None:  # pragma: no cover
        """Create the stack's modules (width ``config.hidden_dim``)."""
        raise NotImplementedError

    def stack(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """``[B, T, H] -> [B, T, H]``, causal."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, C]`` float, ``observed: [B, T, C]`` bool -> ``[B, T, D]``."""
        h = self.input_proj(self.checked_inputs(x, observed))  # [B, T, H]
        return self.output_proj(self.output_norm(self.stack(h)))  # [B, T, D]


_REGISTRY: dict[str, type[SSLBackbone]] = {}


def register_backbone(kind: str):
    def wrap(cls: type[SSLBackbone]) -> type[SSLBackbone]:
        _REGISTRY[kind] = cls
        return cls

    return wrap


def build_backbone(config: BackboneConfig, input_channels: int) -> SSLBackbone:
    # Import for the registration side effect.
    from screener_ssl.ssl import backbones  # noqa: F401

    if config.kind not in _REGISTRY:
        raise KeyError(f"unknown backbone kind {config.kind!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[config.kind](input_channels, config)
