"""SIGKILL pretraining at random steps, then resume: bit-identical weights, no half-written artifact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from screener_ssl.ssl.checkpoint import load_checkpoint
from screener_ssl.tracking.index import build_index, iter_run_dirs
from screener_ssl_tests.faults import _victim
from screener_ssl_tests.faults.conftest import hidden_leftovers

REPO = Path(__file__).resolve().parents[2]


def _kill_in_subprocess(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "screener_ssl_tests.faults._victim", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"victim was not killed: rc {proc.returncode}\n{proc.stderr[-2000:]}"


def _weights(objective) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in objective.parameters()])


def test_training_killed_at_random_steps_resumes_bit_exactly(tmp_path):
    straight, straight_result = _victim.run_training(None)
    kill_steps = sorted(np.random.default_rng(14).choice(np.arange(1, _victim.STEPS), size=2, replace=False).tolist())
    checkpoint = tmp_path / "checkpoints" / "run.pt"
    checkpoint.parent.mkdir()
    for kill_at in kill_steps:  # killed twice: the second run resumes, then dies again
        _kill_in_subprocess("train", str(checkpoint), str(kill_at))
        visible = [p.name for p in checkpoint.parent.iterdir() if not p.name.startswith(".")]
        assert visible == ([] if kill_at < 3 else ["run.pt"])
        if kill_at >= 3:
            # A checkpoint is the last one completed before the kill, and loads whole.
            assert load_checkpoint(checkpoint)["step"] == (kill_at - 1) // 2 * 2
    resumed, result = _victim.run_training(checkpoint)
    assert result.resumed_from_step == (kill_steps[-1] - 1) // 2 * 2
    assert torch.equal(_weights(resumed), _weights(straight))
    assert result.losses == straight_result.losses  # the loss curve, restored steps included


def test_a_run_killed_while_writing_its_dir_leaves_nothing_visible_and_resumes(tmp_path):
    root, sweep = tmp_path / "root", tmp_path / "sweep.yaml"
    sweep.write_text(_victim.TINY_SWEEP)
    _victim.prepare_root(root)
    _kill_in_subprocess("pipeline", str(root), str(sweep), "run_meta.json")
    assert list(iter_run_dirs(root / "models")) == []  # the half-written dir is hidden
    assert build_index(root / "models").height == 0
    assert any(".tmp-" in p for p in hidden_leftovers(root / "models"))
    assert list((root / "checkpoints").glob("*.pt")), "the checkpoint to resume from is gone"
    outcome = _victim.run_pipeline(root, sweep, None)
    assert outcome.result.resumed_from_step == 4
    assert [run_id for _, run_id, _ in iter_run_dirs(root / "models")] == [outcome.run_dir.name]
    assert not list((root / "checkpoints").glob("*.pt"))  # a finished run removes its checkpoint


def test_a_corrupted_run_dir_is_skipped_by_the_index_and_its_weights_error_names_the_file(tmp_path):
    import json

    import pytest

    from screener_ssl.ssl.encoder import load_encoder

    root, sweep = tmp_path / "root", tmp_path / "sweep.yaml"
    sweep.write_text(_victim.TINY_SWEEP)
    _victim.prepare_root(root)
    good = _victim.run_pipeline(root, sweep, None).run_dir
    bad = _victim.run_pipeline(root, sweep, None).run_dir
    (bad / "pretrain_config.json").write_text((bad / "pretrain_config.json").read_text()[:50])
    (bad / "encoder.pt").write_bytes((bad / "encoder.pt").read_bytes()[:100])
    problems: list[dict] = []
    index = build_index(root / "models", problems)
    assert index["run_dir"].to_list() == [str(good)]
    assert [p["run_dir"] for p in problems] == [str(bad)] and "pretrain_config.json" in problems[0]["error"]
    with pytest.raises(ValueError, match=r"encoder weights .*encoder\.pt cannot be loaded"):
        load_encoder(bad)
    load_encoder(good)
    assert json.loads((good / "pretrain_config.json").read_text())["objective"] == "masked_recon"
