"""Finetuned runs: a pretrained encoder trained end to end with a pattern head, written by the run writer."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

from screener_ssl.data.dataset import Dataset
from screener_ssl.runs.run_dirs import HEAD_FILE, load_pretrained_backbone
from screener_ssl.runs.sweep import SweepPoint
from screener_ssl.runs.writer import write_run
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.ssl.encoder import Encoder, Pooling
from screener_ssl.ssl.finetune import ClassifierResult, FinetuneConfig, finetune_config, train_classifier
from screener_ssl.ssl.objectives.base import get_objective_class
from screener_ssl.ssl.schema import SSLSchema, diff_fields, require_spec
from screener_ssl.store.artifacts import atomic_torch_save

# The finetune trains like `supervised` (same steps, batch, warmup + cosine schedule), encoder and head
# at the full rate: a val comparison on the default market found no gain from a slower encoder (README).
FINETUNE_ENCODER_LR_SCALE = 1.0
SUPERVISED_OBJECTIVE = "supervised"


class NotFinetunableError(ValueError):
    """The objective's encoder has no weights to finetune."""


def finetuned_name(objective: str) -> str:
    """The name a finetuned run of ``objective`` is recorded under (its partition's latest pointer)."""
    return f"finetuned_{objective}"


def is_finetunable(objective: str) -> bool:
    """Whether ``objective``'s encoder has weights to finetune end to end (the registry's ``finetunable``)."""
    return get_objective_class(objective).finetunable


def require_finetunable(objective: str) -> None:
    """Raise :class:`NotFinetunableError` when ``objective``'s encoder has no weights."""
    if not is_finetunable(objective):
        raise NotFinetunableError(f"{objective} has no weights to finetune; finetune an encoder partition")


def finetune_settings(point: SweepPoint, encoder_lr_scale: float | None = None) -> FinetuneConfig:
    """The finetune's training settings: ``supervised``'s for this point (steps, batch, schedule, selection on val)."""
    scale = FINETUNE_ENCODER_LR_SCALE if encoder_lr_scale is None else encoder_lr_scale
    return finetune_config(point.train, encoder_lr_scale=scale)


def supervised_schema(dataset: Dataset, config: FinetuneConfig, backbone_config: BackboneConfig) -> SSLSchema:
    """Schema of a backbone trained from scratch on the labels: no SSL views, t* is the decision bar."""
    no_views = AugmentConfig(
        decision_min_frac=1.0,
        censor_last_prob=1.0,
        crop=False,
        jitter_sigma=config.jitter_sigma,
        scale_global=(1.0, 1.0),
        scale_per_feature=(1.0, 1.0),
        channel_dropout_p=0.0,
        time_warp_max=0.0,
    )
    return SSLSchema(
        window_spec=dataset.spec,
        spec_fingerprint=dataset.spec.fingerprint(),
        dataset_fingerprint=dataset.dataset_fingerprint,
        augmentation=no_views,
        objective=SUPERVISED_OBJECTIVE,
        objective_config={"patterns": list(dataset.patterns), "finetune": config.model_dump(mode="json")},
        encoder=backbone_config,
    )


def write_classifier_run(
    result: ClassifierResult,
    dataset: Dataset,
    data_root: Path,
    model_type: str,
    variant: str,
    source: dict[str, Any],
    config: FinetuneConfig,
    backbone_config: BackboneConfig,
    schema: SSLSchema | None,
    run_context: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    pooling: Pooling = "last",
) -> tuple[Path, str]:
    """Write ``<data_root>/models/<model_type>/_pretrain/<run_id>/`` atomically; return (run dir, data version).

    ``pooling``: the encoder's default, the one its probe embeds with.

    ``schema`` is the source encoder's for a finetune, None for a backbone trained from scratch
    (a ``supervised`` schema is built). The data version fingerprints the encoder weights and the schema.
    """
    started = time.time() - result.seconds
    classifier = result.classifier
    if classifier.backbone.config != backbone_config:
        raise ValueError(
            "backbone_config differs from the trained backbone's; differing fields:\n  "
            + "\n  ".join(diff_fields(backbone_config, classifier.backbone.config))
        )
    if schema is None:
        schema = supervised_schema(dataset, config, backbone_config)
    else:
        require_spec(dataset.spec, schema.window_spec, "the source encoder's schema")
    objective = schema.objective
    metrics = {
        "steps": result.steps,
        "mean_loss": result.mean_loss,
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "val_loss": result.val_loss,
        "val_baseline_loss": result.val_baseline_loss,
        "windows_per_s": result.windows_per_s,
        "train_seconds": result.seconds,
        "resumed_from_step": result.resumed_from_step,
        "train_windows": result.train_windows,
        "positive_windows": result.positive_windows,
        "val_windows": int(len(result.val_positions)),
        "selected_step": result.selected_step,
        "val_selection": result.selection_history,
        "prior_shift": dict(zip(dataset.patterns, result.prior_shift)),
    }
    context = dict(run_context or {})
    partition = context.get("partition", f"{objective}|{variant}")

    def write_head(tmp: Path) -> None:
        atomic_torch_save(
            tmp / HEAD_FILE,
            {"head": classifier.head.state_dict(), "patterns": list(classifier.patterns), "prior_shift": result.prior_shift},
        )

    written = write_run(
        data_root,
        model_type,
        Encoder(
            classifier.backbone, normalization="none", meta={"objective": objective, "source": source}, pooling=pooling
        ),
        schema,
        pretrain_config={
            "objective": objective,
            "variant": variant,
            "backbone": backbone_config.model_dump(mode="json"),
            "finetune": config.model_dump(mode="json"),
            "patterns": list(dataset.patterns),
            "source": source,
            "metrics": metrics,
            "loss_curve": result.losses,
        },
        experiment={
            "model_type": model_type,
            "objective": objective,
            "variant": variant,
            "partition": partition,
            "training": source.get("kind"),
            "backbone": backbone_config.kind,
            "dataset_fingerprint": dataset.dataset_fingerprint,
            "spec_fingerprint": schema.spec_fingerprint,
            "schema_fingerprint": schema.fingerprint,
            "train_windows": result.train_windows,
        },
        seed=config.seed,
        started=started,
        run_context=context,
        write_extra=write_head,
        environ=environ,
    )
    return written.run_dir, written.data_version


def finetune_partition(
    dataset: Dataset,
    point: SweepPoint,
    source_run: Path,
    data_root: Path,
    run_context: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
) -> tuple[Path, str]:
    """Finetune the encoder of ``source_run`` (a run of ``point``) end to end; return (run dir, data version).

    Raises :class:`NotFinetunableError` for an objective without weights and
    :class:`~screener_ssl.ssl.schema.SchemaMismatchError` when the source run does not fit the dataset.
    """
    require_finetunable(point.objective)
    backbone, schema = load_pretrained_backbone(source_run, dataset.spec)
    config = finetune_settings(point)
    fitted = train_classifier(backbone, dataset, config, log=log, device=point.train.device)
    return write_classifier_run(
        fitted, dataset, data_root, f"ssl_{schema.encoder.kind}_classifier", point.variant,
        source={"kind": "finetune", "from_run_dir": str(source_run), "objective": point.objective},
        config=config, backbone_config=schema.encoder, schema=schema, run_context=run_context,
        environ=environ, pooling=ProbeConfig(**point.probe).pooling,
    )
