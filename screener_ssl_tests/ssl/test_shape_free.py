"""The shape_free baseline backbone: causal, parameter-free, and blind to the path's shape."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from screener_ssl.data.contracts import FEATURE_NAMES
from screener_ssl.ssl.backbones import BackboneConfig, build_backbone
from screener_ssl.ssl.backbones.shape_free import SHAPE_FREE_LAGS, ShapeFreeBackbone

CHANNELS = len(FEATURE_NAMES)


def backbone() -> ShapeFreeBackbone:
    return build_backbone(BackboneConfig(kind="shape_free"), CHANNELS)


def test_width_and_no_parameters() -> None:
    model = backbone()
    assert isinstance(model, ShapeFreeBackbone) and not list(model.parameters())
    x = torch.randn(3, 20, CHANNELS)
    assert model(x, torch.ones_like(x, dtype=torch.bool)).shape == (3, 20, SHAPE_FREE_LAGS * 6)
    with pytest.raises(ValueError, match="input channels"):
        build_backbone(BackboneConfig(kind="shape_free"), 4)


@settings(max_examples=25, deadline=None)
@given(t=st.integers(0, 23), seed=st.integers(0, 10_000))
def test_shape_free_is_causal(t: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 24, CHANNELS, generator=gen)
    observed = torch.rand(2, 24, CHANNELS, generator=gen) > 0.2
    future = torch.arange(24).view(1, -1, 1) > t
    x_new = torch.where(future, 10.0 * torch.randn(x.shape, generator=gen), x)
    model = backbone()
    assert torch.equal(model(x, observed)[:, : t + 1], model(x_new, torch.where(future, ~observed, observed))[:, : t + 1])


def test_no_sign_and_no_history_beyond_the_last_bars() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, CHANNELS, generator=gen)
    observed = torch.ones_like(x, dtype=torch.bool)
    model = backbone()
    flipped = x.clone()
    for name in ("log_return", "gap", "log_close_open"):  # a falling path instead of a rising one
        flipped[..., FEATURE_NAMES.index(name)] *= -1
    assert torch.equal(model(x, observed)[:, -1], model(flipped, observed)[:, -1])
    older = x.clone()
    older[:, : 32 - SHAPE_FREE_LAGS] = torch.randn(4, 32 - SHAPE_FREE_LAGS, CHANNELS, generator=gen)
    assert torch.equal(model(x, observed)[:, -1], model(older, observed)[:, -1])
    louder = x.clone()
    louder[:, -2, FEATURE_NAMES.index("rel_log_volume")] += 3.0
    assert not torch.equal(model(x, observed)[:, -1], model(louder, observed)[:, -1])  # it does see volume
