"""Every augmentation is causal: perturbing positions after t leaves positions <= t unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from screener_ssl.ssl.augment import (
    AugmentConfig,
    amplitude_scale,
    apply_time_warp,
    augment_view,
    channel_dropout,
    jitter,
    sample_crop_lengths,
    sample_decision_offsets,
    time_warp_source,
)

B, T, C = 6, 24, 4


def _window(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, T, C), generator=g)
    observed = torch.rand((B, T, C), generator=g) > 0.2
    return torch.where(observed, x, torch.zeros_like(x)), observed


def _perturb_after(x, observed, t, seed):
    g = torch.Generator().manual_seed(seed + 99)
    x2, o2 = x.clone(), observed.clone()
    x2[:, t + 1 :] = torch.randn((B, T - t - 1, C), generator=g) * 50
    o2[:, t + 1 :] = ~o2[:, t + 1 :]
    return x2, o2


def _same_prefix(a, b, t):
    return torch.equal(a[:, : t + 1], b[:, : t + 1])


@settings(max_examples=30, deadline=None)
@given(t=st.integers(0, T - 2), seed=st.integers(0, 1000), strength=st.sampled_from([0.5, 1.0, 2.0]))
def test_augment_view_is_causal_per_position(t, seed, strength):
    x, observed = _window(seed)
    x2, o2 = _perturb_after(x, observed, t, seed)
    config = AugmentConfig(strength=strength, time_warp_max=0.3, channel_dropout_p=0.2)
    ya, oa = augment_view(x, observed, config, torch.Generator().manual_seed(seed))
    yb, ob = augment_view(x2, o2, config, torch.Generator().manual_seed(seed))
    assert _same_prefix(ya, yb, t) and _same_prefix(oa, ob, t)
    # The perturbation is visible after t (unless warped away), so the check has teeth.
    assert not (torch.equal(ya, yb) and torch.equal(oa, ob))


@pytest.mark.parametrize("seed", range(5))
def test_each_value_augmentation_is_causal(seed):
    x, observed = _window(seed)
    t = 10
    x2, o2 = _perturb_after(x, observed, t, seed)
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    assert _same_prefix(jitter(x, observed, 0.1, g()), jitter(x2, o2, 0.1, g()), t)
    assert _same_prefix(amplitude_scale(x, (0.8, 1.2), (0.9, 1.1), g()), amplitude_scale(x2, (0.8, 1.2), (0.9, 1.1), g()), t)
    assert _same_prefix(channel_dropout(observed, 0.3, g()), channel_dropout(o2, 0.3, g()), t)
    src = time_warp_source(B, T, 0.4, g())
    wa, woa = apply_time_warp(x, observed, src)
    wb, wob = apply_time_warp(x2, o2, src)
    assert _same_prefix(wa, wb, t) and _same_prefix(woa, wob, t)


@pytest.mark.parametrize("warp", [0.0, 0.2, 0.5, 0.9])
def test_time_warp_is_monotonic_and_never_reads_ahead(warp):
    src = time_warp_source(64, T, warp, torch.Generator().manual_seed(1))
    pos = torch.arange(T).expand_as(src)
    assert (src <= pos).all()
    assert (src[:, -1] == T - 1).all()  # the decision bar stays itself
    valid = src >= 0
    diffs = src[:, 1:] - src[:, :-1]
    assert (diffs[valid[:, :-1]] >= 0).all()
    if warp == 0.0:
        assert torch.equal(src, pos)


def test_decision_bar_censoring_survives_augmentation():
    x, observed = _window(3)
    observed[:, -1, 1:] = False  # open-only decision bar
    _, oa = augment_view(x, observed, AugmentConfig(strength=2.0), torch.Generator().manual_seed(0))
    assert not oa[:, -1, 1:].any()


def test_index_level_choices_respect_ranges():
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(decision_min_frac=0.75)
    drops = sample_decision_offsets(rng, 5000, 64, cfg)
    assert drops.min() == 0 and drops.max() == 64 - 48
    crops = sample_crop_lengths(rng, 5000, 64, (32, 48, 64), cfg)
    assert set(np.unique(crops)) == {32, 48, 64}
    assert (sample_crop_lengths(rng, 10, 64, (32,), AugmentConfig(crop=False)) == 64).all()


def test_config_ranges_are_checked():
    with pytest.raises(ValueError):
        AugmentConfig(censor_last_prob=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(jitter_sigma=-1)
