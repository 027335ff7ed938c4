"""A tiny synthetic market with train/val windows, and a short pretraining run on it (shared by the
Patch-MAE and CPC tests)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from screener_ssl.data.features import FeatureStore, compute_shape_features
from screener_ssl.data.synthetic import SyntheticMarketConfig, generate_market
from screener_ssl.data.windows import WindowIndex, WindowSpec, build_window_index, gather_windows
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.checks import collapse_report
from screener_ssl.ssl.encoder import Encoder
from screener_ssl.ssl.objectives import build_objective
from screener_ssl.ssl.sampler import WindowSampler
from screener_ssl.ssl.trainer import TrainConfig, TrainResult, seed_everything, train

SPEC = WindowSpec(window_max=32, crop_lengths=(32,), min_history=16)
BACKBONE = BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=3)
TINY = {"steps": 120, "batch_size": 32, "lr": 3e-3, "min_effective_rank": 3.0}


@lru_cache(maxsize=1)
def tiny_market() -> tuple[FeatureStore, WindowIndex]:
    bars = generate_market(SyntheticMarketConfig(n_tickers=8, n_days=400, seed=0, difficulty=0.2)).bars
    store = compute_shape_features(bars, volume_lookback=SPEC.volume_lookback)
    return store, build_window_index(store, SPEC)


def split_sampler(objective, split: str = "train", batch_size: int = 32, seed: int = 0) -> WindowSampler:
    store, index = tiny_market()
    pos = index.rows_of(split)
    return WindowSampler(
        values=store.values,
        ticker_start=store.offsets[:-1][index.ticker_id[pos]],
        decision_row=index.decision_row[pos],
        spec=SPEC,
        augment=AugmentConfig(),
        n_views=type(objective).n_views,
        batch_size=batch_size,
        seed=seed,
        future_bars=objective.future_bars,
    )


def val_embeddings(backbone, n: int = 512) -> np.ndarray:
    store, index = tiny_market()
    pos = index.rows_of("val")
    pos = np.sort(np.random.default_rng(0).choice(pos, size=min(n, len(pos)), replace=False))
    x, observed = gather_windows(
        store.values, store.offsets[:-1][index.ticker_id[pos]], index.decision_row[pos], SPEC.window_max,
        open_known=SPEC.open_known_mask,
    )
    return Encoder(backbone, normalization="none").encode_prepared(x, observed)


def train_on_tiny_market(name: str, config: dict, seed: int = 0) -> tuple[TrainResult, dict]:
    """Pretrain ``name`` for a few steps on the tiny market's train split; collapse report on val."""
    result, collapse, _ = train_objective_on_tiny_market(name, config, seed)
    return result, collapse


def train_objective_on_tiny_market(name: str, config: dict, seed: int = 0):
    """As :func:`train_on_tiny_market`, also returning the trained objective."""
    seed_everything(seed, 1)
    torch.set_num_threads(1)
    backbone = build_backbone(BACKBONE, SPEC.n_features)
    objective = build_objective(name, backbone, config)
    sampler = split_sampler(objective, batch_size=TINY["batch_size"], seed=seed)
    cfg = TrainConfig(steps=TINY["steps"], batch_size=TINY["batch_size"], lr=TINY["lr"], seed=seed, threads=1,
                      log_every=1000)
    result = train(objective, sampler, cfg, log=lambda _m: None)
    return result, collapse_report(val_embeddings(objective.backbone)), objective
