"""Patch-MAE: patch layout, span masks, leak-free normalization, the loss in closed form, causality, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from screener_ssl.data.windows import zscore_observed
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.objectives import SSLBatch, View, build_objective, get_objective_class
from screener_ssl.ssl.objectives.patch_mae import (
    PatchMAEConfig,
    mae_inputs_and_targets,
    patch_end_steps,
    patch_layout,
    patch_of_step,
    sample_patch_mask,
    visible_standardize,
)
from screener_ssl_tests.ssl.predictive_market import TINY, train_on_tiny_market

torch.set_num_threads(1)


def _censored_clean(seed: int, batch: int = 8, length: int = 32, channels: int = 6) -> View:
    """Per-window z-scored windows (the sampler's clean view) with an open-only decision bar and left padding."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(batch, length, channels)).astype(np.float32) * 2.0 + 1.0
    observed = np.ones_like(raw, dtype=bool)
    observed[:, -1, :] = False
    observed[:, -1, 1] = True  # the gap
    observed[0, :10] = False  # a short crop: left padding
    raw = np.where(observed, raw, 0.0).astype(np.float32)
    return View(torch.from_numpy(zscore_observed(raw, observed)), torch.from_numpy(observed))


def test_patches_align_to_the_end_of_the_window():
    assert patch_layout(64, 8) == (8, 0)
    assert patch_layout(20, 8) == (3, 4)  # first patch has 4 padding steps
    assert patch_of_step(20, 8).tolist() == [0] * 4 + [1] * 8 + [2] * 8
    assert patch_end_steps(20, 8).tolist() == [3, 11, 19]
    assert patch_end_steps(64, 16).tolist() == [15, 31, 47, 63]


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_patch_mask_hides_the_exact_share_of_valid_patches_only(ratio):
    torch.manual_seed(0)
    valid = torch.ones(64, 16, dtype=torch.bool)
    valid[:, :4] = False  # empty (padding) patches are never chosen
    hidden = sample_patch_mask(valid, ratio, span_patches=3)
    assert not (hidden & ~valid).any()
    assert (hidden.sum(dim=1) == round(ratio * 12)).all()


def _mean_run_length(hidden: torch.Tensor) -> float:
    runs, total = 0, 0
    for row in hidden.tolist():
        prev = False
        for v in row:
            runs += int(v and not prev)
            total += int(v)
            prev = v
    return total / max(runs, 1)


def test_smoothed_noise_prefers_contiguous_spans():
    torch.manual_seed(0)
    valid = torch.ones(256, 16, dtype=torch.bool)
    independent = _mean_run_length(sample_patch_mask(valid, 0.5, span_patches=1))
    spans = _mean_run_length(sample_patch_mask(valid, 0.5, span_patches=4))
    assert spans > 1.5 * independent, (independent, spans)


def test_a_row_keeps_a_visible_patch():
    torch.manual_seed(0)
    valid = torch.zeros(4, 8, dtype=torch.bool)
    valid[:, -2:] = True
    hidden = sample_patch_mask(valid, 0.95, span_patches=2)
    assert (hidden.sum(dim=1) == 1).all()


def test_visible_standardize_matches_a_zscore_of_the_visible_cells():
    clean = _censored_clean(0)
    visible = clean.observed.clone()
    visible[:, 8:16] = False
    visible[1, :-2, 3] = False  # one visible cell left: no usable statistics for that channel
    z, ok = visible_standardize(clean.x, clean.observed, visible)
    x, vis, obs = clean.x.numpy(), visible.numpy(), clean.observed.numpy()
    cells = np.ma.masked_array(x, mask=~vis)
    mean, std = cells.mean(axis=1, keepdims=True).filled(0), cells.std(axis=1, keepdims=True).filled(0)
    expected = np.where(obs, (x - mean) / (std + 1e-6), 0.0)
    enough = vis.sum(axis=1, keepdims=True) >= 2
    assert np.array_equal(ok.numpy(), enough) and not enough[1, 0, 3] and enough.sum() == enough.size - 1
    np.testing.assert_allclose(np.where(enough, z.numpy(), 0), np.where(enough, expected, 0), rtol=1e-4, atol=1e-4)


def test_a_masked_target_is_not_a_function_of_the_visible_normalized_values():
    """Change only the raw hidden bars: the encoder input must not move, the target must."""
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(4, 32, 6)).astype(np.float32)
    observed = np.ones_like(raw, dtype=bool)
    hidden_steps = torch.zeros(4, 32, dtype=torch.bool)
    hidden_steps[:, 8:16] = True
    perturbed = raw.copy()
    perturbed[:, 8:16] = rng.normal(size=(4, 8, 6)) * 3.0 + 2.0
    obs = torch.from_numpy(observed)
    clean_a = torch.from_numpy(zscore_observed(raw, observed))  # what the sampler hands over
    clean_b = torch.from_numpy(zscore_observed(perturbed, observed))
    # The sampler's window statistics include the hidden bars: its visible values do move.
    assert not torch.allclose(clean_a[:, :8], clean_b[:, :8], atol=1e-3)
    for scale in ("window", "visible"):
        x_a, vis_a, target_a, counted_a = mae_inputs_and_targets(clean_a, obs, hidden_steps, scale)
        x_b, vis_b, target_b, counted_b = mae_inputs_and_targets(clean_b, obs, hidden_steps, scale)
        assert torch.equal(vis_a, vis_b) and torch.equal(counted_a, counted_b)
        torch.testing.assert_close(x_a, x_b, rtol=0, atol=1e-5)
        assert not torch.allclose(target_a[counted_a], target_b[counted_b], atol=1e-2)
        # Hidden cells never reach the encoder.
        assert not vis_a[:, 8:16].any() and bool((x_a[:, 8:16] == 0).all())


def test_counted_cells_are_hidden_observed_and_uncensored():
    clean = _censored_clean(1)
    hidden_steps = torch.zeros(8, 32, dtype=torch.bool)
    hidden_steps[:, 24:] = True  # includes the censored decision bar and nothing of the padding
    hidden_steps[0, :10] = True  # padding only
    _, _, _, counted = mae_inputs_and_targets(clean.x, clean.observed, hidden_steps)
    assert not (counted & ~clean.observed).any()
    assert counted[:, -1, 1].all() and not counted[:, -1, [0, 2, 3, 4, 5]].any()
    assert not counted[0, :10].any()


def _objective(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    backbone = build_backbone(BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2), 6)
    return build_objective("patch_mae", backbone, {"decoder_dim": 16, "decoder_heads": 2, **config})


def _batch(view: View) -> SSLBatch:
    n = view.x.shape[0]
    return SSLBatch(views=[], clean=view, ticker_id=torch.arange(n), decision_row=torch.full((n,), 100))


def test_raw_loss_in_closed_form_with_a_zero_decoder():
    """A decoder that predicts 0 everywhere costs mean Huber(0, target) over the counted cells."""
    objective = _objective({"patch_len": 8, "mask_ratio": 0.5})
    with torch.no_grad():
        objective.decoder.out.weight.zero_()
        objective.decoder.out.bias.zero_()
    clean = _censored_clean(2)
    torch.manual_seed(7)
    out = objective(_batch(clean))
    torch.manual_seed(7)  # the same patch mask again
    hidden_patches, valid, hidden_steps = objective._mask(clean.observed)
    _, _, target, counted = mae_inputs_and_targets(clean.x, clean.observed, hidden_steps, "window")
    expected = F.huber_loss(torch.zeros_like(target[counted]), target[counted], delta=1.0)
    torch.testing.assert_close(out.loss, expected)
    assert out.logs["counted_cells"] == float(counted.sum())
    assert out.logs["hidden_patch_share"] == pytest.approx(float(hidden_patches.sum() / valid.sum()))


@pytest.mark.parametrize(
    "config",
    [{}, {"target": "latent"}, {"contrastive_weight": 0.2}, {"patch_len": 12}, {"target_scale": "visible"}],
)
def test_each_variant_backpropagates_into_the_backbone(config):
    objective = _objective(config)
    out = objective(_batch(_censored_clean(3)))
    assert math.isfinite(float(out.loss.detach()))
    out.loss.backward()
    grads = [p.grad for p in objective.backbone.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_config_rejects_bad_settings_and_records_the_schema_fields():
    with pytest.raises(ValueError):
        PatchMAEConfig(patch_len=1)
    with pytest.raises(ValueError):
        PatchMAEConfig(mask_ratio=1.0)
    with pytest.raises(ValueError):
        PatchMAEConfig(target="pixels")
    with pytest.raises(ValueError):
        PatchMAEConfig(bogus=1)
    dumped = PatchMAEConfig().model_dump(mode="json")
    assert {"patch_len", "mask_ratio", "target"} <= set(dumped)
    assert get_objective_class("patch_mae").n_views == 0


def test_trained_encoder_stays_causal():
    objective = _objective({})
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    for seed in range(5):
        out = objective(_batch(_censored_clean(seed)))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    backbone = objective.backbone.eval()
    clean = _censored_clean(9)
    t = 20
    x2, o2 = clean.x.clone(), clean.observed.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 50
    o2[:, t + 1 :] = ~o2[:, t + 1 :]
    with torch.no_grad():
        h1, h2 = backbone(clean.x, clean.observed), backbone(x2, o2)
    assert torch.equal(h1[:, : t + 1], h2[:, : t + 1])
    assert not torch.equal(h1[:, t + 1 :], h2[:, t + 1 :])


@pytest.mark.parametrize("config", [{}, {"target": "latent"}])
def test_short_training_on_a_tiny_market_lowers_the_loss_without_collapse(config):
    result, collapse = train_on_tiny_market("patch_mae", {"decoder_dim": 16, "decoder_heads": 2, **config})
    assert result.final_loss < 0.95 * result.first_loss, (result.first_loss, result.final_loss)
    assert not collapse["collapsed"], collapse
    assert collapse["effective_rank"] > TINY["min_effective_rank"], collapse


def test_schema_records_patch_size_mask_ratio_and_target():
    from screener_ssl.data.windows import WindowSpec
    from screener_ssl.ssl.augment import AugmentConfig
    from screener_ssl.ssl.schema import SSLSchema
    from screener_ssl.runs.sweep import load_sweep

    def schema(variant: str) -> SSLSchema:
        point = load_sweep().point("patch_mae", variant)
        objective = build_objective("patch_mae", build_backbone(point.backbone, 6), point.objective_config)
        return SSLSchema(
            window_spec=WindowSpec(), spec_fingerprint="s", dataset_fingerprint="d", augmentation=AugmentConfig(),
            objective="patch_mae", objective_config=objective.config.model_dump(mode="json"), encoder=point.backbone,
        )

    base, patch16, latent = schema("base"), schema("patch-16"), schema("latent")
    recorded = SSLSchema.from_json(patch16.to_json()).objective_config
    assert (recorded["patch_len"], recorded["mask_ratio"], recorded["target"]) == (16, 0.5, "raw")
    assert latent.objective_config["target"] == "latent"
    assert len({base.fingerprint, patch16.fingerprint, latent.fingerprint}) == 3
