"""One (objective, variant) pretraining run over the windowed dataset, with its artifacts.

The sweep point is resolved once (:func:`resolve_point`); what the run needs comes from its
registry entry (:mod:`screener_ssl.ssl.objectives.base`), so baselines and objectives take the
same path. Writes ``<data root>/models/<model_type>/_pretrain/<run_id>/`` with the one run
writer (:func:`screener_ssl.runs.writer.write_run`). A checkpoint outside the run dir lets a
killed run resume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from screener_ssl.data.dataset import Dataset
from screener_ssl.store.fingerprint import fingerprint
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.runs.sweep import SweepPoint
from screener_ssl.runs.writer import write_run
from screener_ssl.ssl.backbones.base import build_backbone
from screener_ssl.ssl.checks import collapse_report
from screener_ssl.ssl.encoder import Encoder, embed_positions
from screener_ssl.ssl.objectives.base import FitJob, Objective, get_objective_class
from screener_ssl.ssl.schema import SSLSchema
from screener_ssl.ssl.snapshots import EncoderSnapshots, snapshot_steps
from screener_ssl.ssl.trainer import TrainResult, seed_everything
from screener_ssl.tracking.names import check_name

COLLAPSE_SAMPLE = 1024


@dataclass(frozen=True)
class ResolvedPoint:
    """A sweep point with its registry entry applied: backbone override, settings with every default."""

    point: SweepPoint
    entry: type[Objective]
    objective_config: dict[str, Any]

    @property
    def model_type(self) -> str:
        return f"ssl_{self.point.backbone.kind}_{self.point.objective}"


def resolve_point(point: SweepPoint) -> ResolvedPoint:
    """Apply the objective's registry entry to ``point`` (once per partition)."""
    entry = get_objective_class(point.objective)
    if entry.backbone_kind is not None and point.backbone.kind != entry.backbone_kind:
        point = point.model_copy(update={"backbone": point.backbone.model_copy(update={"kind": entry.backbone_kind})})
    return ResolvedPoint(point, entry, entry.resolve_config(point.objective_config, point.train))


def model_type(point: SweepPoint) -> str:
    return resolve_point(point).model_type


def build_schema(dataset: Dataset, resolved: ResolvedPoint) -> SSLSchema:
    point = resolved.point
    return SSLSchema(
        window_spec=dataset.spec,
        spec_fingerprint=dataset.spec.fingerprint(),
        dataset_fingerprint=dataset.dataset_fingerprint,
        augmentation=point.augment,
        objective=point.objective,
        objective_config=resolved.objective_config,
        encoder=point.backbone,
    )


def _with_snapshots(
    write_extra: Callable[[Path], None] | None, snapshots: EncoderSnapshots | None, batch_size: int
) -> Callable[[Path], None] | None:
    """The run's extra-file writer, also moving its encoder snapshots into ``<run dir>/curve/``."""
    if snapshots is None:
        return write_extra

    def write(directory: Path) -> None:
        if write_extra is not None:
            write_extra(directory)
        snapshots.copy_into(directory, batch_size)

    return write


@dataclass(frozen=True)
class PretrainOutcome:
    run_dir: Path
    schema: SSLSchema
    result: TrainResult
    collapse: dict
    data_version: str


def pretrain_partition(
    dataset: Dataset,
    point: SweepPoint | ResolvedPoint,
    data_root: Path,
    run_context: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
) -> PretrainOutcome:
    """Train ``point`` on the train split, check collapse on val, write the run dir; return where it went.

    ``environ``: the environment whose thread settings the run records (see :func:`write_run`).
    """
    started = time.time()
    resolved = point if isinstance(point, ResolvedPoint) else resolve_point(point)
    point, entry, objective_config = resolved.point, resolved.entry, resolved.objective_config
    n_channels = dataset.spec.n_features
    schema = build_schema(dataset, resolved)
    train_pos = dataset.index.rows_of("train")
    checkpoint_dir = data_root / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    run_key = fingerprint(point.model_dump(mode="json"), schema.fingerprint)[:16]
    checkpoint = checkpoint_dir / (
        f"{check_name(resolved.model_type, 'model type')}__{check_name(point.variant, 'variant')}__{run_key}.pt"
    )
    snapshots = None
    if entry.trains and point.train.curve_fracs:  # the encoder at a few steps, for the run's budget curve
        snapshots = EncoderSnapshots(
            checkpoint.with_name(checkpoint.stem + ".curve"), snapshot_steps(point.train.steps, point.train.curve_fracs)
        )
        if not checkpoint.exists():  # a run from step 0 keeps no snapshot of an earlier attempt
            snapshots.clear()
    seed_everything(point.train.seed, point.train.threads)  # weights start from the same state for every path
    backbone = build_backbone(point.backbone, n_channels)
    log(f"{point.partition_key} ({resolved.model_type})")
    job = FitJob(dataset, point.train, point.augment, point.objective_config, checkpoint, snapshots)
    fitted, result = entry.fit(backbone, job, log=log)

    # The encoder records the pooling its probe embeds with (a sweep point may probe with "max").
    pooling = ProbeConfig(**point.probe).pooling
    if isinstance(fitted, Encoder) or not hasattr(fitted, "forward"):  # a fitted feature extractor (minirocket)
        encoder = fitted if fitted.pooling == pooling else fitted.with_pooling(pooling)
        windows_seen = int(getattr(fitted, "cost", {}).get("fit_windows", 0))
        trained_parameters = encoder.describe().get("n_parameters")
    else:
        encoder = Encoder(fitted, normalization="none", meta={"objective": point.objective}, pooling=pooling)
        windows_seen = result.steps * (point.train.batch_size if entry.trains else 0)
        trained_parameters = sum(p.numel() for p in fitted.parameters()) if entry.trains else 0
    rng = np.random.default_rng(point.train.seed)
    val_pos = dataset.index.rows_of("val")
    sample = rng.choice(val_pos, size=min(COLLAPSE_SAMPLE, len(val_pos)), replace=False)
    embed_started = time.perf_counter()
    collapse = collapse_report(
        embed_positions(encoder, dataset, np.sort(sample)), objective_facts=result.objective_facts
    )
    collapse_embed_s = time.perf_counter() - embed_started

    written = write_run(
        data_root,
        resolved.model_type,
        encoder,
        schema,
        pretrain_config={
            "objective": point.objective,
            "variant": point.variant,
            "backbone": point.backbone.model_dump(mode="json"),
            "train": point.train.model_dump(mode="json"),
            "augment": point.augment.model_dump(mode="json"),
            "objective_config": objective_config,
            "metrics": {
                "steps": result.steps,
                "mean_loss": result.mean_loss,
                "first_loss": result.first_loss,
                "final_loss": result.final_loss,
                "windows_per_s": result.windows_per_s,
                "train_seconds": result.seconds,
                "resumed_from_step": result.resumed_from_step,
                "diverged_at_step": result.diverged_at_step,
                "last_logs": result.last_logs,
                "collapse": collapse,
            },
            "loss_curve": result.losses,
            # Compute cost beside quality (the probe adds embedding and head seconds).
            "cost": {
                "pretrain_seconds": result.seconds,
                "windows_seen": int(windows_seen),
                "encoder_parameters": encoder.describe().get("n_parameters"),
                "trained_parameters": trained_parameters,
                "collapse_embed_seconds": collapse_embed_s,
                **({"minirocket": dict(encoder.cost)} if hasattr(encoder, "cost") else {}),
            },
        },
        experiment={
            "model_type": resolved.model_type,
            "objective": point.objective,
            "variant": point.variant,
            "partition": point.partition_key,
            "backbone": point.backbone.kind,
            "dataset_fingerprint": dataset.dataset_fingerprint,
            "spec_fingerprint": schema.spec_fingerprint,
            "schema_fingerprint": schema.fingerprint,
            "train_windows": int(len(train_pos)),
        },
        seed=point.train.seed,
        started=started,
        run_context=run_context,
        environ=environ,
        write_extra=_with_snapshots(result.write_extra, snapshots, point.train.batch_size),
    )
    checkpoint.unlink(missing_ok=True)
    if snapshots is not None:
        snapshots.clear()
    log(
        f"wrote {written.run_dir}: loss {result.first_loss:.4f} -> {result.final_loss:.4f}, "
        f"effective rank {collapse['effective_rank']:.1f}, {result.windows_per_s:.0f} windows/s"
    )
    return PretrainOutcome(
        run_dir=written.run_dir, schema=schema, result=result, collapse=collapse, data_version=written.data_version
    )
