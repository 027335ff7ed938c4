"""Baseline ``random_init``: the backbone as initialised, probed by the same code as the objectives.

It answers "how much of a score is the architecture alone": any objective that does
not beat its own untrained backbone has learned nothing the probe can use.
"""

from __future__ import annotations

from typing import Any, Callable

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives.base import FitJob, Objective, register_objective


@register_objective
class RandomInit(Objective):
    """No loss and no training: the seeded initial weights are the encoder."""

    name = "random_init"
    is_baseline = True
    trains = False

    @classmethod
    def resolve_config(cls, config: dict[str, Any], train) -> dict[str, Any]:
        if config:
            raise ValueError(f"baseline {cls.name!r} takes no objective settings, got {config}")
        return {}

    @classmethod
    def fit(cls, backbone: SSLBackbone, job: FitJob, log: Callable[[str], None] = print):
        from screener_ssl.ssl.trainer import TrainResult

        log(f"{cls.name}: baseline without training")
        return backbone, TrainResult(steps=0, losses=[], seconds=0.0, windows_per_s=float("nan"))
