"""CPC: future segments from the sampler (train split only), the loss in closed form, no lookahead, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.objectives import SSLBatch, View, build_objective, get_objective_class
from screener_ssl.ssl.objectives.cpc import CPCConfig, cpc_candidate_masks, cpc_info_nce, split_segments
from screener_ssl.ssl.sampler import WindowSampler, future_inside_candidates
from screener_ssl_tests.ssl.predictive_market import (
    SPEC, TINY, split_sampler, tiny_market, train_objective_on_tiny_market, train_on_tiny_market,
)

torch.set_num_threads(1)

SMALL = {"n_segments": 2, "segment_len": 4, "projector_hidden_dim": 16, "projector_dim": 8}


def _objective(config: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    backbone = build_backbone(BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2), 6)
    return build_objective("cpc", backbone, {**SMALL, **(config or {})})


# --- pieces ------------------------------------------------------------------------------------


def test_split_segments_is_k_major():
    future = torch.arange(2 * 6 * 1, dtype=torch.float32).view(2, 6, 1)  # B=2, H=6 (K=3, L=2)
    seg = split_segments(future, 3)
    assert seg.shape == (6, 2, 1)
    assert seg[:, :, 0].tolist() == [[0, 1], [6, 7], [2, 3], [8, 9], [4, 5], [10, 11]]


def test_candidate_masks_drop_same_ticker_overlapping_futures():
    ticker = torch.tensor([0, 0, 0, 1])
    bar = torch.tensor([100, 130, 200, 100])
    positives, negatives = cpc_candidate_masks(ticker, bar, span=40)
    assert positives.equal(torch.eye(4, dtype=torch.bool))
    assert not negatives[0, 1] and not negatives[1, 0]  # same ticker, 30 bars apart < 40
    assert negatives[0, 2] and negatives[0, 3] and negatives[3, 0]  # far apart / another ticker
    assert not negatives.diagonal().any()


def test_info_nce_in_closed_form():
    """Orthogonal predictions equal to their targets: s_ii = 1, s_ij = 0."""
    batch, steps, temp = 4, 2, 0.5
    eye = torch.eye(batch)
    predictions = targets = torch.stack([eye, eye])  # [K, B, P=B]
    positives = torch.eye(batch, dtype=torch.bool)
    negatives = ~positives
    negatives[0, 1] = False  # one excluded candidate for anchor 0
    config = CPCConfig(temperature=temp, n_segments=steps)
    loss, logs = cpc_info_nce(predictions, targets, positives, negatives, config)
    e = math.exp(1.0 / temp)
    per_anchor = [-math.log(e / (e + (2 if i == 0 else 3))) for i in range(batch)]
    assert float(loss) == pytest.approx(sum(per_anchor) / batch, rel=1e-5)
    assert logs["top1_accuracy"] == 1.0


def test_info_nce_is_chance_when_every_candidate_looks_alike():
    batch = 8
    same = torch.ones(1, batch, 4)
    positives = torch.eye(batch, dtype=torch.bool)
    loss, _ = cpc_info_nce(same, same, positives, ~positives, CPCConfig(n_segments=1))
    assert float(loss) == pytest.approx(math.log(batch), rel=1e-5)


def test_config_and_registry():
    assert get_objective_class("cpc").n_views == 1
    assert _objective({"n_segments": 3, "segment_len": 5}).future_bars == 15
    with pytest.raises(ValueError):
        CPCConfig(loss="mse")
    with pytest.raises(ValueError):
        CPCConfig(segment_len=1)
    # The registry declaration the runs layer hands the sampler.
    from screener_ssl.ssl.trainer import TrainConfig

    cls = get_objective_class("cpc")
    assert cls.sampler_settings(cls.resolve_config({"n_segments": 4}, TrainConfig())) == {"future_bars": 32}
    # Objectives that read only the past ask the sampler for nothing after t*.
    backbone = build_backbone(BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2), 6)
    assert build_objective("masked_recon", backbone, {}).future_bars == 0


def test_missing_future_is_a_clear_error():
    objective = _objective()
    x = torch.zeros(4, 16, 6)
    view = View(x, torch.ones_like(x, dtype=torch.bool))
    batch = SSLBatch(views=[view], clean=view, ticker_id=torch.arange(4), decision_row=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="future_bars=8"):
        objective(batch)


# --- the sampler's future segments -------------------------------------------------------------

GENERIC = WindowSpec(window_max=16, crop_lengths=(16,), min_history=8)


def test_future_filter_keeps_candidates_whose_future_has_a_later_candidate():
    start = np.array([0, 0, 0, 50, 50], dtype=np.int64)
    rows = np.array([10, 14, 20, 60, 61], dtype=np.int64)
    assert future_inside_candidates(start, rows, 6).tolist() == [True, True, False, False, False]
    assert future_inside_candidates(start, rows, 1).tolist() == [True, True, False, True, False]


def test_sampler_hands_over_the_raw_bars_after_the_decision_bar():
    values = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    rows = np.arange(20, 300, dtype=np.int64)
    sampler = WindowSampler(values, np.zeros_like(rows), rows, GENERIC, AugmentConfig(), 1, 16, seed=1,
                            normalize=False, future_bars=8)
    batch = sampler.sample()
    future = batch.extras["future_x"].numpy()
    assert future.shape == (16, 8, 6) and bool(batch.extras["future_observed"].all())
    for i, t in enumerate(batch.decision_row.tolist()):
        np.testing.assert_array_equal(future[i], values[t + 1 : t + 9])
        assert t + 8 <= rows.max()
    # No future requested: no extras, and the candidate set is untouched.
    plain = WindowSampler(values, np.zeros_like(rows), rows, GENERIC, AugmentConfig(), 1, 16, seed=1)
    assert plain.sample().extras == {} and len(plain.decision_row) == len(rows)


def test_future_is_scaled_by_the_context_windows_statistics():
    values = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32) * 3.0 + 2.0
    rows = np.arange(20, 300, dtype=np.int64)
    aug = AugmentConfig(censor_last_prob=0.0)  # decision bar kept whole: stats over every window cell
    batch = WindowSampler(values, np.zeros_like(rows), rows, GENERIC, aug, 1, 8, seed=2, future_bars=4).sample()
    for i, t in enumerate(batch.decision_row.tolist()):
        context = values[t - 15 : t + 1]
        expected = (values[t + 1 : t + 5] - context.mean(0)) / (context.std(0) + 1e-6)
        np.testing.assert_allclose(batch.extras["future_x"][i].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_horizon_longer_than_the_embargo_is_refused():
    values = np.zeros((300, 6), dtype=np.float32)
    rows = np.arange(20, 300, dtype=np.int64)
    with pytest.raises(ValueError, match="embargo"):
        WindowSampler(values, np.zeros_like(rows), rows, GENERIC, AugmentConfig(), 1, 8, seed=0,
                      future_bars=GENERIC.embargo + 1)
    with pytest.raises(ValueError, match="future bars inside its split"):
        WindowSampler(values, np.zeros(2, np.int64), np.array([20, 21]), GENERIC, AugmentConfig(), 1, 8, seed=0,
                      future_bars=5)


def test_future_bars_come_from_the_train_split_only():
    store, index = tiny_market()
    objective = build_objective("cpc", build_backbone(BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16,
                                                                     n_layers=2), 6),
                                {**SMALL, "n_segments": 4, "segment_len": 8})
    assert objective.future_bars <= SPEC.embargo  # the embargo covers the prediction horizon
    sampler = split_sampler(objective, "train", batch_size=256, seed=3)
    train_end = np.datetime64(index.split_bounds["train"][1])
    val_start = np.datetime64(index.split_bounds["val"][0])
    ticker_end = store.offsets[1:]
    reached = []
    for _ in range(8):
        batch = sampler.sample()
        start = batch.ticker_id.numpy()
        last_future = batch.decision_row.numpy() + objective.future_bars
        ticker = np.searchsorted(store.offsets, start, side="right") - 1
        assert (last_future < ticker_end[ticker]).all()  # same ticker
        assert (store.dates[last_future] <= train_end).all()  # train bars, never the embargo or val
        reached.append(store.dates[last_future].max())
    assert max(reached) < val_start
    # The filter binds: without it some train windows' futures would leave the split.
    pos = index.rows_of("train")
    unfiltered_end = store.dates[np.minimum(index.decision_row[pos] + objective.future_bars, len(store.dates) - 1)]
    assert (unfiltered_end > train_end).any()


# --- no lookahead ------------------------------------------------------------------------------


def test_perturbing_bars_after_t_star_changes_the_loss_not_the_embedding():
    rng = np.random.default_rng(4)
    n_tickers, length, p, horizon = 12, 80, 50, 8
    values = rng.normal(size=(n_tickers * length, 6)).astype(np.float32)
    starts = np.arange(n_tickers, dtype=np.int64) * length
    # Candidates p and p + H per ticker; only p keeps its future inside the candidates.
    ticker_start = np.repeat(starts, 2)
    decision_row = (starts[:, None] + np.array([p, p + horizon])[None, :]).reshape(-1)
    perturbed = values.copy()
    for s in starts:
        perturbed[s + p + 1 : s + length] = rng.normal(size=(length - p - 1, 6)) * 5.0 + 3.0

    def run(vals):
        sampler = WindowSampler(vals, ticker_start, decision_row, GENERIC, AugmentConfig(), 1, 12, seed=7,
                                future_bars=horizon)
        batch = sampler.sample()
        objective = _objective({"n_segments": 2, "segment_len": 4}, seed=0).eval()
        with torch.no_grad():
            loss = objective(batch).loss
            embedding = objective.context(batch)
        return batch, loss, embedding

    a_batch, a_loss, a_emb = run(values)
    b_batch, b_loss, b_emb = run(perturbed)
    assert (a_batch.decision_row.numpy() - a_batch.ticker_id.numpy() <= p).all()
    for va, vb in zip((a_batch.clean, *a_batch.views), (b_batch.clean, *b_batch.views), strict=True):
        assert torch.equal(va.x, vb.x) and torch.equal(va.observed, vb.observed)
    assert torch.equal(a_emb, b_emb)
    assert not torch.equal(a_batch.extras["future_x"], b_batch.extras["future_x"])
    assert float(a_loss) != pytest.approx(float(b_loss), rel=1e-4)


def test_trained_context_encoder_stays_causal():
    objective = _objective()
    sampler = split_sampler(objective, batch_size=16)
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    for _ in range(5):
        out = objective(sampler.sample())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    backbone = objective.backbone.eval()
    x = torch.randn(4, 32, 6)
    obs = torch.ones_like(x, dtype=torch.bool)
    t = 20
    x2 = x.clone()
    x2[:, t + 1 :] += 10.0
    with torch.no_grad():
        h1, h2 = backbone(x, obs), backbone(x2, obs)
    assert torch.equal(h1[:, : t + 1], h2[:, : t + 1]) and not torch.equal(h1[:, t + 1 :], h2[:, t + 1 :])


# --- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["infonce", "predictive"])
def test_short_training_on_a_tiny_market_lowers_the_loss_without_collapse(loss):
    result, collapse, objective = train_objective_on_tiny_market(
        "cpc", {"projector_hidden_dim": 32, "projector_dim": 16, "loss": loss}
    )
    assert result.final_loss < 0.95 * result.first_loss, (result.first_loss, result.final_loss)
    assert not collapse["collapsed"], collapse
    assert collapse["effective_rank"] > TINY["min_effective_rank"], collapse
    if loss == "infonce":
        # Better than chance (about 1/32) at picking a window's own future among the batch's
        # candidates, averaged over 1,024 held-out val windows (binomial sd at chance ~0.0055).
        sampler = split_sampler(objective, split="val", batch_size=TINY["batch_size"], seed=1)
        with torch.no_grad():
            accuracy = np.mean([objective(sampler.sample()).logs["top1_accuracy"] for _ in range(32)])
        assert accuracy > 1.5 / TINY["batch_size"], accuracy


def test_python_api_pretrains_cpc_and_patch_mae():
    from screener_ssl.ssl.api import pretrain

    X = np.cumsum(np.random.default_rng(0).normal(size=(6, 80, 3)), axis=1).astype(np.float32)
    for name in ("cpc", "patch_mae"):
        enc = pretrain(X, objective=name, window=32, steps=3, batch_size=8, embed_dim=8, hidden_dim=8, n_layers=2,
                       threads=1)
        assert enc.encode(X).shape == (6, 8) and math.isfinite(enc.meta["final_loss"])
