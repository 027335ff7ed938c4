"""A tiny sweep and data root so the real asset graph runs in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SWEEP = """
dataset:
  synthetic: {n_tickers: 10, n_days: 420, seed: 1, difficulty: 0.2}
  window: {window_max: 32, crop_lengths: [16, 32], min_history: 16, label_horizon: 5}
defaults:
  backbone: {kind: tcn, embed_dim: 16, hidden_dim: 16, n_layers: 2}
  train: {steps: 6, batch_size: 16, seed: 0, threads: 2, checkpoint_every: 3, log_every: 3}
  probe: {n_boot: 20, stability_windows: 16, stability_augs: 2, max_train_windows: 2000}
objectives:
  masked_recon:
    variants: {base: {}, full: {train: {steps: 8}}}
  vicreg:
    variants: {base: {}}
  raw_features:
    variants: {base: {}}
"""


@pytest.fixture
def tiny_env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(TINY_SWEEP)
    env = {
        "SCREENER_SSL_DATA_DIR": str(tmp_path / "data"),
        "SCREENER_SSL_SWEEP": str(sweep),
        "SCREENER_SSL_BARS": "synthetic",
        "SCREENER_SSL_LABELS": "synthetic",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
