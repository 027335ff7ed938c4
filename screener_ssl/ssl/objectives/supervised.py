"""Baseline ``supervised``: the backbone trained from scratch on the pattern labels the probe scores.

The upper reference of the leaderboard: what the same backbone reaches with the labels
themselves (trained by :func:`screener_ssl.ssl.finetune.train_classifier`, then probed like
every encoder). Its settings are :class:`~screener_ssl.ssl.finetune.FinetuneConfig`'s beyond
the run's train section (e.g. ``positive_fraction``, ``prior_correction``).
"""

from __future__ import annotations

from typing import Any, Callable

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.objectives.base import FitJob, Objective, register_objective


@register_objective
class Supervised(Objective):
    """Backbone + linear head trained with BCE on the train split's labels; the backbone is the encoder."""

    name = "supervised"
    is_baseline = True
    needs_labels = True

    @classmethod
    def resolve_config(cls, config: dict[str, Any], train) -> dict[str, Any]:
        from screener_ssl.ssl.finetune import finetune_config

        return finetune_config(train, **(config or {})).model_dump(mode="json")

    @classmethod
    def fit(cls, backbone: SSLBackbone, job: FitJob, log: Callable[[str], None] = print):
        from screener_ssl.ssl.finetune import finetune_config, train_classifier
        from screener_ssl.ssl.trainer import TrainResult

        if job.dataset.labels is None:
            raise ValueError("the supervised baseline needs pattern labels; load the dataset with labels")
        log(f"{cls.name}: training the backbone from scratch on the pattern labels")
        fitted = train_classifier(
            backbone, job.dataset, finetune_config(job.train, **(job.config or {})), log=log,
            labelled_rows=job.labelled_rows, snapshot=job.snapshots, device=job.train.device,
        )
        result = TrainResult(
            steps=len(fitted.losses), losses=list(fitted.losses), seconds=fitted.seconds,
            windows_per_s=fitted.windows_per_s, last_logs={"val_loss": fitted.val_loss},
        )
        return fitted.classifier.backbone, result
