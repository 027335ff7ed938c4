"""Checkpoints load with weights_only=True, name the file when corrupt, and a diverging loss warns."""

from __future__ import annotations

import pathlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from screener_ssl.ssl.checkpoint import CorruptCheckpointError, load_checkpoint, save_checkpoint
from screener_ssl.ssl.batch import ObjectiveOutput
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig
from screener_ssl.ssl.trainer import DivergingLossWarning, TrainConfig, train
from screener_ssl_tests.ssl.test_trainer import _sampler, _train, _values

PACKAGE = Path(__file__).resolve().parents[2] / "screener_ssl"


class _Planted:
    """Unpickling this runs code (touches a file): what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_planted_pickle_in_the_checkpoint_path_runs_no_code(tmp_path):
    marker, planted = tmp_path / "pwned", tmp_path / "run.pt"
    torch.save({"objective": _Planted(marker)}, planted)
    with pytest.raises(CorruptCheckpointError, match=str(planted)):
        _train("masked_recon", 6, checkpoint=planted)
    assert not marker.exists(), "loading the checkpoint executed code"


def test_a_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "masked__base.pt"
    save_checkpoint(path, {"w": torch.ones(3), "step": 2})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptCheckpointError, match=r"masked__base\.pt.*delete it"):
        load_checkpoint(path)


def test_state_round_trips_exactly_through_tensors_and_json(tmp_path):
    rng = np.random.default_rng(7)
    state = {
        "optimizer": {"state": {0: {"exp_avg": torch.randn(3)}}, "param_groups": [{"betas": (0.9, 0.999), "lr": 0.1 / 3}]},
        "sampler": {"rng": rng.bit_generator.state, "gen": torch.Generator().manual_seed(3).get_state()},
        "losses": [1 / 3, float("nan")],
        "step": 5,
        "array": np.arange(4, dtype=np.int16),
    }
    back = load_checkpoint(save_checkpoint(tmp_path / "c.pt", state))
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert back["optimizer"]["param_groups"][0] == {"betas": (0.9, 0.999), "lr": 0.1 / 3}
    assert back["sampler"]["rng"] == state["sampler"]["rng"]
    assert torch.equal(back["sampler"]["gen"], state["sampler"]["gen"])
    assert back["losses"][0] == 1 / 3 and np.isnan(back["losses"][1]) and back["step"] == 5
    assert back["array"].dtype == np.int16 and back["array"].tolist() == [0, 1, 2, 3]
    torch.load(tmp_path / "c.pt", weights_only=True)  # plain weights_only load works too


def test_no_module_loads_torch_files_with_weights_only_false():
    offenders = [
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "weights_only=False" in p.read_text()
    ]
    assert offenders == []


class _Exploding(Objective):
    """A loss that grows tenfold every step (what lr=1.0 does to a real objective, fast)."""

    name = "_exploding_test"

    def __init__(self, growth: float) -> None:
        from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone

        super().__init__(build_backbone(BackboneConfig(kind="tcn", embed_dim=8, hidden_dim=8, n_layers=1), 6),
                         ObjectiveConfig())
        self.growth, self.calls = growth, 0

    def forward(self, batch):
        self.calls += 1
        weight = sum(p.sum() for p in self.backbone.parameters()) * 0.0
        return ObjectiveOutput(loss=weight + self.growth ** self.calls)


@pytest.mark.parametrize("growth, warns", [(10.0, True), (1.0, False)])
def test_a_diverging_loss_warns_and_is_recorded(growth, warns):
    messages: list[str] = []
    config = TrainConfig(steps=12, batch_size=8, lr=1.0, threads=1, log_every=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_Exploding(growth), _sampler(_values(), n_views=1, batch=8), config, log=messages.append)
    diverging = [w for w in caught if issubclass(w.category, DivergingLossWarning)]
    assert bool(diverging) == warns
    assert (result.diverged_at_step is not None) == warns
    if warns:
        assert result.diverged_at_step == 6 and "lower the learning rate (lr=1)" in str(diverging[0].message)
        assert any(m.startswith("WARNING: loss is diverging") for m in messages)
