"""Pretrain and embed without Dagster: ``pretrain(X, objective=..., backbone=...) -> Encoder``."""

from __future__ import annotations

from typing import Any

import numpy as np

from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.encoder import Encoder, Pooling, expanding_zscore
from screener_ssl.ssl.objectives.base import build_objective, get_objective_class, trainer_objective_names
from screener_ssl.ssl.sampler import WindowSampler
from screener_ssl.ssl.trainer import TrainConfig, seed_everything, train

_TRAIN_KEYS = set(TrainConfig.model_fields)
_AUGMENT_KEYS = set(AugmentConfig.model_fields)
_BACKBONE_KEYS = set(BackboneConfig.model_fields) - {"kind"}


def checked_input(X: Any) -> np.ndarray:
    """``X`` as float32 ``[N, T, C]``; NaN marks missing values, anything else non-finite is an error."""
    raw = np.asarray(X)
    if raw.ndim != 3:
        raise ValueError(f"X must be [N, T, C], found shape {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)):
        raise ValueError(f"X must hold numbers, found dtype {raw.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        values = raw.astype(np.float32)
    infinite = np.isinf(values)
    if infinite.any():
        where = tuple(int(i) for i in np.argwhere(infinite)[0])
        raise ValueError(
            f"X holds {int(infinite.sum())} infinite value(s) or values beyond float32's range (+-3.4e38), "
            f"first at [n, t, c] = {list(where)} (value {raw[where]!r}); mark missing values with NaN"
        )
    observed = ~np.isnan(values)
    if not observed.any():
        raise ValueError(f"X {raw.shape} is all NaN: there is nothing to learn from")
    empty_channels = np.flatnonzero(~observed.any(axis=(0, 1)))
    if len(empty_channels):
        raise ValueError(f"X channel(s) {empty_channels.tolist()} are NaN everywhere; drop them")
    return values


def pretrain(
    X: np.ndarray,
    objective: str = "masked_recon",
    backbone: str = "tcn",
    window: int | None = None,
    log=None,
    pooling: Pooling = "last",
    **hparams: Any,
) -> Encoder:
    """Pretrain an encoder on any ``float32 [N, T, C]`` array (NaN = missing).

    Each series is normalized causally (expanding z-score) and cut into windows
    of ``window`` steps (default ``min(T, 64)``). ``hparams`` go to the trainer
    (steps, batch_size, lr, seed, ...), the augmentations (jitter_sigma, ...),
    the backbone (embed_dim, n_layers, ...) or, for any other key, the objective.
    ``pooling`` is the returned encoder's default: the embedding at t ("last") or a running
    "max"/"mean" over every visible step up to t (see :func:`screener_ssl.ssl.encoder.causal_pool`).
    """
    cls = get_objective_class(objective)
    if objective not in trainer_objective_names():
        raise ValueError(
            f"objective {objective!r} is not pretrained by a loss on windows, so pretrain() cannot train it on "
            f"bare arrays; {cls.array_api_note or 'it is fitted by its sweep partition (pretrained_encoder)'}. "
            f"pretrain() trains: {', '.join(trainer_objective_names())}"
        )
    X = checked_input(X)
    n_series, length, channels = X.shape
    window = min(length, 64) if window is None else int(window)
    if not 2 <= window <= length:
        raise ValueError(f"window={window} must lie in [2, T={length}]")
    train_kw = {k: v for k, v in hparams.items() if k in _TRAIN_KEYS}
    augment_kw = {k: v for k, v in hparams.items() if k in _AUGMENT_KEYS}
    backbone_kw = {k: v for k, v in hparams.items() if k in _BACKBONE_KEYS}
    objective_kw = {k: v for k, v in hparams.items() if k not in _TRAIN_KEYS | _AUGMENT_KEYS | _BACKBONE_KEYS}
    train_cfg = TrainConfig(**train_kw)
    seed_everything(train_cfg.seed, train_cfg.threads)

    z, observed = expanding_zscore(X)
    values = np.where(observed, z, np.nan).reshape(n_series * length, channels)
    crops = tuple(sorted({max(window // 2, 2), window}))
    spec = WindowSpec(
        feature_names=tuple(f"c{i}" for i in range(channels)),
        open_known_features=tuple(f"c{i}" for i in range(channels)),  # generic arrays: nothing is censored
        window_max=window,
        crop_lengths=crops,
        min_history=min(crops),
    )
    # Every step with at least min_history steps behind it can end a window.
    pos = np.arange(length)
    ends = pos[pos >= spec.min_history - 1]
    decision_row = (np.arange(n_series)[:, None] * length + ends[None, :]).reshape(-1)
    ticker_start = np.repeat(np.arange(n_series) * length, len(ends))
    model = build_backbone(BackboneConfig(kind=backbone, **backbone_kw), channels)
    obj = build_objective(objective, model, objective_kw)
    sampler = WindowSampler(
        values=values,
        ticker_start=ticker_start,
        decision_row=decision_row,
        spec=spec,
        augment=AugmentConfig(**augment_kw),
        n_views=cls.n_views,
        batch_size=train_cfg.batch_size,
        seed=train_cfg.seed,
        normalize=False,
        future_bars=obj.future_bars,
    )
    result = train(obj, sampler, train_cfg, log=log or (lambda _msg: None))
    return Encoder(
        obj.backbone,
        normalization="expanding_zscore",
        pooling=pooling,
        meta={
            "objective": objective,
            "objective_config": obj.config.model_dump(mode="json"),
            "train": train_cfg.model_dump(mode="json"),
            "window": window,
            "mean_loss": result.mean_loss,
            "final_loss": result.final_loss,
        },
    )
