"""vq_mtm: codebook assignment, commitment, EMA and dead-code restart in closed form; masking and
normalization that exclude masked bars; a short run on a tiny market (loss down, no collapse, causal)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from screener_ssl.data.features import compute_shape_features
from screener_ssl.data.windows import WindowSpec, gather_windows, zscore_observed
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.checks import collapse_report, effective_rank, no_lookahead_report
from screener_ssl.ssl.encoder import Encoder
from screener_ssl.ssl.objectives import View, build_objective, get_objective_class
from screener_ssl.ssl.objectives.vq_mtm import (
    EMACodebook,
    VQMTMConfig,
    codebook_perplexity,
    commitment_loss,
    masked_backbone_input,
    nearest_code,
    patch_end_positions,
    patch_mask_to_time,
    patchify,
    renormalize_visible,
    sample_patch_mask,
    token_cross_entropy,
)
from screener_ssl.ssl.sampler import WindowSampler
from screener_ssl_tests.conftest import random_walk_bars

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 24, 32), min_history=16)


# --- codebook in closed form ---------------------------------------------------------------------


def test_nearest_code_assigns_known_inputs():
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z_e = torch.tensor([[1.0, 1.0], [9.0, -1.0], [-1.0, 8.0], [6.0, 0.0]])
    ids, distances = nearest_code(z_e, codebook)
    assert ids.tolist() == [0, 1, 2, 1]
    torch.testing.assert_close(distances[0], torch.tensor([2.0, 82.0, 82.0]))


def test_commitment_loss_value_and_gradient_reach_only_the_encoder_output():
    z_e = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z_q = torch.zeros(2, 2, requires_grad=True)
    loss = commitment_loss(z_e, z_q)
    assert float(loss.detach()) == pytest.approx((1.0 + 4.0) / 4)  # mean over the 4 cells
    loss.backward()
    torch.testing.assert_close(z_e.grad, torch.tensor([[0.5, 0.0], [0.0, 1.0]]))
    assert z_q.grad is None


def test_ema_update_with_zero_decay_puts_each_used_code_on_the_mean_of_its_inputs():
    book = EMACodebook(size=3, dim=2, decay=0.0, dead_threshold=0.5)
    z_e = torch.tensor([[1.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    book.update(z_e, torch.tensor([0, 0, 2]))
    torch.testing.assert_close(book.codebook[0], torch.tensor([2.0, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(book.codebook[2], torch.tensor([0.0, 5.0]), atol=1e-4, rtol=0)
    assert book.cluster_size.tolist() == [2.0, 0.0, 1.0]
    # Usage tracking alone leaves the codes in place.
    before = book.codebook.clone()
    book.update(torch.tensor([[9.0, 9.0]]), torch.tensor([1]), move_codes=False)
    assert torch.equal(book.codebook, before) and book.cluster_size.tolist() == [0.0, 1.0, 0.0]


def test_dead_codes_restart_on_encoder_outputs_and_live_ones_stay():
    book = EMACodebook(size=4, dim=2, decay=0.9, dead_threshold=0.5)
    book.cluster_size.copy_(torch.tensor([3.0, 0.1, 2.0, 0.0]))
    live = book.codebook[[0, 2]].clone()
    z_e = torch.tensor([[7.0, 7.0], [8.0, 8.0]])
    restarted = book.restart_dead(z_e, torch.Generator().manual_seed(0))
    assert restarted == 2
    for k in (1, 3):
        assert any(torch.equal(book.codebook[k], row) for row in z_e), f"code {k} not moved onto an input"
    assert torch.equal(book.codebook[[0, 2]], live)
    assert book.cluster_size.tolist() == [3.0, 1.0, 2.0, 1.0]
    assert book.restart_dead(z_e) == 0  # nothing is dead any more


def test_perplexity_and_usage():
    assert codebook_perplexity(torch.ones(16)) == pytest.approx(16.0)
    assert codebook_perplexity(torch.tensor([5.0, 0.0, 0.0, 0.0])) == pytest.approx(1.0)
    book = EMACodebook(size=4, dim=2, decay=0.9, dead_threshold=1.0)
    book.cluster_size.copy_(torch.tensor([4.0, 4.0, 0.5, 0.0]))
    usage = book.usage()
    assert usage["usage_share"] == pytest.approx(0.5) and 2.0 < usage["perplexity"] < 2.5


def test_token_cross_entropy_matches_the_definition():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    ids = torch.tensor([0, 1])
    ce, acc = token_cross_entropy(logits, ids)
    expected = -0.5 * (math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(1 / (2 + math.exp(3))))
    assert float(ce) == pytest.approx(expected, rel=1e-5) and acc == pytest.approx(0.5)


# --- patches, masks, normalization ----------------------------------------------------------------


def test_patches_are_anchored_at_the_decision_bar():
    x = torch.arange(10.0).view(1, 10, 1)
    patches, offset = patchify(x, 4)
    assert offset == 2 and patches.shape == (1, 2, 4, 1)
    assert patches[0, :, :, 0].tolist() == [[2, 3, 4, 5], [6, 7, 8, 9]]
    assert patch_end_positions(10, 4).tolist() == [5, 9]
    time = patch_mask_to_time(torch.tensor([[False, True]]), 4, 10)
    assert time[0].tolist() == [False] * 6 + [True] * 4


def test_padding_patches_are_never_masked():
    real = torch.tensor([[False, True, True, True]]).repeat(200, 1)
    mask = sample_patch_mask(real, 0.5, torch.Generator().manual_seed(0))
    assert not mask[:, 0].any() and 0.4 < float(mask[:, 1:].float().mean()) < 0.6


def test_normalization_of_the_backbone_input_excludes_masked_bars():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(4, 16, 3)).astype(np.float32)
    observed = np.ones_like(raw, dtype=bool)
    observed[:, :3] = False  # padding
    time_mask = torch.zeros(4, 16, dtype=torch.bool)
    time_mask[:, 8:12] = True
    visible = observed & ~time_mask.numpy()[:, :, None]
    expected = zscore_observed(np.where(visible, raw, 0.0).astype(np.float32), visible)

    def backbone_input(values: np.ndarray) -> torch.Tensor:
        clean = zscore_observed(np.where(observed, values, 0.0).astype(np.float32), observed)  # the sampler's z-score
        x_in, vis = masked_backbone_input(View(torch.from_numpy(clean), torch.from_numpy(observed)), time_mask)
        assert torch.equal(vis, torch.from_numpy(visible))
        return x_in

    x_in = backbone_input(raw)
    torch.testing.assert_close(x_in, torch.from_numpy(expected), atol=1e-4, rtol=0)
    assert float(x_in[:, 8:12].abs().sum()) == 0.0
    # Whatever the masked bars hold, the backbone's input is the same.
    wild = raw.copy()
    wild[:, 8:12] = rng.normal(5.0, 20.0, size=(4, 4, 3))
    torch.testing.assert_close(backbone_input(wild), x_in, atol=1e-4, rtol=0)


def test_renormalize_of_a_fully_visible_window_is_the_identity():
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(3, 20, 2, generator=gen) * 3 + 1
    observed = torch.ones_like(raw, dtype=torch.bool)
    z = torch.from_numpy(zscore_observed(raw.numpy(), observed.numpy()))
    torch.testing.assert_close(renormalize_visible(z, observed), z, atol=1e-4, rtol=0)


# --- short training on a tiny market --------------------------------------------------------------


def tiny_sampler(n_views: int, batch_size: int = 32, seed: int = 0) -> WindowSampler:
    store = compute_shape_features(random_walk_bars(n_tickers=6, n_days=260, seed=seed))
    starts = store.offsets[:-1]
    rows, ticker_start = [], []
    for start, end in zip(starts, store.offsets[1:], strict=True):
        r = np.arange(start + SPEC.min_history + 20, end)
        rows.append(r)
        ticker_start.append(np.full(len(r), start))
    return WindowSampler(
        store.values, np.concatenate(ticker_start), np.concatenate(rows), SPEC, AugmentConfig(),
        n_views=n_views, batch_size=batch_size, seed=seed,
    )


SMALL = {"codebook_size": 16, "code_dim": 8, "tokenizer_hidden": 32, "patch_len": 4}


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=3), 6)
    objective = build_objective("vq_mtm", backbone, SMALL)
    sampler = tiny_sampler(n_views=0)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    steps, losses, logs = 120, [], []
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


def test_short_training_lowers_the_loss_and_the_token_ce(trained):
    _, _, losses, logs = trained
    assert all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:12]), np.mean(losses[-12:])
    assert last < first - 0.1 * first, f"loss {first:.3f} -> {last:.3f}"
    ce_last = np.mean([entry["token_ce"] for entry in logs[-12:]])
    assert ce_last < math.log(SMALL["codebook_size"]) - 0.2, f"token CE {ce_last:.3f} is no better than uniform"
    assert logs[-1]["tokenizer_frozen"] == 1.0 and logs[0]["tokenizer_frozen"] == 0.0
    for key in ("codebook_perplexity", "codebook_usage", "codebook_perplexity_batch", "dead_code_restarts"):
        assert key in logs[-1]


def test_trained_codebook_and_embeddings_do_not_collapse(trained):
    objective, sampler, _, _ = trained
    facts = objective.collapse_facts()
    assert not facts["codebook"]["collapsed"], facts
    assert facts["codebook"]["perplexity"] > 4 and facts["codebook"]["usage_share"] > 0.5
    batch = sampler.sample()
    with torch.no_grad():
        z = objective.backbone.pooled(batch.clean.x, batch.clean.observed).numpy()
    report = collapse_report(z, objective_facts=facts)
    assert not report["collapsed"] and report["objective_facts"]["codebook"]["perplexity"] == facts["codebook"]["perplexity"]
    assert effective_rank(z) > 3


def test_a_collapsed_codebook_marks_the_run_collapsed():
    backbone = build_backbone(BackboneConfig(kind="tcn", embed_dim=8, hidden_dim=8, n_layers=2), 6)
    objective = build_objective("vq_mtm", backbone, SMALL)
    counts = torch.zeros(SMALL["codebook_size"])
    counts[0] = 500.0  # every token on one code
    objective.tokenizer.codebook.cluster_size.copy_(counts)
    facts = objective.collapse_facts()
    assert facts["codebook"]["collapsed"]
    healthy = np.random.default_rng(0).normal(size=(256, 16))
    report = collapse_report(healthy, objective_facts=facts)
    assert report["collapsed"] and report["collapsed_facts"] == ["codebook"]
    assert not collapse_report(healthy)["collapsed"]


def test_the_trained_encoder_is_causal(trained):
    objective, _, _, _ = trained
    encoder = Encoder(objective.backbone, normalization="none")
    report = no_lookahead_report(encoder, random_walk_bars(n_tickers=3, n_days=120, seed=5), SPEC, n_windows=12)
    assert report["passed"] and report["windows_checked"] == 12


def test_masked_patch_values_never_reach_the_backbone():
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.embed_dim, self.input_channels = inner, inner.embed_dim, inner.input_channels

        def forward(self, x, observed):
            seen["x"], seen["observed"] = x, observed
            return self.inner(x, observed)

    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(kind="tcn", embed_dim=8, hidden_dim=8, n_layers=2), 6)
    objective = build_objective("vq_mtm", backbone, SMALL)
    objective.backbone = Spy(backbone)
    batch = tiny_sampler(n_views=0, batch_size=8).sample()
    objective(batch)
    hidden = batch.clean.observed & ~seen["observed"]
    assert hidden.any(), "some observed cells were masked"
    assert float(seen["x"][hidden].abs().sum()) == 0.0


def test_config_rejects_bad_values():
    from pydantic import ValidationError

    for bad in ({"mask_ratio": 1.0}, {"codebook_size": 1}, {"ema_decay": 1.0}, {"patch_len": 0}, {"nope": 1}):
        with pytest.raises(ValidationError):
            get_objective_class("vq_mtm").config_cls.model_validate(bad)
    assert VQMTMConfig().codebook_size == 64
