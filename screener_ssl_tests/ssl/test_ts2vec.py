"""TS2Vec: closed-form and brute-force loss values, crops that end at or before t*, causality, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.encoder import Encoder
from screener_ssl.ssl.objectives import SSLBatch, View, build_objective, get_objective_class
from screener_ssl.ssl.checks import effective_rank
from screener_ssl.ssl.objectives._heads import l2_normalized_std
from screener_ssl.ssl.objectives.ts2vec import (
    TS2VecConfig,
    gather_crop,
    hierarchical_contrastive_loss,
    instance_contrastive_loss,
    temporal_contrastive_loss,
)
from screener_ssl_tests.ssl.test_objectives_multiview import sine_windows, tiny_backbone

torch.set_num_threads(1)


def _naive_nll(z: torch.Tensor, anchor: int, positive: int) -> torch.Tensor:
    """Cross-entropy of ``positive`` among every row of ``z [n, D]`` but ``anchor`` itself."""
    others = [j for j in range(z.shape[0]) if j != anchor]
    logits = torch.stack([z[anchor] @ z[j] for j in others])
    return -F.log_softmax(logits, dim=0)[others.index(positive)]


def test_instance_and_temporal_losses_match_a_brute_force_definition():
    gen = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen)
    B, T = 3, 4
    inst = []
    for t in range(T):
        z = torch.cat([z_a[:, t], z_b[:, t]])  # [2B, D]
        inst += [_naive_nll(z, i, B + i) for i in range(B)] + [_naive_nll(z, B + i, i) for i in range(B)]
    torch.testing.assert_close(instance_contrastive_loss(z_a, z_b), torch.stack(inst).mean())
    temp = []
    for b in range(B):
        z = torch.cat([z_a[b], z_b[b]])  # [2T, D]
        temp += [_naive_nll(z, t, T + t) for t in range(T)] + [_naive_nll(z, T + t, t) for t in range(T)]
    torch.testing.assert_close(temporal_contrastive_loss(z_a, z_b), torch.stack(temp).mean())


def test_orthogonal_identical_crops_closed_form():
    # Two windows, one step, one-hot embeddings: the positive logit is 1, the two negatives 0.
    z = torch.eye(2).unsqueeze(1)  # [2, 1, 2]
    expected = math.log(1 + 2 / math.e)
    torch.testing.assert_close(instance_contrastive_loss(z, z), torch.tensor(expected))
    assert float(temporal_contrastive_loss(z, z)) == 0.0  # one step: no temporal negatives
    loss, logs = hierarchical_contrastive_loss(z, z, alpha=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.5 * expected))
    assert logs["scales"] == 1


def test_hierarchy_averages_over_every_max_pool_scale():
    gen = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(4, 8, 3, generator=gen), torch.randn(4, 8, 3, generator=gen)
    loss, logs = hierarchical_contrastive_loss(z_a, z_b, alpha=0.5, temporal_unit=1)
    assert logs["scales"] == 4  # 8 -> 4 -> 2 -> 1
    expected, a, b = 0.0, z_a, z_b
    for depth in range(4):
        expected = expected + 0.5 * instance_contrastive_loss(a, b)
        if 1 <= depth < 3:  # temporal from scale 2**temporal_unit, and never at a single step
            expected = expected + 0.5 * temporal_contrastive_loss(a, b)
        if a.shape[1] > 1:
            a = F.max_pool1d(a.transpose(1, 2), 2).transpose(1, 2)
            b = F.max_pool1d(b.transpose(1, 2), 2).transpose(1, 2)
    torch.testing.assert_close(loss, expected / 4)


class RecordingBackbone(torch.nn.Module):
    """Wraps a backbone and keeps every ``(x, observed)`` it was called with."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []
        self.embed_dim, self.input_channels, self.config = inner.embed_dim, inner.input_channels, inner.config

    def forward(self, x, observed):
        self.calls.append((x.detach().clone(), observed.clone()))
        return self.inner(x, observed)


def _batch(x: torch.Tensor, observed: torch.Tensor) -> SSLBatch:
    view = View(x=x, observed=observed)
    return SSLBatch(views=[view], clean=view, ticker_id=torch.arange(x.shape[0]), decision_row=torch.zeros(x.shape[0]))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), pad=st.integers(0, 12))
def test_crops_are_slices_of_the_visible_window_ending_at_or_before_t_star(seed, pad):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    T = 32
    x = sine_windows(gen, 6, T)
    observed = torch.ones_like(x, dtype=torch.bool)
    observed[:3, :pad] = False  # short histories: left padding
    x = torch.where(observed, x, torch.zeros_like(x))
    recorder = RecordingBackbone(tiny_backbone(n_layers=2))
    objective = build_objective("ts2vec", recorder, {"mask_prob": 0.0})
    out = objective(_batch(x, observed))
    assert math.isfinite(float(out.loss.detach()))
    (x1, o1), (x2, o2) = recorder.calls
    overlap = int(out.logs["overlap"])
    for b in range(6):
        for crop, crop_obs in ((x1[b], o1[b]), (x2[b], o2[b])):
            starts = [s for s in range(pad, T - crop.shape[0] + 1) if torch.equal(x[b, s : s + crop.shape[0]], crop)]
            assert starts, "a crop must be a contiguous slice of the observed window, ending at or before t*"
            assert crop_obs.all()  # inside the region every window observes
        # contextual consistency: crop 1 ends where the overlap ends, crop 2 starts where it starts
        assert torch.equal(x1[b, -overlap:], x2[b, :overlap])


def test_timestamp_masking_hides_whole_steps_and_marks_them_unobserved():
    torch.manual_seed(0)
    x = sine_windows(torch.Generator().manual_seed(0), 8, 32)
    recorder = RecordingBackbone(tiny_backbone(n_layers=2))
    build_objective("ts2vec", recorder, {"mask_prob": 0.5})(_batch(x, torch.ones_like(x, dtype=torch.bool)))
    for crop, crop_obs in recorder.calls:
        step_hidden = ~crop_obs.any(dim=-1)  # [B, L]
        assert torch.equal(step_hidden, ~crop_obs.all(dim=-1))  # a step is hidden in every channel or none
        assert 0.2 < float(step_hidden.float().mean()) < 0.8
        assert (crop[step_hidden] == 0).all()


def test_too_short_a_visible_region_is_a_clear_error():
    x = torch.zeros(2, 16, 2)
    observed = torch.zeros_like(x, dtype=torch.bool)
    observed[:, -3:] = True
    objective = build_objective("ts2vec", tiny_backbone(n_layers=2), {"min_region": 2})
    with pytest.raises(ValueError, match="only 3 bars are observed"):
        objective(_batch(x, observed))
    with pytest.raises(ValueError, match="only 0 of 2 windows"):
        build_objective("ts2vec", tiny_backbone(n_layers=2), {"min_region": 8})(_batch(x, observed))


def test_windows_with_short_histories_sit_out_the_step():
    torch.manual_seed(0)
    x = sine_windows(torch.Generator().manual_seed(0), 6, 32)
    observed = torch.ones_like(x, dtype=torch.bool)
    observed[0, :-4] = False  # t* four bars after the ticker's first bar
    x = torch.where(observed, x, torch.zeros_like(x))
    recorder = RecordingBackbone(tiny_backbone(n_layers=2))
    out = build_objective("ts2vec", recorder, {"min_region": 16, "mask_prob": 0.0})(_batch(x, observed))
    assert out.logs["windows_used"] == 5
    assert all(crop.shape[0] == 5 and crop_obs.all() for crop, crop_obs in recorder.calls)


def test_registered_single_view_with_a_validated_config():
    cls = get_objective_class("ts2vec")
    assert cls.n_views == 1 and cls.config_cls is TS2VecConfig
    with pytest.raises(ValueError):
        TS2VecConfig(alpha=1.5)


def test_short_training_lowers_the_loss_without_collapse():
    backbone = tiny_backbone(seed=0, hidden_dim=16, n_layers=3)
    objective = build_objective("ts2vec", backbone, {})
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # crops and masks
    losses = []
    for _ in range(150):
        x = sine_windows(gen, 32, 32)
        out = objective(_batch(x, torch.ones_like(x, dtype=torch.bool)))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.1 * abs(first), f"ts2vec: loss went from {first:.4f} to {last:.4f}"
    eval_x = sine_windows(torch.Generator().manual_seed(99), 256, 32)
    with torch.no_grad():
        embedding = backbone.pooled(eval_x, torch.ones_like(eval_x, dtype=torch.bool))
    assert float(l2_normalized_std(embedding)) > 0.04 and effective_rank(embedding) > 2.0


@settings(max_examples=10, deadline=None)
@given(t=st.integers(8, 46), seed=st.integers(0, 10_000))
def test_trained_embedding_at_t_star_ignores_everything_after_it(t, seed):
    # A few ts2vec steps on the project's TCN, then the embedding at t must not see bars after t.
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(embed_dim=8, hidden_dim=8, n_layers=3), 2)
    objective = build_objective("ts2vec", backbone, {})
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = sine_windows(gen, 8, 48)
        loss = objective(_batch(x, torch.ones_like(x, dtype=torch.bool))).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder = Encoder(backbone, normalization="none")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3, 48, 2)).astype(np.float32)
    future = X.copy()
    future[:, t + 1 :] = rng.normal(scale=10.0, size=future[:, t + 1 :].shape)
    before, after = encoder.encode(X, per_timestep=True), encoder.encode(future, per_timestep=True)
    np.testing.assert_array_equal(before[:, : t + 1], after[:, : t + 1])
    assert not np.array_equal(before[:, t + 1 :], after[:, t + 1 :])


def test_gather_crop_takes_each_rows_own_slice():
    x = torch.arange(2 * 6 * 1, dtype=torch.float32).view(2, 6, 1)
    out = gather_crop(x, torch.tensor([1, 3]), 3)
    assert out.squeeze(-1).tolist() == [[1, 2, 3], [9, 10, 11]]
    with pytest.raises(AssertionError, match="outside the window"):
        gather_crop(x, torch.tensor([4, 0]), 3)


def test_pretrain_api_runs_ts2vec_with_causal_max_pooling():
    from screener_ssl.ssl.api import pretrain

    X = np.random.default_rng(0).normal(size=(6, 80, 2)).astype(np.float32)
    encoder = pretrain(X, objective="ts2vec", steps=4, batch_size=8, embed_dim=8, hidden_dim=8, n_layers=2,
                       threads=1, pooling="max")
    assert encoder.pooling == "max" and encoder.meta["objective"] == "ts2vec"
    emb = encoder.encode(X)
    assert emb.shape == (6, 8) and np.isfinite(emb).all()


def test_pipeline_trains_ts2vec_from_the_sweep_and_records_its_cost(tmp_path):
    import json

    from screener_ssl.data import dataset as ds
    from screener_ssl.data.synthetic import SyntheticMarketConfig
    from screener_ssl.data.windows import WindowSpec
    from screener_ssl.runs.pretrain import pretrain_partition
    from screener_ssl.runs.sweep import load_sweep

    spec = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
    root = tmp_path / "market"
    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=8, n_days=250, seed=2))
    ds.build_features(root, spec.volume_lookback)
    ds.build_windowed_dataset(root, spec)
    dataset = ds.load_dataset(root, with_labels=False)
    point = load_sweep().point("ts2vec", "base")
    point = point.model_copy(update={
        "train": point.train.model_copy(update={"steps": 3, "batch_size": 16, "threads": 1}),
        "backbone": BackboneConfig(embed_dim=8, hidden_dim=8, n_layers=2),
    })
    outcome = pretrain_partition(dataset, point, root, log=lambda _: None)
    config = json.loads((outcome.run_dir / "pretrain_config.json").read_text())
    assert config["objective"] == "ts2vec" and config["metrics"]["steps"] == 3
    cost = config["cost"]
    assert cost["windows_seen"] == 48
    assert cost["encoder_parameters"] > 0 and cost["trained_parameters"] >= cost["encoder_parameters"]
    assert load_sweep().point("ts2vec", "maxpool").probe["pooling"] == "max"
