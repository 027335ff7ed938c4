"""The batch contract between the sampler, the trainer and the objectives.

The sampler builds an :class:`SSLBatch` of ``n_views`` augmented :class:`View` s of the same
windows (views share the decision index t*; the decision bar is always the last position), the
trainer hands it to an objective, and the objective returns an :class:`ObjectiveOutput`: a scalar
loss with a few named floats to log. :class:`TrainableObjective` is what the trainer needs of an
objective (the registry's ``Objective`` base in :mod:`screener_ssl.ssl.objectives.base` is one).

This module sits below the objectives: the sampler, the device helpers and the trainer import it,
and it imports nothing of the objectives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


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
    decision_row: torch.Tensor  # [B] long, global row of t* in the feature array (same ticker: differences are bars)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.clean.x.shape[0]


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar
    logs: dict[str, float] = field(default_factory=dict)


class TrainableObjective(Protocol):
    """What the trainer loop calls on an objective: an ``nn.Module`` mapping a batch to a loss."""

    name: str

    def __call__(self, batch: SSLBatch) -> ObjectiveOutput: ...

    def on_after_step(self, step: int, total_steps: int) -> None: ...
