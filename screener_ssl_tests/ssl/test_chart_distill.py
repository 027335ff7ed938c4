"""chart_distill: the distillation loss in closed form, stop-gradients, causal image augmentation, the
teacher as an encoder (save/load, causal), and a short run on a tiny market (loss down, no collapse)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.checks import effective_rank, no_lookahead_report
from screener_ssl.ssl.encoder import Encoder
from screener_ssl.ssl.objectives import build_objective, get_objective_class
from screener_ssl.ssl.objectives.chart_distill import (
    ChartTeacher,
    ImageAugmentConfig,
    augment_images,
    distillation_loss,
    standardize,
    teacher_encoder,
)
from screener_ssl.ssl.render import render_candles
from screener_ssl_tests.conftest import random_walk_bars
from screener_ssl_tests.ssl.test_vq_mtm import SPEC, tiny_sampler

SMALL = {"teacher_width": 4, "teacher_dim": 16, "vicreg": {"expander_dim": 32}, "distill_warmup_frac": 0.2}


def small_objective(seed: int = 0):
    torch.manual_seed(seed)
    backbone = build_backbone(BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=3), 6)
    return build_objective("chart_distill", backbone, SMALL)


# --- the distillation loss ------------------------------------------------------------------------


def test_distillation_loss_is_zero_when_the_student_predicts_the_teacher():
    teacher = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)) * 3 + 2
    assert float(distillation_loss(standardize(teacher), teacher)) == pytest.approx(0.0, abs=1e-10)
    # Predicting the mean costs one variance unit per dimension; the teacher's scale does not matter.
    assert float(distillation_loss(torch.zeros(32, 8), teacher)) == pytest.approx(1.0, abs=1e-4)
    assert float(distillation_loss(torch.zeros(32, 8), 100 * teacher)) == pytest.approx(1.0, abs=1e-4)


def test_distillation_gradient_reaches_the_student_only():
    student = torch.randn(16, 4, requires_grad=True)
    teacher = torch.randn(16, 4, requires_grad=True)
    distillation_loss(student, teacher).backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    assert teacher.grad is None


def test_teacher_and_student_learn_from_their_own_terms_only():
    objective = small_objective()
    objective.train()
    objective.progress.fill_(1.0)  # past the warmup: the distillation term is on
    batch = tiny_sampler(n_views=2, batch_size=16).sample()
    out = objective(batch)
    student_params = list(objective.backbone.parameters()) + list(objective.predictor.parameters())
    teacher_params = list(objective.teacher.parameters())
    teacher_grads = torch.autograd.grad(out.loss, teacher_params, retain_graph=True, allow_unused=True)
    # The distillation term alone gives the teacher nothing (stop-gradient on the target).
    distill = distillation_loss(
        objective.predictor(objective.backbone.pooled(batch.clean.x, batch.clean.observed)),
        objective.teacher(objective.render(batch.clean.x, batch.clean.observed)),
    )
    assert all(g is None for g in torch.autograd.grad(distill, teacher_params, allow_unused=True))
    assert any(g is not None and float(g.abs().sum()) > 0 for g in teacher_grads)
    student_grads = torch.autograd.grad(out.loss, student_params, allow_unused=True)
    assert all(g is not None for g in student_grads)


def test_distillation_weight_ramps_up_over_the_warmup():
    objective = small_objective()
    objective.on_after_step(0, 100)
    assert objective.distill_weight() == 0.0
    objective.on_after_step(10, 100)
    assert objective.distill_weight() == pytest.approx(0.5)
    objective.on_after_step(50, 100)
    assert objective.distill_weight() == pytest.approx(1.0)


# --- image augmentation and the teacher -----------------------------------------------------------


def test_image_augmentation_keeps_the_decision_column_and_drops_only_past_pixels():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, 6, generator=gen)
    images = render_candles(x, torch.ones(64, 32, 6, dtype=torch.bool))
    config = ImageAugmentConfig(max_shift_rows=0, pixel_noise=0.0, erase_prob=1.0)
    out = augment_images(images, config, torch.Generator().manual_seed(1))
    assert torch.equal(out[..., -1], images[..., -1])
    kept = out != 0
    assert torch.equal(out[kept], images[kept]), "augmentation only removes pixels here"
    assert (out == 0).sum() > (images == 0).sum()


def test_teacher_embeds_each_image_independently_of_its_batch():
    torch.manual_seed(0)
    teacher = ChartTeacher(height=40, base_width=4, out_dim=8).eval()
    images = render_candles(torch.randn(6, 32, 6), torch.ones(6, 32, 6, dtype=torch.bool))
    with torch.no_grad():
        together = teacher(images)
        for i in range(6):
            torch.testing.assert_close(teacher(images[i : i + 1]), together[i : i + 1])


def test_mismatched_feature_layout_is_a_clear_error():
    backbone = build_backbone(BackboneConfig(kind="tcn", embed_dim=8, hidden_dim=8, n_layers=2), 4)
    with pytest.raises(ValueError, match="feature_names"):
        build_objective("chart_distill", backbone, {})
    backbone6 = build_backbone(BackboneConfig(kind="tcn", embed_dim=8, hidden_dim=8, n_layers=2), 6)
    with pytest.raises(ValueError, match="log_low_open"):
        build_objective("chart_distill", backbone6, {"feature_names": ("a", "gap", "log_high_open", "b", "c", "d")})


# --- short training ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    objective = small_objective()
    sampler = tiny_sampler(n_views=2, batch_size=24)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    steps, losses, logs = 80, [], []
    objective.train()
    for step in range(steps):
        out = objective(sampler.sample())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        objective.on_after_step(step + 1, steps)
        losses.append(float(out.loss.detach()))
        logs.append(out.logs)
    objective.eval()
    return objective, sampler, losses, logs


def test_short_training_lowers_teacher_and_distillation_losses(trained):
    _, _, losses, logs = trained
    assert all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first - 0.1 * first, f"loss {first:.3f} -> {last:.3f}"
    # Once the distillation term is on, the student closes in on the teacher.
    distill = [entry["distill_loss"] for entry in logs]
    assert np.mean(distill[-10:]) < 0.8 * np.mean(distill[16:26]), f"distill {distill[16:26]} -> {distill[-10:]}"


def test_student_and_teacher_do_not_collapse(trained):
    objective, sampler, _, _ = trained
    batch = sampler.sample()
    with torch.no_grad():
        student = objective.backbone.pooled(batch.clean.x, batch.clean.observed).numpy()
    teacher = objective.teacher_encoder().encode_prepared(batch.clean.x.numpy(), batch.clean.observed.numpy())
    assert effective_rank(student) > 3 and effective_rank(teacher) > 3
    assert student.std(axis=0).min() > 1e-4 and teacher.std(axis=0).min() > 1e-4


def test_teacher_saves_beside_the_encoder_and_loads_with_the_encoder_contract(trained, tmp_path):
    objective, sampler, _, _ = trained
    objective.save_artifacts(tmp_path)
    loaded = teacher_encoder(tmp_path)
    batch = sampler.sample()
    x, observed = batch.clean.x.numpy(), batch.clean.observed.numpy()
    expected = objective.teacher_encoder().encode_prepared(x, observed)
    np.testing.assert_array_equal(loaded.encode_prepared(x, observed), expected)
    # Chunking changes only float rounding (convolution kernels pick per batch size).
    np.testing.assert_allclose(loaded.encode_prepared(x, observed, batch_size=5), expected, atol=1e-5)
    assert loaded.embed_dim == SMALL["teacher_dim"] and loaded.input_channels == 6
    with pytest.raises(FileNotFoundError, match="chart_distill"):
        teacher_encoder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="per_timestep"):
        loaded.encode_prepared(x, observed, per_timestep=True)


def test_student_and_teacher_are_causal(trained):
    objective, _, _, _ = trained
    bars = random_walk_bars(n_tickers=3, n_days=120, seed=5)
    student = no_lookahead_report(Encoder(objective.backbone, normalization="none"), bars, SPEC, n_windows=10)
    teacher = no_lookahead_report(objective.teacher_encoder(), bars, SPEC, n_windows=10)
    assert student["passed"] and teacher["passed"] and teacher["windows_checked"] == 10


def test_config_rejects_bad_values():
    from pydantic import ValidationError

    for bad in ({"distill_weight": 0.0}, {"distill_warmup_frac": 1.0}, {"teacher_width": 1},
                {"image_augment": {"pixel_noise": 2.0}}, {"render": {"price_rows": 4}}, {"nope": 1}):
        with pytest.raises(ValidationError):
            get_objective_class("chart_distill").config_cls.model_validate(bad)


def test_the_registry_names_the_teacher_as_the_run_dirs_reference_encoder(trained, tmp_path):
    from screener_ssl.ssl.objectives import get_objective_class

    objective, sampler, _, _ = trained
    objective.save_artifacts(tmp_path)
    references = get_objective_class("chart_distill").reference_encoders(tmp_path)
    assert list(references) == ["teacher"]
    batch = sampler.sample()
    x, observed = batch.clean.x.numpy(), batch.clean.observed.numpy()
    np.testing.assert_array_equal(
        references["teacher"].encode_prepared(x, observed), objective.teacher_encoder().encode_prepared(x, observed)
    )
    assert get_objective_class("masked_recon").reference_encoders(tmp_path) == {}
