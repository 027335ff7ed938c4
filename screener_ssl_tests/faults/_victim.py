"""Processes the fault tests kill with SIGKILL: a training loop, and a pretraining run writing its dir.

python -m screener_ssl_tests.faults._victim train <checkpoint> <kill_at_step>
python -m screener_ssl_tests.faults._victim pipeline <data_root> <sweep_file> <file_to_die_on>
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.objectives.base import build_objective
from screener_ssl.ssl.sampler import WindowSampler
from screener_ssl.ssl.trainer import TrainConfig, seed_everything, train

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
STEPS = 10
TINY_SWEEP = """
dataset:
  window: {window_max: 32, crop_lengths: [16, 32], min_history: 16, label_horizon: 5}
defaults:
  backbone: {kind: tcn, embed_dim: 8, hidden_dim: 8, n_layers: 2}
  train: {steps: 6, batch_size: 8, seed: 1, threads: 1, checkpoint_every: 2, log_every: 1}
objectives:
  masked_recon:
    variants: {base: {}}
"""


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def run_training(checkpoint: Path | None, kill_at_step: int | None = None, seed: int = 3):
    """A tiny masked_recon run: checkpoint every 2 steps, log every step; SIGKILL itself at ``kill_at_step``."""
    seed_everything(seed, 1)
    values = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)
    rows = np.arange(40, len(values), dtype=np.int64)
    objective = build_objective("masked_recon", build_backbone(BackboneConfig(kind="tcn", embed_dim=8, hidden_dim=8,
                                                                              n_layers=2), 6), {})
    sampler = WindowSampler(values, np.zeros_like(rows), rows, SPEC, AugmentConfig(), 1, 8, seed)
    config = TrainConfig(steps=STEPS, batch_size=8, seed=seed, threads=1, checkpoint_every=2, log_every=1)

    def log(message: str) -> None:
        if kill_at_step is not None and message.startswith(f"step {kill_at_step}/"):
            die()

    result = train(objective, sampler, config, checkpoint_path=checkpoint, log=log)
    return objective, result


def prepare_root(root: Path) -> None:
    from screener_ssl.data import dataset as ds
    from screener_ssl.data.synthetic import SyntheticMarketConfig

    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=4, n_days=300, seed=2))
    ds.build_features(root, SPEC.volume_lookback)
    ds.build_windowed_dataset(root, SPEC)


def run_pipeline(root: Path, sweep_file: Path, die_on: str | None):
    from screener_ssl.data.dataset import load_dataset
    from screener_ssl.runs import pretrain, writer
    from screener_ssl.runs.sweep import load_sweep

    if die_on:
        real = writer.atomic_write_json

        def write_then_maybe_die(path, obj):
            if Path(path).name == die_on:
                die()
            return real(path, obj)

        writer.atomic_write_json = write_then_maybe_die
    point = load_sweep(sweep_file).point("masked_recon", "base")
    return pretrain.pretrain_partition(load_dataset(root, with_labels=False), point, root, log=lambda _m: None)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "train":
        run_training(Path(sys.argv[2]), int(sys.argv[3]))
    elif mode == "pipeline":
        run_pipeline(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
    raise SystemExit("the victim was not killed")
