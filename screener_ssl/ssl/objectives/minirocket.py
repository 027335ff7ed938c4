"""Baseline ``minirocket``: aeon's MiniRocket/MultiRocket fitted on train windows (see :mod:`screener_ssl.ssl.minirocket`).

The non-deep reference the leaderboard measures every objective against; its "encoder" is
the fitted transform, probed through the same ``encode_prepared`` contract.
"""

from __future__ import annotations

from typing import Any, Callable

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives.base import FitJob, Objective, register_objective


@register_objective
class MiniRocketBaseline(Objective):
    """No backbone: ``fit`` returns a fitted :class:`MiniRocketEncoder` in its place."""

    name = "minirocket"
    trains = False
    finetunable = False  # no weights
    kind = "baseline"  # compared with in a verdict column of its own, so not a best-baseline candidate
    # PPV features of the constant mask channels and censored fields are constant by design.
    collapse_rule = "rank_only"
    array_api_note = (
        "fit it with screener_ssl.ssl.minirocket.MiniRocketEncoder(MiniRocketConfig(...), input_channels=C)"
        ".fit_prepared(x, observed) on windows [N, T, C] (observed: False where missing), then encode(X)"
    )

    @classmethod
    def resolve_config(cls, config: dict[str, Any], train) -> dict[str, Any]:
        from screener_ssl.ssl.minirocket import MiniRocketConfig

        return MiniRocketConfig(**({"seed": train.seed} | dict(config or {}))).model_dump(mode="json")

    @classmethod
    def fit(cls, backbone: SSLBackbone, job: FitJob, log: Callable[[str], None] = print):
        from screener_ssl.ssl.minirocket import MiniRocketConfig, fit_minirocket_on_dataset
        from screener_ssl.ssl.trainer import TrainResult

        config = MiniRocketConfig.model_validate(cls.resolve_config(job.config, job.train))
        log(f"{cls.name}: fitting {config.transform} ({config.n_kernels} kernels) on <= {config.fit_windows} train windows")
        encoder = fit_minirocket_on_dataset(job.dataset, config, meta={"objective": cls.name})
        seconds, windows = encoder.cost["fit_seconds"], int(encoder.cost["fit_windows"])
        return encoder, TrainResult(steps=0, losses=[], seconds=seconds, windows_per_s=windows / max(seconds, 1e-9))
