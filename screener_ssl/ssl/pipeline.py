"""One (objective, variant) pretraining run over the windowed dataset, with its artifacts.

Writes ``<data root>/models/<model_type>/_pretrain/<run_id>/`` atomically:
run_meta.json, experiment.json, schema.json, encoder.pt, encoder.json,
pretrain_config.json. A checkpoint outside the run dir lets a killed run resume.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from screener_ssl.data.dataset import Dataset
from screener_ssl.data.windows import gather_windows
from screener_ssl.fingerprint import fingerprint
from screener_ssl.ssl.backbones.base import build_backbone
from screener_ssl.ssl.checks import collapse_report
from screener_ssl.ssl.encoder import Encoder
from screener_ssl.ssl.objectives.base import build_objective
from screener_ssl.ssl.sampler import WindowSampler
from screener_ssl.ssl.schema import SSLSchema
from screener_ssl.ssl.trainer import TrainResult, seed_everything, train
from screener_ssl.sweep import SweepPoint
from screener_ssl.tracking.artifacts import (
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    git_sha,
    host_info,
    new_run_id,
    run_dir,
    thread_env,
)

COLLAPSE_SAMPLE = 1024
# Reference rows probed by the same code as the objectives: an untrained encoder, the censored
# features themselves (a parameter-free causal backbone), and the backbone trained on the labels.
# MiniRocket: the non-deep reference, a fitted random-convolution transform instead of a backbone.
BASELINES = ("random_init", "raw_features", "supervised", "minirocket")


def resolve_point(point: SweepPoint) -> SweepPoint:
    """The raw_features baseline swaps in the parameter-free raw_window backbone."""
    if point.objective == "raw_features":
        return point.model_copy(update={"backbone": point.backbone.model_copy(update={"kind": "raw_window"})})
    return point


def model_type(point: SweepPoint) -> str:
    point = resolve_point(point)
    if point.objective == "minirocket":
        return "minirocket"
    return f"ssl_{point.backbone.kind}_{point.objective}"


def resolved_objective_config(point: SweepPoint, n_channels: int) -> dict[str, Any]:
    """The objective's config with every default filled in (validated by building it)."""
    if point.objective in ("random_init", "raw_features"):
        if point.objective_config:
            raise ValueError(f"baseline {point.objective!r} takes no objective settings, got {point.objective_config}")
        return {}
    if point.objective == "supervised":
        return _supervised_config(point).model_dump(mode="json")
    if point.objective == "minirocket":
        return _minirocket_config(point).model_dump(mode="json")
    backbone = build_backbone(point.backbone, n_channels)
    return build_objective(point.objective, backbone, point.objective_config).config.model_dump(mode="json")


def _supervised_config(point: SweepPoint):
    from screener_ssl.ssl.finetune import FinetuneConfig

    train = point.train
    return FinetuneConfig(
        steps=train.steps, batch_size=train.batch_size, lr=train.lr, weight_decay=train.weight_decay,
        warmup_frac=train.warmup_frac, grad_clip=train.grad_clip, seed=train.seed, threads=train.threads,
        log_every=train.log_every, **point.objective_config,
    )


def _minirocket_config(point: SweepPoint):
    from screener_ssl.ssl.minirocket import MiniRocketConfig

    return MiniRocketConfig(**({"seed": point.train.seed} | point.objective_config))


def build_schema(dataset: Dataset, point: SweepPoint, objective_config: dict[str, Any]) -> SSLSchema:
    return SSLSchema(
        window_spec=dataset.spec,
        spec_fingerprint=dataset.spec.fingerprint(),
        dataset_fingerprint=dataset.dataset_fingerprint,
        augmentation=point.augment,
        objective=point.objective,
        objective_config=objective_config,
        encoder=point.backbone,
    )


def embed_positions(
    encoder: Encoder, dataset: Dataset, positions: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Embeddings ``[n, D]`` at the decision bar of the windows at ``positions`` in the index."""
    out = np.zeros((len(positions), encoder.embed_dim), dtype=np.float32)
    for i in range(0, len(positions), batch_size):
        chunk = positions[i : i + batch_size]
        x, observed = gather_windows(
            dataset.store.values,
            dataset.ticker_start(chunk),
            dataset.index.decision_row[chunk],
            dataset.spec.window_max,
            open_known=dataset.spec.open_known_mask,
        )
        out[i : i + len(chunk)] = encoder.encode_prepared(x, observed, batch_size=batch_size)
    return out


@dataclass(frozen=True)
class PretrainOutcome:
    run_dir: Path
    schema: SSLSchema
    result: TrainResult
    collapse: dict
    data_version: str


def pretrain_partition(
    dataset: Dataset,
    point: SweepPoint,
    data_root: Path,
    run_context: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> PretrainOutcome:
    """Train ``point`` on the train split, check collapse on val, write the run dir; return where it went."""
    started = time.time()
    point = resolve_point(point)
    seed_everything(point.train.seed, point.train.threads)
    n_channels = dataset.spec.n_features
    objective_config = resolved_objective_config(point, n_channels)
    schema = build_schema(dataset, point, objective_config)
    train_pos = dataset.index.rows_of("train")
    checkpoint_dir = data_root / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    run_key = fingerprint(point.model_dump(mode="json"), schema.fingerprint)[:16]
    checkpoint = checkpoint_dir / f"{model_type(point)}__{point.variant}__{run_key}.pt"
    seed_everything(point.train.seed, point.train.threads)  # weights start from the same state for every path
    backbone = build_backbone(point.backbone, n_channels)

    encoder = None
    windows_seen = 0
    n_trained_parameters = None
    if point.objective in ("random_init", "raw_features"):
        log(f"{point.partition_key}: baseline without training ({model_type(point)})")
        result = TrainResult(steps=0, losses=[], seconds=0.0, windows_per_s=float("nan"))
    elif point.objective == "minirocket":
        from screener_ssl.ssl.minirocket import fit_minirocket_on_dataset

        mr_config = _minirocket_config(point)
        log(f"{point.partition_key}: fitting {mr_config.transform} ({mr_config.n_kernels} kernels) on "
            f"<= {mr_config.fit_windows} of {len(train_pos)} train windows")
        encoder = fit_minirocket_on_dataset(dataset, mr_config, meta={"objective": point.objective})
        fit_s = encoder.cost["fit_seconds"]
        windows_seen = int(encoder.cost["fit_windows"])
        result = TrainResult(steps=0, losses=[], seconds=fit_s, windows_per_s=windows_seen / max(fit_s, 1e-9))
        n_trained_parameters = encoder.n_parameters
    elif point.objective == "supervised":
        from screener_ssl.ssl.finetune import train_classifier

        if dataset.labels is None:
            raise ValueError("the supervised baseline needs pattern labels; load the dataset with labels")
        log(f"{point.partition_key}: training the backbone from scratch on the pattern labels")
        fitted = train_classifier(backbone, dataset, _supervised_config(point), log=log)
        backbone = fitted.classifier.backbone
        windows_seen = len(fitted.losses) * _supervised_config(point).batch_size
        n_trained_parameters = sum(p.numel() for p in fitted.classifier.parameters())
        result = TrainResult(
            steps=len(fitted.losses), losses=list(fitted.losses), seconds=fitted.seconds,
            windows_per_s=fitted.windows_per_s, last_logs={"val_loss": fitted.val_loss},
        )
    else:
        objective = build_objective(point.objective, backbone, point.objective_config)
        expansion = int(objective_config.get("positive_expansion_k", 0) or 0)
        sampler = WindowSampler(
            values=dataset.store.values,
            ticker_start=dataset.ticker_start(train_pos),
            decision_row=dataset.index.decision_row[train_pos],
            spec=dataset.spec,
            augment=point.augment,
            n_views=type(objective).n_views,
            batch_size=point.train.batch_size,
            seed=point.train.seed,
            neighbors_per_anchor=1 if expansion > 0 else 0,
            neighbor_radius=expansion,
        )
        log(
            f"pretraining {point.partition_key} ({model_type(point)}): {point.train.steps} steps x "
            f"{point.train.batch_size} windows from {len(train_pos)} train windows"
        )
        result = train(objective, sampler, point.train, checkpoint_path=checkpoint, log=log)
        backbone = objective.backbone
        windows_seen = result.steps * point.train.batch_size
        n_trained_parameters = sum(p.numel() for p in objective.parameters())

    if encoder is None:
        encoder = Encoder(backbone, normalization="none", meta={"objective": point.objective})
    rng = np.random.default_rng(point.train.seed)
    val_pos = dataset.index.rows_of("val")
    sample = rng.choice(val_pos, size=min(COLLAPSE_SAMPLE, len(val_pos)), replace=False)
    embed_started = time.perf_counter()
    collapse = collapse_report(embed_positions(encoder, dataset, np.sort(sample)))
    collapse_embed_s = time.perf_counter() - embed_started

    run_id = new_run_id()
    final_dir = run_dir(data_root, model_type(point), run_id)
    finished = time.time()
    with atomic_dir(final_dir) as tmp:
        encoder.save(tmp)
        atomic_write_text(tmp / "schema.json", schema.to_json())
        atomic_write_json(
            tmp / "pretrain_config.json",
            {
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
                    "last_logs": result.last_logs,
                    "collapse": collapse,
                },
                "loss_curve": result.losses,
                # Compute cost beside quality (the probe adds embedding and head seconds).
                "cost": {
                    "pretrain_seconds": result.seconds,
                    "windows_seen": int(windows_seen),
                    "encoder_parameters": encoder.describe().get("n_parameters"),
                    "trained_parameters": n_trained_parameters,  # encoder + objective heads / classifier
                    "collapse_embed_seconds": collapse_embed_s,
                    **({"minirocket": dict(encoder.cost)} if point.objective == "minirocket" else {}),
                },
            },
        )
        atomic_write_json(
            tmp / "experiment.json",
            {
                "model_type": model_type(point),
                "objective": point.objective,
                "variant": point.variant,
                "partition": point.partition_key,
                "backbone": point.backbone.kind,
                "dataset_fingerprint": dataset.dataset_fingerprint,
                "spec_fingerprint": schema.spec_fingerprint,
                "schema_fingerprint": schema.fingerprint,
                "train_windows": int(len(train_pos)),
            },
        )
        atomic_write_json(
            tmp / "run_meta.json",
            {
                "run_id": run_id,
                **(run_context or {}),
                "partition": point.partition_key,
                "git_sha": git_sha(),
                "seed": point.train.seed,
                "threads": thread_env(),
                "host": host_info(),
                "timings": {"started": started, "finished": finished, "seconds": finished - started},
            },
        )
        weights_file = tmp / ("encoder.pt" if (tmp / "encoder.pt").exists() else "minirocket.pkl")
        weights_hash = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    checkpoint.unlink(missing_ok=True)
    data_version = fingerprint({"weights": weights_hash, "schema": schema.fingerprint})
    log(
        f"wrote {final_dir}: loss {result.first_loss:.4f} -> {result.final_loss:.4f}, "
        f"effective rank {collapse['effective_rank']:.1f}, {result.windows_per_s:.0f} windows/s"
    )
    return PretrainOutcome(run_dir=final_dir, schema=schema, result=result, collapse=collapse, data_version=data_version)
