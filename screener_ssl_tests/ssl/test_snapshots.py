"""Encoder snapshots for budget curves: taken at the chosen steps, equal to the loop's weights there,
free of side effects on training (same weights, same resume), causal like the final encoder."""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.objectives.base import build_objective
from screener_ssl.ssl.sampler import WindowSampler
from screener_ssl.ssl.snapshots import EncoderSnapshots, encoder_state, snapshot_file, snapshot_steps
from screener_ssl.ssl.trainer import TrainConfig, seed_everything, train
from screener_ssl.tracking.cleanup import clean_data_root

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
SMALL = BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2)
QUIET = lambda _m: None  # noqa: E731


def _sampler(seed: int) -> WindowSampler:
    values = np.random.default_rng(1).normal(size=(400, 6)).astype(np.float32)
    rows = np.arange(40, len(values), dtype=np.int64)
    return WindowSampler(values, np.zeros_like(rows), rows, SPEC, AugmentConfig(), 1, 16, seed)


def _train(steps: int, seed: int = 2, checkpoint=None, snapshot=None, log=QUIET):
    seed_everything(seed, 1)
    objective = build_objective("masked_recon", build_backbone(SMALL, 6), {})
    config = TrainConfig(steps=steps, batch_size=16, seed=seed, threads=1, checkpoint_every=5, log_every=4)
    train(objective, _sampler(seed), config, checkpoint_path=checkpoint, log=log, snapshot=snapshot)
    return objective


def _flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten().float() for t in state.values()])


def test_snapshot_steps_round_fractions_of_the_run_and_bad_fractions_are_refused():
    assert snapshot_steps(300, (0.1, 0.3, 1.0)) == (30, 90, 300)
    assert snapshot_steps(4, (0.1, 0.3, 1.0)) == (1, 4)  # 0.4 -> step 1 (at least one), 1.2 -> 1
    assert TrainConfig().curve_fracs == (0.1, 0.3, 1.0)
    assert TrainConfig(curve_fracs=()).curve_fracs == ()
    for bad in ((0.3, 0.1), (0.0, 1.0), (0.5, 1.5), (0.2, 0.2)):
        with pytest.raises(ValidationError, match="curve_fracs"):
            TrainConfig(curve_fracs=bad)


def test_snapshots_hold_the_loops_weights_at_their_steps_and_leave_training_unchanged(tmp_path):
    snapshots = EncoderSnapshots(tmp_path / "curve", snapshot_steps(12, (0.1, 0.3, 1.0)))
    assert snapshots.steps == (1, 4, 12)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def record_then_snapshot(model, done):  # what the loop's weights were after each step
        seen[done] = copy.deepcopy(encoder_state(model.backbone))
        snapshots(model, done)

    with_snapshots = _train(12, snapshot=record_then_snapshot)
    assert sorted(p.name for p in (tmp_path / "curve").iterdir()) == [snapshot_file(s) for s in (1, 4, 12)]
    for step in (1, 4, 12):
        saved = torch.load(tmp_path / "curve" / snapshot_file(step), weights_only=True)
        assert saved.keys() == seen[step].keys()
        assert all(torch.equal(saved[k], seen[step][k]) for k in saved)
    # The snapshots differ from one another (training moved the weights), so the equality is not vacuous.
    assert not torch.equal(_flat(seen[1]), _flat(seen[4]))
    final = torch.load(tmp_path / "curve" / snapshot_file(12), weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in with_snapshots.backbone.state_dict().items())
    # Same final weights (every parameter of the objective, heads included) as a run without snapshots.
    without = _train(12)
    assert all(torch.equal(a, b) for a, b in zip(with_snapshots.state_dict().values(), without.state_dict().values()))


def test_a_resumed_run_with_snapshots_is_bit_identical_and_keeps_its_earlier_snapshots(tmp_path):
    directory = tmp_path / "run.curve"
    snapshots = EncoderSnapshots(directory, (3, 10, 12))
    ckpt = tmp_path / "run.pt"

    def killer(message):
        if message.startswith("step 8/"):
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        _train(12, checkpoint=ckpt, snapshot=snapshots, log=killer)
    assert snapshots.written() == [3] and ckpt.exists()  # killed after step 8, checkpoint at step 5
    resumed = _train(12, checkpoint=ckpt, snapshot=snapshots)
    straight_dir = EncoderSnapshots(tmp_path / "straight.curve", (3, 10, 12))
    straight = _train(12, snapshot=straight_dir)
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()))
    for step in (3, 10, 12):
        a = torch.load(directory / snapshot_file(step), weights_only=True)
        b = torch.load(straight_dir.directory / snapshot_file(step), weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_cleanup_removes_snapshots_of_runs_whose_checkpoint_is_gone(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for stem in ("alive", "orphan"):
        (checkpoints / f"{stem}.curve").mkdir(parents=True)
        (checkpoints / f"{stem}.curve" / snapshot_file(1)).write_bytes(b"x")
    (checkpoints / "alive.pt").write_bytes(b"x")
    os.utime(checkpoints / "alive.pt", (time.time() + 60.0, time.time() + 60.0))  # a run still training
    removed = clean_data_root(tmp_path, checkpoint_max_age_s=10.0, now=time.time() + 5.0)
    assert removed["checkpoints"] == [] and (checkpoints / "orphan.curve").is_dir()  # too young to go
    removed = clean_data_root(tmp_path, checkpoint_max_age_s=10.0, tmp_max_age_s=1e9, now=time.time() + 60.0)
    assert str(checkpoints / "orphan.curve") in removed["checkpoints"]
    assert not (checkpoints / "orphan.curve").exists()
    # The snapshots of a run whose checkpoint is still there stay, however old.
    assert (checkpoints / "alive.curve").is_dir() and (checkpoints / "alive.pt").exists()
