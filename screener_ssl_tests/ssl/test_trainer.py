"""Sampler, trainer reproducibility and resume, the Python API, and schema locking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.api import pretrain
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.encoder import expanding_zscore, load_encoder
from screener_ssl.ssl.batch import ObjectiveOutput
from screener_ssl.ssl.objectives.base import Objective, build_objective
from screener_ssl.ssl.sampler import WindowSampler
from screener_ssl.ssl.schema import SchemaMismatchError, SSLSchema, load_schema
from screener_ssl.ssl.trainer import NonFiniteLossError, TrainConfig, seed_everything, train

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
SMALL = BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2)


def _values(n=400, c=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32)


def _sampler(values, n_views=2, seed=0, batch=16):
    rows = np.arange(40, len(values), dtype=np.int64)
    return WindowSampler(values, np.zeros_like(rows), rows, SPEC, AugmentConfig(), n_views, batch, seed)


def test_paired_views_share_the_decision_pos_and_censoring():
    batch = _sampler(_values()).sample()
    assert len(batch.views) == 2
    gap = SPEC.feature_names.index("gap")
    for view in (batch.clean, *batch.views):
        assert view.x.shape == (16, 32, 6)
        last = view.observed[:, -1]
        # Open-only decision bar in every view (channel dropout may hide the gap too).
        assert not last[:, [i for i in range(6) if i != gap]].any()
    assert batch.decision_row.shape == (16,)


def test_sampler_never_reads_past_the_decision_bar():
    values = _values()
    d = 200
    rows = np.array([d], dtype=np.int64)
    perturbed = values.copy()
    perturbed[d + 1 :] = 1e3
    perturbed[d, [i for i in range(6) if SPEC.feature_names[i] != "gap"]] = -1e3
    a = WindowSampler(values, np.zeros(1, np.int64), rows, SPEC, AugmentConfig(), 2, 8, seed=5).sample()
    b = WindowSampler(perturbed, np.zeros(1, np.int64), rows, SPEC, AugmentConfig(), 2, 8, seed=5).sample()
    for va, vb in zip((a.clean, *a.views), (b.clean, *b.views)):
        assert torch.equal(va.x, vb.x) and torch.equal(va.observed, vb.observed)
    # Perturbing a visible bar does change the batch, so the equality above is not vacuous.
    visible = values.copy()
    visible[d - 1] += 5
    c = WindowSampler(visible, np.zeros(1, np.int64), rows, SPEC, AugmentConfig(), 2, 8, seed=5).sample()
    assert not torch.equal(a.clean.x, c.clean.x)


def _train(objective_name, steps, seed=0, checkpoint=None, log=lambda _m: None, threads=1):
    seed_everything(seed, threads)
    backbone = build_backbone(SMALL, 6)
    objective = build_objective(objective_name, backbone, {})
    sampler = _sampler(_values(seed=1), n_views=type(objective).n_views, seed=seed)
    cfg = TrainConfig(steps=steps, batch_size=16, seed=seed, threads=threads, checkpoint_every=5, log_every=4)
    result = train(objective, sampler, cfg, checkpoint_path=checkpoint, log=log)
    return objective, result


def _weights(objective):
    return torch.cat([p.detach().flatten() for p in objective.backbone.parameters()])


def test_same_seed_and_threads_give_bit_identical_weights():
    a, _ = _train("masked_recon", 12, seed=3)
    b, _ = _train("masked_recon", 12, seed=3)
    c, _ = _train("masked_recon", 12, seed=4)
    assert torch.equal(_weights(a), _weights(b))
    assert not torch.equal(_weights(a), _weights(c))


def _train_killed_at_step_8(ckpt) -> None:
    """12 steps of masked_recon (seed 2) checkpointing to ``ckpt``, killed when step 8 is logged."""

    def killer(message):
        if message.startswith("step 8/"):
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        _train("masked_recon", 12, seed=2, checkpoint=ckpt, log=killer)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    ckpt = tmp_path / "run.pt"
    _train_killed_at_step_8(ckpt)
    assert ckpt.exists()
    messages = []
    resumed, result = _train("masked_recon", 12, seed=2, checkpoint=ckpt, log=messages.append)
    assert result.resumed_from_step == 5 and any("resumed" in m for m in messages)
    straight, _ = _train("masked_recon", 12, seed=2)
    assert torch.equal(_weights(resumed), _weights(straight))


def test_a_pretraining_checkpoint_from_before_the_shared_loop_resumes_and_a_foreign_one_is_refused(tmp_path):
    from screener_ssl.ssl.checkpoint import load_checkpoint, save_checkpoint

    ckpt = tmp_path / "run.pt"
    _train_killed_at_step_8(ckpt)
    state = load_checkpoint(ckpt)
    state["objective"] = state.pop("model")  # the key pretraining checkpoints used to carry
    save_checkpoint(ckpt, state)
    resumed, result = _train("masked_recon", 12, seed=2, checkpoint=ckpt)
    straight, _ = _train("masked_recon", 12, seed=2)
    assert result.resumed_from_step == 5 and torch.equal(_weights(resumed), _weights(straight))
    save_checkpoint(ckpt, {"step": 3, "losses": [1.0, 1.0, 1.0]})
    with pytest.raises(ValueError, match=r"run\.pt lacks \['objective', 'optimizer'.*delete it"):
        _train("masked_recon", 12, seed=2, checkpoint=ckpt)


def test_masked_recon_lowers_its_loss():
    _, result = _train("masked_recon", 80, seed=0, threads=2)
    assert result.final_loss < result.first_loss * 0.95


class _NaNObjective(Objective):
    name = "nan_for_test"
    n_views = 0

    def forward(self, batch):
        out = self.backbone(batch.clean.x, batch.clean.observed).sum() * float("nan")
        return ObjectiveOutput(loss=out)


def test_non_finite_loss_stops_with_a_clear_error():
    from screener_ssl.ssl.objectives.base import ObjectiveConfig

    obj = _NaNObjective(build_backbone(SMALL, 6), ObjectiveConfig())
    with pytest.raises(NonFiniteLossError, match="non-finite loss.*step 0"):
        train(obj, _sampler(_values(), n_views=0), TrainConfig(steps=3, batch_size=8))


def test_expanding_zscore_is_causal():
    rng = np.random.default_rng(0)
    X = rng.normal(2, 3, (4, 50, 3)).astype(np.float32)
    X[1, 10, 2] = np.nan
    z, obs = expanding_zscore(X)
    Y = X.copy()
    Y[:, 31:] = rng.normal(100, 50, (4, 19, 3))
    z2, obs2 = expanding_zscore(Y)
    assert np.array_equal(z[:, :31], z2[:, :31]) and np.array_equal(obs[:, :31], obs2[:, :31])
    assert not obs[1, 10, 2] and z[1, 10, 2] == 0


def test_python_api_pretrain_encode_save_load(tmp_path):
    rng = np.random.default_rng(0)
    X = np.cumsum(rng.normal(size=(12, 48, 3)), axis=1).astype(np.float32)
    X[0, 5, 1] = np.nan
    enc = pretrain(X, objective="masked_recon", backbone="tcn", steps=10, batch_size=8, embed_dim=8, hidden_dim=8, n_layers=2)
    assert enc.encode(X).shape == (12, 8)
    per_t = enc.encode(X, per_timestep=True)
    assert per_t.shape == (12, 48, 8)
    np.testing.assert_allclose(per_t[:, -1], enc.encode(X), atol=1e-6)
    # encode(X, per_timestep=True)[:, t] depends only on X[:, :t+1], normalization included.
    t = 20
    Y = X.copy()
    Y[:, t + 1 :] = rng.normal(50, 10, Y[:, t + 1 :].shape)
    assert np.array_equal(enc.encode(Y, per_timestep=True)[:, : t + 1], per_t[:, : t + 1])
    assert not np.array_equal(enc.encode(Y, per_timestep=True)[:, t + 1 :], per_t[:, t + 1 :])
    enc.save(tmp_path / "enc")
    again = load_encoder(tmp_path / "enc")
    assert np.array_equal(again.encode(X), enc.encode(X))
    with pytest.raises(ValueError, match=r"\[N, T, 3\]"):
        enc.encode(X[:, :, :2])


def test_schema_round_trip_and_mismatch_lists_fields(tmp_path):
    schema = SSLSchema(
        window_spec=SPEC,
        spec_fingerprint=SPEC.fingerprint(),
        dataset_fingerprint="abc",
        augmentation=AugmentConfig(),
        objective="masked_recon",
        objective_config={"mask_ratio": 0.15},
        encoder=SMALL,
    )
    path = tmp_path / "schema.json"
    path.write_text(schema.to_json())
    assert load_schema(path, SPEC).fingerprint == schema.fingerprint
    other = SPEC.model_copy(update={"window_max": 48, "label_horizon": 3, "embargo": 51})
    with pytest.raises(SchemaMismatchError) as err:
        load_schema(path, other)
    assert "window_max: expected 48, found 32" in str(err.value)
    assert "label_horizon" in str(err.value)
    tampered = json.loads(path.read_text())
    tampered["objective"] = "vicreg"
    path.write_text(json.dumps(tampered))
    with pytest.raises(SchemaMismatchError, match="fingerprint"):
        load_schema(path)
