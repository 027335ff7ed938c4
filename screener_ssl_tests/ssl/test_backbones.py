"""Property tests of the causal backbones: shapes, no lookahead, mask use, gradients, determinism."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from screener_ssl.ssl.backbones import BackboneConfig, SSLBackbone, build_backbone
from screener_ssl.ssl.backbones.patch_transformer import PatchTransformerBackbone
from screener_ssl.ssl.backbones.ssm import SSMBackbone
from screener_ssl.ssl.backbones.tcn import TCNBackbone

torch.set_num_threads(1)

KINDS = ["tcn", "patch_transformer", "ssm"]
CHANNELS = 6
# Small but structurally complete: several layers, several patches, several heads.
SMALL = dict(embed_dim=16, hidden_dim=16, n_layers=3, patch_len=4, n_heads=2, state_dim=8)
# Float32 round-off bound for "unchanged"; a leak through any weight is orders of magnitude larger.
ATOL = 1e-5

_MODELS: dict[str, SSLBackbone] = {}


def small_backbone(kind: str) -> SSLBackbone:
    """One seeded backbone per kind, built once (construction dominates the test time otherwise)."""
    if kind not in _MODELS:
        torch.manual_seed(0)
        _MODELS[kind] = build_backbone(BackboneConfig(kind=kind, **SMALL), input_channels=CHANNELS).eval()
    return _MODELS[kind]


def make_batch(seed: int, batch: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x: [B, T, C]`` float and ``observed: [B, T, C]`` bool with ~20% censored values."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, CHANNELS, generator=gen)
    observed = torch.rand(batch, steps, CHANNELS, generator=gen) > 0.2
    return x, observed


def perturb_after(
    x: torch.Tensor, observed: torch.Tensor, last_kept: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """New values and flipped mask at every position ``> last_kept[b]`` of row ``b`` (``last_kept: [B]``)."""
    gen = torch.Generator().manual_seed(seed)
    future = torch.arange(x.shape[1]).view(1, -1, 1) > last_kept.view(-1, 1, 1)  # [B, T, 1]
    x_new = torch.where(future, 10.0 * torch.randn(x.shape, generator=gen), x)
    observed_new = torch.where(future, ~observed, observed)
    return x_new, observed_new


def future_leak(backbone: SSLBackbone, x: torch.Tensor, observed: torch.Tensor, t: int, seed: int) -> float:
    """Largest change of ``output[:, :t+1]`` when every input after ``t`` is perturbed."""
    last_kept = torch.full((x.shape[0],), t)
    x_new, observed_new = perturb_after(x, observed, last_kept, seed)
    assert not torch.equal(x_new, x), "the perturbation must actually change the future"
    with torch.no_grad():
        before = backbone(x, observed)[:, : t + 1]
        after = backbone(x_new, observed_new)[:, : t + 1]
    return (before - after).abs().max().item()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [1, 2, 7, 13, 16, 33])
def test_output_shape_for_any_length(kind: str, steps: int) -> None:
    # 7, 13, 33 are odd and not multiples of patch_len=4; 1 is a single bar.
    x, observed = make_batch(seed=steps, batch=3, steps=steps)
    out = small_backbone(kind)(x, observed)
    assert out.shape == (3, steps, SMALL["embed_dim"])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", KINDS)
def test_build_backbone_returns_registered_class(kind: str) -> None:
    expected = {"tcn": TCNBackbone, "patch_transformer": PatchTransformerBackbone, "ssm": SSMBackbone}[kind]
    backbone = build_backbone(BackboneConfig(kind=kind), input_channels=CHANNELS)
    assert type(backbone) is expected
    assert backbone.embed_dim == 64
    x, observed = make_batch(seed=1, batch=2, steps=64)
    assert backbone(x, observed).shape == (2, 64, 64)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_no_lookahead_per_timestep(kind: str, data: st.DataObject) -> None:
    steps = data.draw(st.integers(min_value=2, max_value=30), label="steps")
    t = data.draw(st.integers(min_value=0, max_value=steps - 2), label="t")
    seed = data.draw(st.integers(min_value=0, max_value=10_000), label="seed")
    x, observed = make_batch(seed, batch=2, steps=steps)
    assert future_leak(small_backbone(kind), x, observed, t, seed + 1) <= ATOL


@pytest.mark.parametrize("kind", ["tcn", "ssm"])
def test_prefix_truncation_gives_the_same_outputs(kind: str) -> None:
    # Stronger than "future-independent": with no future at all (T cut to t+1) nothing changes.
    # The patch transformer aligns patches to the end, so its patch boundaries move with T.
    backbone = small_backbone(kind)
    x, observed = make_batch(seed=3, batch=2, steps=20)
    with torch.no_grad():
        full = backbone(x, observed)
        prefix = backbone(x[:, :9], observed[:, :9])
    assert torch.allclose(full[:, :9], prefix, atol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_observed_mask_changes_later_outputs(kind: str) -> None:
    backbone = small_backbone(kind)
    x, observed = make_batch(seed=4, batch=2, steps=16)
    flipped = observed.clone()
    flipped[:, 12] = ~flipped[:, 12]  # same values, only the mask differs
    with torch.no_grad():
        out = backbone(x, observed)
        out_flipped = backbone(x, flipped)
    assert torch.allclose(out[:, :12], out_flipped[:, :12], atol=ATOL)
    assert (out[:, 12:] - out_flipped[:, 12:]).abs().amax(dim=(0, 2)).min() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind: str) -> None:
    torch.manual_seed(1)
    backbone = build_backbone(BackboneConfig(kind=kind, **SMALL), input_channels=CHANNELS)
    x, observed = make_batch(seed=5, batch=3, steps=16)
    backbone(x, observed).square().mean().backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None, f"{kind}: no gradient reached {name}"
        assert param.grad.abs().sum() > 0, f"{kind}: zero gradient at {name}"


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_model_and_outputs(kind: str) -> None:
    config = BackboneConfig(kind=kind, dropout=0.1, **SMALL)
    x, observed = make_batch(seed=6, batch=2, steps=11)
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        backbone = build_backbone(config, input_channels=CHANNELS).train()  # dropout draws from the seed too
        outputs.append(backbone(x, observed))
    torch.manual_seed(8)
    other = build_backbone(config, input_channels=CHANNELS).train()(x, observed)
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0], other)


def test_default_backbone_sees_the_whole_default_window() -> None:
    from screener_ssl.data.windows import WindowSpec

    window_max = WindowSpec().window_max
    backbone = build_backbone(BackboneConfig(), input_channels=CHANNELS).eval()
    assert backbone.receptive_field >= window_max
    x, observed = make_batch(seed=3, batch=1, steps=window_max)
    x_new = x.clone()
    x_new[:, 0] += 5.0  # the oldest bar of the window reaches the decision-bar embedding
    with torch.no_grad():
        assert (backbone(x_new, observed)[:, -1] - backbone(x, observed)[:, -1]).abs().max().item() > 1e-6


def test_tcn_receptive_field_is_exact() -> None:
    config = BackboneConfig(kind="tcn")
    torch.manual_seed(0)
    backbone = build_backbone(config, input_channels=CHANNELS).eval()
    assert backbone.receptive_field == 91  # defaults: 1 + 2 * (4 - 1) * (1 + 2 + 4 + 8)
    x, observed = make_batch(seed=9, batch=1, steps=100)
    last = 99
    oldest_seen = last - backbone.receptive_field + 1
    with torch.no_grad():
        base = backbone(x, observed)[:, last]
        for position, expect_change in [(oldest_seen, True), (oldest_seen - 1, False)]:
            x_new = x.clone()
            x_new[:, position] += 5.0
            moved = (backbone(x_new, observed)[:, last] - base).abs().max().item()
            assert (moved > 1e-6) == expect_change, f"position {position}: change {moved}"


class _SymmetricConvBackbone(SSLBackbone):
    """Deliberately non-causal: ``Conv1d(padding='same')`` sees ``kernel_size // 2`` bars ahead."""

    def __init__(self, input_channels: int, config: BackboneConfig) -> None:
        super().__init__(input_channels, config)
        self.conv = nn.Conv1d(2 * input_channels, config.embed_dim, config.kernel_size, padding="same")

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        inp = self.model_inputs(x, observed)  # [B, T, 2C]
        return self.conv(inp.transpose(1, 2)).transpose(1, 2)  # [B, T, D]


def test_causality_check_catches_symmetric_padding() -> None:
    torch.manual_seed(0)
    leaky = _SymmetricConvBackbone(CHANNELS, BackboneConfig(embed_dim=8, kernel_size=3))
    x, observed = make_batch(seed=10, batch=2, steps=12)
    assert future_leak(leaky, x, observed, t=5, seed=11) > 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_no_lookahead_in_training_mode_with_dropout(kind: str) -> None:
    # Pretraining runs in train mode: dropout (attention dropout included) must not open a leak.
    torch.manual_seed(2)
    backbone = build_backbone(BackboneConfig(kind=kind, dropout=0.2, **SMALL), input_channels=CHANNELS).train()
    x, observed = make_batch(seed=12, batch=2, steps=15)
    x_new, observed_new = perturb_after(x, observed, torch.full((2,), 8), seed=13)
    torch.manual_seed(3)
    before = backbone(x, observed)
    torch.manual_seed(3)
    after = backbone(x_new, observed_new)
    assert torch.allclose(before[:, :9], after[:, :9], atol=ATOL)
    assert not torch.allclose(before[:, 9:], after[:, 9:], atol=ATOL)
