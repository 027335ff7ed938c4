"""Multi-view objectives: closed-form values on tiny inputs, masks, gradients, stop-gradients, EMA.

The training behaviour (loss goes down, no collapse) is in ``test_objectives_multiview_training.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone
from screener_ssl.ssl.objectives import SSLBatch, View, build_objective, get_objective_class, objective_names
from screener_ssl.ssl.checks import effective_rank
from screener_ssl.ssl.objectives._heads import l2_normalized_std, pool_views
from screener_ssl.ssl.objectives.barlow import BarlowConfig, BarlowHead, barlow_loss, cross_correlation
from screener_ssl.ssl.objectives.byol import BYOL, cosine_momentum, ema_update
from screener_ssl.ssl.objectives.contrastive import (
    ContrastiveHead,
    DebiasedInfoNCEConfig,
    InfoNCEConfig,
    debiased_info_nce_loss,
    info_nce_loss,
    pair_masks,
    same_ticker_overlap,
    soft_negative_weights,
)
from screener_ssl.ssl.objectives.hybrid import HybridConfig
from screener_ssl.ssl.objectives.simsiam import negative_cosine
from screener_ssl.ssl.objectives.vicreg import (
    VICRegConfig,
    covariance_loss,
    invariance_loss,
    variance_loss,
    vicreg_loss,
)

torch.set_num_threads(1)

MULTIVIEW_OBJECTIVES = ["vicreg", "barlow", "infonce", "debiased_infonce", "byol", "simsiam", "hybrid"]
CHANNELS = 2
WINDOW = 32


class TinyCausalBackbone(SSLBackbone):
    """Test-only encoder: input Linear, ``n_layers`` left-padded Conv1d (kernel 3, dilation 1, 2, 4, ...), output Linear.

    Receptive field ``1 + 2 (2^n_layers - 1)`` bars: 31 with 4 layers, 15 with 3.
    """

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__(input_channels, config)
        hidden = config.hidden_dim
        self.dilations = tuple(2**i for i in range(config.n_layers))
        self.input_proj = nn.Linear(2 * input_channels, hidden)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, dilation=d) for d in self.dilations)
        self.output_proj = nn.Linear(hidden, config.embed_dim)

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``x, observed: [B, T, C]`` -> ``[B, T, D]``."""
        h = self.input_proj(self.model_inputs(x, observed)).transpose(1, 2)  # [B, H, T]
        for d, conv in zip(self.dilations, self.convs, strict=True):
            h = h + F.gelu(conv(F.pad(h, (2 * d, 0))))  # left pad only: causal
        return self.output_proj(h.transpose(1, 2))


def tiny_backbone(seed: int = 0, embed_dim: int = 16, hidden_dim: int = 32, n_layers: int = 4) -> TinyCausalBackbone:
    torch.manual_seed(seed)
    config = BackboneConfig(embed_dim=embed_dim, hidden_dim=hidden_dim, n_layers=n_layers)
    return TinyCausalBackbone(CHANNELS, config)


def sine_windows(gen: torch.Generator, batch_size: int, length: int = WINDOW) -> torch.Tensor:
    """``[B, T, 2]`` random sine waves (amplitude, frequency, phase per window; 2nd channel a harmonic)."""
    t = torch.arange(length, dtype=torch.float32)
    amplitude = 0.5 + 1.5 * torch.rand(batch_size, 1, generator=gen)
    frequency = 0.02 + 0.2 * torch.rand(batch_size, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(batch_size, 1, generator=gen)
    angle = 2 * math.pi * frequency * t + phase  # [B, T]
    return torch.stack([amplitude * torch.sin(angle), 0.5 * amplitude * torch.cos(2 * angle)], dim=-1)


def noisy_view(gen: torch.Generator, clean: torch.Tensor, noise: float = 0.1) -> View:
    """A view of ``clean: [B, T, C]``: random global scale in [0.8, 1.2] plus Gaussian jitter."""
    scale = 0.8 + 0.4 * torch.rand(clean.shape[0], 1, 1, generator=gen)
    x = clean * scale + noise * torch.randn(clean.shape, generator=gen)
    return View(x=x, observed=torch.ones_like(x, dtype=torch.bool))


def sine_batch(
    gen: torch.Generator,
    batch_size: int = 32,
    ticker_id: torch.Tensor | None = None,
    decision_row: torch.Tensor | None = None,
    length: int = WINDOW,
) -> SSLBatch:
    """Two noisy views of ``batch_size`` sine windows ``[B, length, 2]``; distinct tickers unless given."""
    clean = sine_windows(gen, batch_size, length)
    views = [noisy_view(gen, clean), noisy_view(gen, clean)]
    if ticker_id is None:
        ticker_id = torch.arange(batch_size)
    if decision_row is None:
        decision_row = torch.randint(WINDOW, 5000, (batch_size,), generator=gen)
    return SSLBatch(
        views=views,
        clean=View(x=clean, observed=torch.ones_like(clean, dtype=torch.bool)),
        ticker_id=ticker_id,
        decision_row=decision_row,
    )


# --- the test backbone itself -------------------------------------------------------------------


def test_tiny_backbone_is_causal():
    backbone = tiny_backbone()
    gen = torch.Generator().manual_seed(1)
    x = sine_windows(gen, 4)
    observed = torch.ones_like(x, dtype=torch.bool)
    future_changed = x.clone()
    future_changed[:, 20:] += 5.0 * torch.randn(future_changed[:, 20:].shape, generator=gen)
    h, h_changed = backbone(x, observed), backbone(future_changed, observed)
    torch.testing.assert_close(h[:, :20], h_changed[:, :20])
    assert (h[:, 20:] - h_changed[:, 20:]).abs().max() > 1e-3  # the perturbation is visible from bar 20 on


def test_pool_views_single_pass_equals_separate_passes():
    backbone = tiny_backbone()
    batch = sine_batch(torch.Generator().manual_seed(2), 6)
    pooled = pool_views(backbone, batch.views)
    for view, h in zip(batch.views, pooled, strict=True):
        torch.testing.assert_close(h, backbone.pooled(view.x, view.observed))


# --- registry and configs ------------------------------------------------------------------------


def test_every_multiview_objective_is_registered_with_two_views():
    names = objective_names()
    for name in MULTIVIEW_OBJECTIVES:
        assert name in names
        assert get_objective_class(name).n_views == 2


@pytest.mark.parametrize(
    ("name", "bad_config"),
    [
        ("vicreg", {"sim_weight": -1.0}),
        ("vicreg", {"eps": 0.0}),
        ("barlow", {"lambda_offdiag": -0.1}),
        ("infonce", {"temperature": 0.0}),
        ("infonce", {"soft_negative_threshold": 1.5}),
        ("infonce", {"positive_expansion_k": -1}),
        ("debiased_infonce", {"tau_plus": 1.0}),
        ("byol", {"base_momentum": 1.5}),
        ("simsiam", {"predictor_hidden_dim": 1}),
        ("hybrid", {"multiview": "byol"}),
        ("hybrid", {"multiview_weight": 1.5}),
        ("vicreg", {"not_a_field": 1}),
    ],
)
def test_configs_reject_out_of_range_values(name, bad_config):
    with pytest.raises(ValidationError):
        get_objective_class(name).config_cls.model_validate(bad_config)


def test_barlow_lambda_scales_with_projector_width():
    assert BarlowConfig(projector_dim=8192).effective_lambda() == pytest.approx(5e-3)
    assert BarlowConfig(projector_dim=256).effective_lambda() == pytest.approx(5e-3 * 8192 / 256)
    assert BarlowConfig(projector_dim=256, scale_lambda_to_width=False).effective_lambda() == pytest.approx(5e-3)


def test_shape_mismatch_fails_with_the_shapes():
    with pytest.raises(AssertionError, match=r"\(4, 3\).*\(4, 2\)"):
        invariance_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(AssertionError, match="must both be"):
        same_ticker_overlap(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), 10)


def test_single_view_batch_is_rejected_by_name():
    batch = sine_batch(torch.Generator().manual_seed(3), 4)
    batch.views = batch.views[:1]
    objective = build_objective("vicreg", tiny_backbone())
    with pytest.raises(AssertionError, match="'vicreg' needs 2 views"):
        objective(batch)


# --- VICReg --------------------------------------------------------------------------------------


def test_vicreg_invariance_is_zero_for_identical_views():
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(4))
    assert float(invariance_loss(z, z)) == 0.0
    _, logs = vicreg_loss(z, z.clone(), VICRegConfig())
    assert logs["invariance"] == 0.0
    assert float(invariance_loss(z, z + 1.0)) == pytest.approx(1.0)  # every coordinate off by 1


def test_vicreg_variance_zero_above_target_std_and_positive_when_collapsed():
    spread = torch.tensor([[-1.0, 2.0], [1.0, -2.0], [-1.0, 2.0], [1.0, -2.0]])  # unbiased std 1.155, 2.309
    assert float(variance_loss(spread)) == 0.0
    collapsed = torch.ones(4, 3)
    # std = sqrt(0 + eps) = 0.01 in every dimension -> hinge 1 - 0.01.
    assert float(variance_loss(collapsed, std_target=1.0, eps=1e-4)) == pytest.approx(0.99)


def test_vicreg_covariance_closed_form():
    x = torch.tensor([1.0, -1.0, 1.0, -1.0])
    y = torch.tensor([1.0, -1.0, -1.0, 1.0])
    assert float(covariance_loss(torch.stack([x, y], dim=1))) == pytest.approx(0.0)
    # Duplicate column: cov(x, x) = 4/3 off the diagonal twice -> 2 * (4/3)^2 / D(=2) = 16/9.
    assert float(covariance_loss(torch.stack([x, x], dim=1))) == pytest.approx(16 / 9)


def test_vicreg_total_is_the_weighted_sum_of_its_terms():
    gen = torch.Generator().manual_seed(5)
    z_a, z_b = torch.randn(16, 6, generator=gen), torch.randn(16, 6, generator=gen)
    config = VICRegConfig(sim_weight=25.0, var_weight=25.0, cov_weight=1.0)
    loss, logs = vicreg_loss(z_a, z_b, config)
    expected = 25 * logs["invariance"] + 25 * logs["variance"] + logs["covariance"]
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert logs["invariance"] > 0 and logs["covariance"] > 0


# --- Barlow Twins --------------------------------------------------------------------------------


def barlow_example() -> tuple[torch.Tensor, torch.Tensor]:
    """4 x 2 views: a = [[1,1],[-1,1],[1,-1],[-1,-1]], b's columns [1,-1,1,-1] and [2,0,-1,-1]."""
    z_a = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    z_b = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [1.0, -1.0], [-1.0, -1.0]])
    return z_a, z_b


def test_barlow_cross_correlation_hand_computed():
    z_a, z_b = barlow_example()
    # All columns have mean 0; a's and b's first columns have variance 1, b's second 6/4.
    # C = a^T b_std / 4: [[1, 2/(4 sqrt 1.5)], [0, 4/(4 sqrt 1.5)]] = [[1, 1/sqrt 6], [0, sqrt(2/3)]].
    expected = torch.tensor([[1.0, 1 / math.sqrt(6)], [0.0, math.sqrt(2 / 3)]])
    torch.testing.assert_close(cross_correlation(z_a, z_b, eps=0.0), expected)
    # Each view is standardized by its own batch statistics: scale and shift do not matter.
    torch.testing.assert_close(cross_correlation(10 * z_a + 3, 0.5 * z_b - 7, eps=0.0), expected)
    lam = 0.1
    loss, logs = barlow_loss(z_a, z_b, lam, eps=0.0)
    on_diag = (math.sqrt(2 / 3) - 1) ** 2
    off_diag = 1 / 6
    assert logs["on_diagonal"] == pytest.approx(on_diag, rel=1e-5)
    assert logs["off_diagonal"] == pytest.approx(off_diag, rel=1e-5)
    assert float(loss) == pytest.approx(on_diag + lam * off_diag, rel=1e-5)


def test_barlow_cross_correlation_is_float32_under_autocast():
    gen = torch.Generator().manual_seed(6)
    z_a, z_b = torch.randn(32, 8, generator=gen), torch.randn(32, 8, generator=gen)
    reference = cross_correlation(z_a, z_b)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = cross_correlation(z_a.bfloat16(), z_b.bfloat16())
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference, atol=2e-2, rtol=0)


def test_barlow_identical_decorrelated_views_reach_zero():
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    loss, _ = barlow_loss(z, z, 0.5, eps=0.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


# --- InfoNCE and debiased InfoNCE ----------------------------------------------------------------


def default_masks(batch_size: int):
    positives, negatives = pair_masks(torch.arange(batch_size), torch.zeros(batch_size, dtype=torch.long), WINDOW)
    return positives, negatives.float()


def test_infonce_orthogonal_and_identical_embeddings_closed_form():
    batch_size, t = 4, 0.1
    positives, weights = default_masks(batch_size)
    # Views identical, rows orthogonal: positive cosine 1, all 2B-2 negatives cosine 0.
    z = torch.eye(batch_size).repeat(2, 1)  # [2B, B]
    similarity = z @ z.T
    loss = info_nce_loss(similarity, positives, weights, t)
    expected = math.log(1 + (2 * batch_size - 2) * math.exp(-1 / t))
    torch.testing.assert_close(loss, torch.full((2 * batch_size,), expected))
    # Everything identical: the positive is one of 2B-1 equal candidates.
    same = torch.ones(2 * batch_size, 2 * batch_size)
    loss_same = info_nce_loss(same, positives, weights, t)
    torch.testing.assert_close(loss_same, torch.full((2 * batch_size,), math.log(2 * batch_size - 1)))


def test_debiased_with_zero_prior_is_plain_infonce():
    gen = torch.Generator().manual_seed(7)
    z = F.normalize(torch.randn(12, 5, generator=gen), dim=1)
    similarity = z @ z.T
    positives, weights = default_masks(6)
    plain = info_nce_loss(similarity, positives, weights, 0.2)
    debiased, clamped = debiased_info_nce_loss(similarity, positives, weights, 0.2, tau_plus=0.0)
    torch.testing.assert_close(debiased, plain)
    assert not bool(clamped.any())


def test_debiased_is_below_plain_when_positives_beat_negatives():
    gen = torch.Generator().manual_seed(8)
    batch_size = 6
    positives, weights = default_masks(batch_size)
    # Negatives in [-0.5, 0.5], positives 0.9: the positive beats the mean negative.
    similarity = torch.rand(2 * batch_size, 2 * batch_size, generator=gen) - 0.5
    similarity = (similarity + similarity.T) / 2
    similarity[positives] = 0.9
    similarity.fill_diagonal_(1.0)
    plain = info_nce_loss(similarity, positives, weights, 0.5)
    debiased, _ = debiased_info_nce_loss(similarity, positives, weights, 0.5, tau_plus=0.1)
    assert bool((debiased < plain).all())


def test_debiased_negative_term_is_clamped_at_its_theoretical_minimum():
    batch_size, t = 4, 0.5
    positives, weights = default_masks(batch_size)
    similarity = torch.full((2 * batch_size, 2 * batch_size), 0.5)
    similarity[positives] = 1.0
    # tau_plus 0.5: sum_neg - 0.5 N e^{1/t} = N (e^1 - 0.5 e^2) < 0 -> Ng clamps to N e^{-1/t}.
    loss, clamped = debiased_info_nce_loss(similarity, positives, weights, t, tau_plus=0.5)
    n_neg = 2 * batch_size - 2
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + n_neg * math.exp(-1 / t)))
    assert bool(clamped.all())
    torch.testing.assert_close(loss, torch.full((2 * batch_size,), expected))
    # Without the prior nothing is clamped and the loss is larger.
    loss_plain, clamped_plain = debiased_info_nce_loss(similarity, positives, weights, t, tau_plus=0.0)
    assert not bool(clamped_plain.any()) and bool((loss_plain > loss).all())


def test_debiased_stays_finite_at_the_smallest_temperature():
    positives, weights = default_masks(3)
    similarity = torch.full((6, 6), -1.0)
    similarity[positives] = 1.0
    loss, _ = debiased_info_nce_loss(similarity, positives, weights, 0.01, tau_plus=0.1)
    assert bool(torch.isfinite(loss).all())


def test_soft_negatives_change_the_loss_only_above_the_threshold():
    gen = torch.Generator().manual_seed(9)
    z = F.normalize(torch.randn(16, 4, generator=gen), dim=1)
    similarity = z @ z.T
    positives, negatives = pair_masks(torch.arange(8), torch.zeros(8, dtype=torch.long), WINDOW)
    plain = info_nce_loss(similarity, positives, negatives.float(), 0.2)
    max_negative = float(similarity[negatives].max())
    above_all = soft_negative_weights(similarity, negatives, max_negative + 0.01, 0.0)
    torch.testing.assert_close(info_nce_loss(similarity, positives, above_all, 0.2), plain)
    threshold = 0.5
    too_similar = negatives & (similarity > threshold)
    assert bool(too_similar.any()) and not bool(too_similar.all())
    soft = soft_negative_weights(similarity, negatives, threshold, 0.25)
    assert bool((soft[too_similar] == 0.25).all()) and bool((soft[negatives & ~too_similar] == 1.0).all())
    soft_loss = info_nce_loss(similarity, positives, soft, 0.2)
    affected = too_similar.any(dim=1)
    assert bool((soft_loss[affected] < plain[affected]).all())  # fewer hard negatives -> lower loss
    torch.testing.assert_close(soft_loss[~affected], plain[~affected])
    # Weight 0 = the pair is dropped from the denominator.
    dropped = info_nce_loss(similarity, positives, (negatives & ~too_similar).float(), 0.2)
    torch.testing.assert_close(info_nce_loss(similarity, positives, soft_negative_weights(similarity, negatives, threshold, 0.0), 0.2), dropped)


def test_positive_expansion_picks_same_ticker_neighbours_and_excludes_overlaps():
    ticker_id = torch.tensor([0, 0, 0, 1])
    decision_row = torch.tensor([100, 103, 110, 100])
    positives, negatives = pair_masks(ticker_id, decision_row, window_length=20, positive_expansion_k=5)
    # Rows 0 and 1 (same ticker, 3 bars apart) are positives of each other; row 2 is 10 and 7 bars
    # away (> k but < T): neither positive nor negative; row 3 is another ticker: a negative.
    view_of = {0: (0, 4), 1: (1, 5), 2: (2, 6), 3: (3, 7)}
    expected_positive_rows = {0: {0, 1}, 1: {0, 1}, 2: {2}, 3: {3}}
    expected_negative_rows = {0: {3}, 1: {3}, 2: {3}, 3: {0, 1, 2}}
    for row, (anchor_a, anchor_b) in view_of.items():
        for anchor in (anchor_a, anchor_b):
            pos = {int(j) for j in positives[anchor].nonzero()}
            neg = {int(j) for j in negatives[anchor].nonzero()}
            assert pos == {j for r in expected_positive_rows[row] for j in view_of[r]} - {anchor}
            assert neg == {j for r in expected_negative_rows[row] for j in view_of[r]}
    # k = 0 turns expansion off: rows 0 and 1 overlap, so they become "don't care".
    positives_off, negatives_off = pair_masks(ticker_id, decision_row, window_length=20, positive_expansion_k=0)
    assert {int(j) for j in positives_off[0].nonzero()} == {4}
    assert not bool(negatives_off[0, 1] or negatives_off[0, 5])


def test_multi_positive_loss_averages_over_positives():
    ticker_id = torch.tensor([0, 0, 1])
    decision_row = torch.tensor([50, 52, 50])
    positives, negatives = pair_masks(ticker_id, decision_row, window_length=20, positive_expansion_k=2)
    gen = torch.Generator().manual_seed(10)
    z = F.normalize(torch.randn(6, 3, generator=gen), dim=1)
    s = z @ z.T
    t = 0.3
    loss = info_nce_loss(s, positives, negatives.float(), t)
    # Anchor 0: positives {3, 1, 4}, negatives {2, 5}.
    denominator = sum(math.exp(float(s[0, j]) / t) for j in (1, 2, 3, 4, 5))
    expected = -sum(float(s[0, p]) / t - math.log(denominator) for p in (1, 3, 4)) / 3
    assert float(loss[0]) == pytest.approx(expected, rel=1e-5)


def test_overlapping_same_ticker_windows_are_not_negatives():
    window = 20
    ticker_id = torch.tensor([7, 7, 8, 9])
    decision_row = torch.tensor([300, 305, 300, 300])  # rows 0 and 1 overlap by 15 bars
    overlap = same_ticker_overlap(ticker_id, decision_row, window)
    assert bool(overlap[0, 1] and overlap[1, 0]) and int(overlap.sum()) == 4 + 2
    positives, negatives = pair_masks(ticker_id, decision_row, window)
    gen = torch.Generator().manual_seed(11)
    z = F.normalize(torch.randn(8, 4, generator=gen), dim=1)
    s = z @ z.T
    t = 0.2
    loss = info_nce_loss(s, positives, negatives.float(), t)
    # Anchor 0 (row 0, view a): positive 4; denominator without row 1's views (1 and 5).
    kept = (2, 3, 4, 6, 7)
    expected = -(float(s[0, 4]) / t - math.log(sum(math.exp(float(s[0, j]) / t) for j in kept)))
    assert float(loss[0]) == pytest.approx(expected, rel=1e-5)
    # Anchor 2 (another ticker) keeps all seven others.
    everything = (0, 1, 3, 4, 5, 6, 7)
    expected_2 = -(float(s[2, 6]) / t - math.log(sum(math.exp(float(s[2, j]) / t) for j in everything)))
    assert float(loss[2]) == pytest.approx(expected_2, rel=1e-5)
    # T bars apart or more: the windows share no bar and are negatives again.
    _, negatives_far = pair_masks(ticker_id, torch.tensor([300, 320, 300, 300]), window)
    assert bool(negatives_far[0, 1] and negatives_far[0, 5])


def test_infonce_objective_logs_the_excluded_overlaps():
    gen = torch.Generator().manual_seed(12)
    backbone = tiny_backbone()
    objective = build_objective("infonce", backbone, {"projector_hidden_dim": 16, "projector_dim": 8})
    batch = sine_batch(gen, 6, ticker_id=torch.tensor([0, 0, 1, 2, 3, 4]),
                       decision_row=torch.tensor([100, 110, 100, 100, 100, 100]))
    out = objective(batch)
    # 2 overlapping rows -> 4 ordered row pairs x 4 view pairs... = 8 excluded of 12 * 11 anchor pairs.
    assert out.logs["excluded_fraction"] == pytest.approx(8 / (12 * 11))
    assert out.logs["positives_per_anchor"] == 1.0
    batch.ticker_id = torch.arange(6)
    assert objective(batch).logs["excluded_fraction"] == 0.0


def test_contrastive_head_uses_the_debiased_loss_for_its_config():
    gen = torch.Generator().manual_seed(13)
    h_a, h_b = torch.randn(6, 16, generator=gen), torch.randn(6, 16, generator=gen)
    args = (torch.arange(6), torch.zeros(6, dtype=torch.long), WINDOW)
    torch.manual_seed(0)
    plain = ContrastiveHead(16, InfoNCEConfig(projector_dim=8))
    torch.manual_seed(0)
    debiased = ContrastiveHead(16, DebiasedInfoNCEConfig(projector_dim=8, tau_plus=0.0))
    torch.manual_seed(0)
    debiased_prior = ContrastiveHead(16, DebiasedInfoNCEConfig(projector_dim=8, tau_plus=0.3))
    with torch.no_grad():
        loss_plain, _ = plain(h_a, h_b, *args)
        loss_debiased, logs = debiased(h_a, h_b, *args)
        loss_prior, _ = debiased_prior(h_a, h_b, *args)
    assert "clamped_fraction" in logs
    assert float(loss_debiased) == pytest.approx(float(loss_plain), rel=1e-5)
    assert float(loss_prior) != pytest.approx(float(loss_plain), rel=1e-3)


# --- gradients and stop-gradients ----------------------------------------------------------------


SMALL_HEADS = {
    "vicreg": {"expander_dim": 16},
    "barlow": {"projector_dim": 16},
    "infonce": {"projector_hidden_dim": 16, "projector_dim": 8},
    "debiased_infonce": {"projector_hidden_dim": 16, "projector_dim": 8},
    "byol": {"projector_hidden_dim": 16, "projector_dim": 8, "predictor_hidden_dim": 16},
    "simsiam": {"projector_dim": 16, "predictor_hidden_dim": 4},
    "hybrid": {"vicreg": {"expander_dim": 16}},
}


@pytest.mark.parametrize("name", MULTIVIEW_OBJECTIVES)
def test_gradients_reach_every_backbone_parameter(name):
    backbone = tiny_backbone()
    objective = build_objective(name, backbone, SMALL_HEADS[name])
    torch.manual_seed(0)
    out = objective(sine_batch(torch.Generator().manual_seed(14), 8))
    assert out.loss.dim() == 0 and bool(torch.isfinite(out.loss))
    assert all(math.isfinite(v) for v in out.logs.values() if isinstance(v, float))
    out.loss.backward()
    for param_name, param in backbone.named_parameters():
        assert param.grad is not None, f"{name}: no gradient on backbone.{param_name}"
        assert bool(torch.isfinite(param.grad).all()) and float(param.grad.abs().sum()) > 0, (
            f"{name}: zero or non-finite gradient on backbone.{param_name}"
        )


@pytest.mark.parametrize("name", MULTIVIEW_OBJECTIVES)
def test_losses_are_float32_and_finite_under_bfloat16_autocast(name):
    objective = build_objective(name, tiny_backbone(), SMALL_HEADS[name])
    torch.manual_seed(0)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = objective(sine_batch(torch.Generator().manual_seed(22), 8))
    assert out.loss.dtype == torch.float32 and bool(torch.isfinite(out.loss))


def test_simsiam_stop_gradient_blocks_the_target_branch():
    gen = torch.Generator().manual_seed(15)
    prediction = torch.randn(5, 4, generator=gen, requires_grad=True)
    target = torch.randn(5, 4, generator=gen, requires_grad=True)
    negative_cosine(prediction, target).backward()
    assert target.grad is None
    assert prediction.grad is not None and float(prediction.grad.abs().sum()) > 0
    expected = -F.cosine_similarity(prediction.detach(), target.detach(), dim=1).mean()
    assert float(negative_cosine(prediction, target).detach()) == pytest.approx(float(expected))


def test_simsiam_projector_gets_gradient_only_through_the_predictor_path():
    """The gradient on a projection z equals the gradient through p = predictor(z) alone: z as a target is detached."""
    objective = build_objective("simsiam", tiny_backbone(), SMALL_HEADS["simsiam"])
    gen = torch.Generator().manual_seed(16)
    z_a = torch.randn(8, 16, generator=gen, requires_grad=True)
    z_b = torch.randn(8, 16, generator=gen, requires_grad=True)
    p_a, p_b = objective.predictor(z_a), objective.predictor(z_b)
    loss = 0.5 * (negative_cosine(p_a, z_b) + negative_cosine(p_b, z_a))
    grad_z_a = torch.autograd.grad(loss, z_a)[0]
    # Reference: only the path z_a -> p_a carries gradient.
    p_a2 = objective.predictor(z_a)
    only_predictor_path = 0.5 * -F.cosine_similarity(p_a2, z_b.detach(), dim=1).mean()
    torch.testing.assert_close(grad_z_a, torch.autograd.grad(only_predictor_path, z_a)[0])


def byol_objective() -> BYOL:
    objective = build_objective("byol", tiny_backbone(), SMALL_HEADS["byol"])
    assert isinstance(objective, BYOL)
    return objective


def test_byol_target_is_a_frozen_copy_outside_the_encoder():
    objective = byol_objective()
    for online, target in zip(objective.backbone.parameters(), objective.target_backbone.parameters(), strict=True):
        torch.testing.assert_close(online, target)
        assert online is not target and not target.requires_grad
    assert not any(p.requires_grad for p in objective.target_projector.parameters())
    encoder_ids = {id(p) for p in objective.backbone.parameters()}
    assert not encoder_ids & {id(p) for p in objective.target_backbone.parameters()}
    assert not any(key.startswith("target") for key in objective.backbone.state_dict())


def test_byol_target_gets_no_gradient_and_no_optimizer_update():
    objective = byol_objective()
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-2, weight_decay=0.1)
    target_before = [p.detach().clone() for p in objective.target_backbone.parameters()]
    online_before = [p.detach().clone() for p in objective.backbone.parameters()]
    torch.manual_seed(0)
    objective(sine_batch(torch.Generator().manual_seed(17), 8)).loss.backward()
    assert all(p.grad is None for p in objective.target_backbone.parameters())
    assert all(p.grad is None for p in objective.target_projector.parameters())
    optimizer.step()
    for before, after in zip(target_before, objective.target_backbone.parameters(), strict=True):
        assert torch.equal(before, after)
    assert any(not torch.equal(b, a) for b, a in zip(online_before, objective.backbone.parameters(), strict=True))


def test_byol_ema_update_matches_its_formula():
    objective = byol_objective()
    with torch.no_grad():  # make online and target differ
        for p in objective.backbone.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for p in objective.projector.parameters():
            p.add_(0.1 * torch.randn_like(p))
    step, total = 30, 100
    tau = 1 - (1 - 0.996) * (math.cos(math.pi * step / total) + 1) / 2
    expected = [
        tau * t.detach().clone() + (1 - tau) * o.detach().clone()
        for t, o in zip(objective.target_backbone.parameters(), objective.backbone.parameters(), strict=True)
    ]
    expected_proj = [
        tau * t.detach().clone() + (1 - tau) * o.detach().clone()
        for t, o in zip(objective.target_projector.parameters(), objective.projector.parameters(), strict=True)
    ]
    objective.on_after_step(step, total)
    assert objective.momentum == pytest.approx(tau)
    for want, got in zip(expected + expected_proj, [*objective.target_backbone.parameters(), *objective.target_projector.parameters()], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    # Momentum 1 leaves the target alone; momentum 0 copies the online network.
    frozen = [p.clone() for p in objective.target_backbone.parameters()]
    ema_update(objective.target_backbone, objective.backbone, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, objective.target_backbone.parameters(), strict=True))
    ema_update(objective.target_backbone, objective.backbone, 0.0)
    for o, t in zip(objective.backbone.parameters(), objective.target_backbone.parameters(), strict=True):
        assert torch.equal(o, t)


def test_byol_momentum_schedule_endpoints():
    assert cosine_momentum(0, 1000, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(1000, 1000, 0.996) == 1.0
    assert cosine_momentum(500, 1000, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(2000, 1000, 0.996) == 1.0  # past the end: clipped
    values = [cosine_momentum(k, 100, 0.99) for k in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


# --- hybrid --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("multiview", "head_name"), [("vicreg", "VICRegHead"), ("barlow", "BarlowHead"), ("infonce", "ContrastiveHead")])
def test_hybrid_mixes_multiview_and_reconstruction(multiview, head_name):
    config = HybridConfig.model_validate(
        {"multiview": multiview, "multiview_weight": 0.3, "vicreg": {"expander_dim": 16},
         "barlow": {"projector_dim": 16}, "infonce": {"projector_hidden_dim": 16, "projector_dim": 8}}
    )
    objective = build_objective("hybrid", tiny_backbone(), config)
    assert type(objective.multiview_head).__name__ == head_name
    assert objective.recon_head.out_features == CHANNELS
    torch.manual_seed(0)
    out = objective(sine_batch(torch.Generator().manual_seed(18), 8))
    logs = out.logs
    assert logs["multiview_loss"] > 0 and logs["recon_loss"] > 0 and logs["masked_cells"] > 0
    assert float(out.loss.detach()) == pytest.approx(0.3 * logs["multiview_loss"] + 0.7 * logs["recon_loss"], rel=1e-5)
    assert f"{multiview}_embedding_std" in logs


def test_hybrid_with_weight_one_is_the_multiview_loss():
    objective = build_objective("hybrid", tiny_backbone(), {"multiview_weight": 1.0, "vicreg": {"expander_dim": 16}})
    batch = sine_batch(torch.Generator().manual_seed(19), 8)
    torch.manual_seed(0)
    out = objective(batch)
    h_a, h_b = pool_views(objective.backbone, batch.views)
    head_loss, _ = objective.multiview_head(h_a, h_b)
    assert float(out.loss.detach()) == pytest.approx(float(head_loss.detach()), rel=1e-6)


# --- collapse diagnostics (used by the training tests) -------------------------------------------


def test_collapse_diagnostics_flag_collapsed_embeddings():
    gen = torch.Generator().manual_seed(20)
    spread = torch.randn(256, 16, generator=gen)
    assert float(l2_normalized_std(spread)) == pytest.approx(1 / 4, rel=0.15)
    assert effective_rank(spread) > 12
    collapsed = torch.ones(256, 16) + 1e-3 * torch.randn(256, 1, generator=gen) * torch.ones(1, 16)
    assert float(l2_normalized_std(collapsed)) < 1e-3
    assert effective_rank(collapsed) == pytest.approx(1.0, abs=0.05)
    rank_two = torch.randn(256, 2, generator=gen) @ torch.randn(2, 16, generator=gen)
    assert effective_rank(rank_two) < 2.01


def test_barlow_head_logs_effective_lambda():
    head = BarlowHead(16, BarlowConfig(projector_dim=32))
    gen = torch.Generator().manual_seed(21)
    _, logs = head(torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen))
    assert logs["effective_lambda"] == pytest.approx(5e-3 * 8192 / 32)
