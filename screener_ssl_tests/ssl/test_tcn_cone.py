"""The TCN's last-step cone equals the full forward at the last position, and stays causal."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from screener_ssl.ssl.backbones import BackboneConfig, build_backbone
from screener_ssl.ssl.backbones.tcn import TCNBackbone

torch.set_num_threads(1)

CHANNELS = 6
ATOL = 1e-5
CONFIGS = [
    dict(),  # the defaults: kernel 4, 4 blocks, receptive field 91
    dict(kernel_size=2, n_layers=3, hidden_dim=16, embed_dim=8),
    dict(kernel_size=5, n_layers=2, hidden_dim=8, embed_dim=12),
    dict(kernel_size=3, n_layers=5, hidden_dim=16, embed_dim=16),
    dict(kernel_size=4, n_layers=1, hidden_dim=8, embed_dim=8),
]


def random_tcn(config: dict, seed: int) -> TCNBackbone:
    """A TCN whose every weight, bias and norm parameter is random (not the default init)."""
    torch.manual_seed(seed)
    backbone = build_backbone(BackboneConfig(kind="tcn", **config), input_channels=CHANNELS)
    with torch.no_grad():
        for p in backbone.parameters():
            p.copy_(0.4 * torch.randn_like(p) + (1.0 if p.dim() == 1 and p.shape[0] else 0.0) * 0.1)
    return backbone.eval()


def random_batch(seed: int, batch: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(batch, steps, CHANNELS, generator=gen)
    observed = torch.rand(batch, steps, CHANNELS, generator=gen) > 0.25
    return x, observed


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()) or "defaults")
@pytest.mark.parametrize("steps", [1, 3, 17, 64, 90])
def test_cone_equals_full_forward_at_last_position(config: dict, steps: int) -> None:
    backbone = random_tcn(config, seed=steps)
    x, observed = random_batch(seed=100 + steps, batch=5, steps=steps)
    with torch.no_grad():
        full = backbone(x, observed)[:, -1]
        cone = backbone.last_step(x, observed)
        pooled = backbone.pooled(x, observed)
    assert cone.shape == (5, backbone.embed_dim)
    assert full.abs().max() > 1e-2, "degenerate outputs would make the comparison vacuous"
    torch.testing.assert_close(cone, full, atol=ATOL, rtol=0)
    torch.testing.assert_close(pooled, full, atol=ATOL, rtol=0)


def test_cone_gradients_equal_full_forward_gradients() -> None:
    # Objectives train through pooled(); the cone must give them the same gradients.
    backbone = random_tcn(CONFIGS[1], seed=1).train()
    x, observed = random_batch(seed=2, batch=4, steps=40)
    x_full, x_cone = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    backbone(x_full, observed)[:, -1].square().sum().backward()
    grads_full = [p.grad.clone() for p in backbone.parameters()]
    backbone.zero_grad()
    backbone.last_step(x_cone, observed).square().sum().backward()
    for g_full, p in zip(grads_full, backbone.parameters()):
        torch.testing.assert_close(p.grad, g_full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x_cone.grad, x_full.grad, atol=1e-5, rtol=1e-4)


def test_cone_lengths_start_at_the_receptive_field() -> None:
    for config in CONFIGS:
        backbone = random_tcn(config, seed=0)
        lengths = backbone.cone_lengths()
        assert len(lengths) == backbone.config.n_layers and lengths[-1] == 2 * backbone.config.kernel_size - 1
        assert lengths[0] == backbone.receptive_field


@settings(max_examples=15, deadline=None)
@given(
    config_index=st.integers(0, len(CONFIGS) - 1),
    steps=st.integers(2, 80),
    data=st.data(),
)
def test_cone_is_causal_per_prefix(config_index: int, steps: int, data: st.DataObject) -> None:
    """Cone of the prefix ending at t == full forward at t, whatever happens after t."""
    backbone = random_tcn(CONFIGS[config_index], seed=config_index)
    t = data.draw(st.integers(0, steps - 1))
    x, observed = random_batch(seed=steps, batch=3, steps=steps)
    gen = torch.Generator().manual_seed(t)
    future = torch.arange(steps).view(1, -1, 1) > t
    x_new = torch.where(future, 10.0 * torch.randn(x.shape, generator=gen), x)
    observed_new = torch.where(future, ~observed, observed)
    with torch.no_grad():
        cone = backbone.last_step(x[:, : t + 1], observed[:, : t + 1])
        full_perturbed = backbone(x_new, observed_new)[:, t]
    torch.testing.assert_close(cone, full_perturbed, atol=ATOL, rtol=0)


def test_cone_sees_exactly_its_receptive_field() -> None:
    backbone = random_tcn({}, seed=3)
    steps = backbone.receptive_field + 10
    x, observed = random_batch(seed=4, batch=1, steps=steps)
    oldest_seen = steps - backbone.receptive_field
    with torch.no_grad():
        base = backbone.last_step(x, observed)
        for position, expect_change in [(oldest_seen, True), (oldest_seen - 1, False), (steps - 1, True)]:
            x_new = x.clone()
            x_new[:, position] += 5.0
            observed_new = observed.clone()
            observed_new[:, position] = True
            moved = (backbone.last_step(x_new, observed_new) - base).abs().max().item()
            assert (moved > 1e-6) == expect_change, f"position {position}: change {moved}"
