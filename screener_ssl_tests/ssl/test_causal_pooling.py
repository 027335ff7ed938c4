"""Causal pooling: the running max/mean embedding at t sees every visible step up to t and nothing after."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.encoder import POOLINGS, Encoder, causal_pool, load_encoder

CHANNELS = 3


def _encoder(pooling: str = "last", normalization: str = "expanding_zscore") -> Encoder:
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(embed_dim=8, hidden_dim=8, n_layers=2), CHANNELS)
    return Encoder(backbone, normalization=normalization, pooling=pooling)


def test_running_max_and_mean_match_their_definition():
    h = torch.tensor([[[1.0], [3.0], [2.0], [5.0], [0.0]]])  # [1, 5, 1]
    visible = torch.tensor([[False, True, True, False, True]])  # step 0: left padding; step 3: masked
    assert causal_pool(h, visible, "max").flatten().tolist() == [0.0, 3.0, 3.0, 3.0, 3.0]
    assert causal_pool(h, visible, "mean").flatten().tolist() == pytest.approx([0.0, 3.0, 2.5, 2.5, 5 / 3])
    assert torch.equal(causal_pool(h, visible, "last"), h)


@settings(max_examples=10, deadline=None)
@given(pooling=st.sampled_from(["max", "mean"]), t=st.integers(0, 29), seed=st.integers(0, 10_000))
def test_pooled_embedding_ignores_everything_after_t(pooling: str, t: int, seed: int):
    encoder = _encoder(pooling)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3, 30, CHANNELS)).astype(np.float32)
    X[:, :4] = np.nan  # left padding: short histories
    future = X.copy()
    future[:, t + 1 :] = rng.normal(scale=10.0, size=future[:, t + 1 :].shape)
    before = encoder.encode(X, per_timestep=True)
    after = encoder.encode(future, per_timestep=True)
    np.testing.assert_array_equal(before[:, : t + 1], after[:, : t + 1])
    # The last step of the prefix alone (a shorter convolution: equal up to float rounding).
    np.testing.assert_allclose(encoder.encode(X[:, : t + 1]), before[:, t], rtol=1e-5, atol=1e-5)
    if t + 1 < 30:
        assert not np.array_equal(before[:, t + 1 :], after[:, t + 1 :])


def test_pooling_sees_the_whole_visible_history_not_just_the_receptive_field():
    # No normalization here: an expanding z-score would carry step 5 forward by itself.
    encoder, last = _encoder("max", "none"), _encoder("last", "none")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 120, CHANNELS)).astype(np.float32)
    early = X.copy()
    early[:, 5] += 50.0  # far outside the 2-layer TCN's receptive field from step 119
    assert np.array_equal(last.encode(X), last.encode(early))
    assert not np.array_equal(encoder.encode(X), encoder.encode(early))


def test_pooling_per_call_overrides_the_default_and_survives_save(tmp_path):
    encoder = _encoder("mean")
    X = np.random.default_rng(1).normal(size=(4, 20, CHANNELS)).astype(np.float32)
    np.testing.assert_array_equal(encoder.encode(X, pooling="last"), _encoder("last").encode(X))
    encoder.save(tmp_path)
    loaded = load_encoder(tmp_path)
    assert loaded.pooling == "mean"
    np.testing.assert_array_equal(loaded.encode(X), encoder.encode(X))
    assert encoder.with_pooling("max").describe()["pooling"] == "max"


def test_unknown_pooling_is_a_clear_error():
    assert POOLINGS == ("last", "max", "mean")
    with pytest.raises(ValueError, match="pooling must be one of"):
        _encoder("median")
    with pytest.raises(ValueError, match="pooling must be one of"):
        _encoder().encode(np.zeros((1, 10, CHANNELS), dtype=np.float32), pooling="median")
