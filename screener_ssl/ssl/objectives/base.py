"""The objective contract: a loss (plus its heads) on top of any :class:`SSLBackbone`.

An objective receives an :class:`SSLBatch` of ``n_views`` augmented views of the
same windows (views share the decision index t*; the decision bar is always the
last position) and returns a scalar loss with a few named floats to log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone


@dataclass
class View:
    """One view of a batch of windows."""

    x: torch.Tensor  # [B, T, C] float32, normalized; zero where not observed
    observed: torch.Tensor  # [B, T, C] bool; False = censored, missing, padding or masked

    def __post_init__(self) -> None:
        assert self.x.shape == self.observed.shape and self.x.dim() == 3, (
            f"View x {tuple(self.x.shape)} and observed {tuple(self.observed.shape)} must both be [B, T, C]"
        )


@dataclass
class SSLBatch:
    """What the trainer hands an objective each step."""

    views: list[View]  # n_views augmented views, same windows, same t*
    clean: View  # the normalized, censored window before augmentation (reconstruction targets)
    ticker_id: torch.Tensor  # [B] long
    decision_bar: torch.Tensor  # [B] long, decision bar's position in its ticker's history
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.clean.x.shape[0]


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar
    logs: dict[str, float] = field(default_factory=dict)


class ObjectiveConfig(BaseModel):
    """Base of every objective's config; recorded verbatim in the schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Objective(nn.Module):
    """Backbone + heads + loss. Subclasses set ``name``, ``n_views`` and ``config_cls``."""

    name: ClassVar[str]
    n_views: ClassVar[int] = 1
    config_cls: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig

    def __init__(self, backbone: SSLBackbone, config: ObjectiveConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    def on_after_step(self, step: int, total_steps: int) -> None:
        """Hook after each optimizer step (EMA targets, schedules). Default: nothing."""

    def collapse_facts(self) -> dict[str, dict[str, Any]]:
        """Facts about the objective's own state that the collapse check includes (e.g. codebook usage).

        ``name -> {metric: value, ..., "collapsed": bool}``; any ``collapsed`` fact marks the run
        collapsed. Default: none (the embedding statistics alone decide).
        """
        return {}

    def save_artifacts(self, directory: Path) -> None:
        """Write extra trained parts the run dir keeps beside ``encoder.pt`` (e.g. a teacher). Default: nothing."""


_REGISTRY: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"objective {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def objective_names() -> list[str]:
    from screener_ssl.ssl import objectives  # noqa: F401  (registration side effect)

    return sorted(_REGISTRY)


def get_objective_class(name: str) -> type[Objective]:
    from screener_ssl.ssl import objectives  # noqa: F401

    if name not in _REGISTRY:
        raise KeyError(f"unknown objective {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build_objective(name: str, backbone: SSLBackbone, config: dict | ObjectiveConfig | None = None) -> Objective:
    cls = get_objective_class(name)
    if not isinstance(config, ObjectiveConfig):
        config = cls.config_cls.model_validate(config or {})
    return cls(backbone, config)
