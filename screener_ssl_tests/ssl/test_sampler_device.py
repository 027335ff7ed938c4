"""The sampler's tensor path against a numpy reference of the same draws (``gather_windows``, the
z-score, then the same augmentation stream): the same batches for the same seed, causal, and every
tensor born on the sampler's device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from screener_ssl.data.windows import WindowSpec, gather_windows, zscore_observed
from screener_ssl.ssl.augment import AugmentConfig, augment_view
from screener_ssl.ssl.sampler import WindowSampler, gather_window_rows, zscore_observed_tensor
from screener_ssl_tests.device_tracking import is_host, track_devices

CHANNELS = 6
SPEC = WindowSpec(window_max=32, crop_lengths=(16, 24, 32), min_history=16)


def _market(seed: int = 0, n_tickers: int = 4, length: int = 200):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_tickers * length, CHANNELS)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] = np.nan  # missing cells stay unobserved
    starts = np.arange(n_tickers, dtype=np.int64) * length
    ticker_start = np.repeat(starts, length - 20)
    decision_row = (starts[:, None] + np.arange(20, length)[None, :]).reshape(-1)  # some reach before the ticker
    return values, ticker_start, decision_row


def _numpy_window(values, start, decision_row, lengths, keep_whole, open_known, normalize):
    """gather_windows per row with that row's censoring (t* kept whole or open-only)."""
    x = np.zeros((len(start), SPEC.window_max, CHANNELS), np.float32)
    obs = np.zeros(x.shape, bool)
    for rows, known in ((~keep_whole, open_known), (keep_whole, np.ones(CHANNELS, bool))):
        if rows.any():
            x[rows], obs[rows] = gather_windows(values, start[rows], decision_row[rows], SPEC.window_max,
                                                lengths=lengths[rows], open_known=known, normalize=normalize)
    return x, obs


def _reference_batch(values, ticker_start, decision_row, augment, n_views, batch_size, seed, **kw):
    """The batch the sampler must produce, from its own host draws and the numpy window code."""
    sampler = WindowSampler(values, ticker_start, decision_row, SPEC, augment, n_views, batch_size, seed, **kw)
    start, t_star, keep_whole, crops = sampler._draw()
    gen = torch.Generator().manual_seed(seed)
    open_known = SPEC.open_known_mask
    clean = _numpy_window(values, start, t_star, crops[0], keep_whole, open_known, sampler.normalize)
    views = [clean] + [
        _numpy_window(values, start, t_star, crops[v], keep_whole, open_known, sampler.normalize)
        for v in range(1, n_views)
    ]
    augmented = [augment_view(torch.from_numpy(x), torch.from_numpy(o), augment, gen) for x, o in views]
    return start, t_star, clean, augmented


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("neighbours", [0, 3])
def test_batches_equal_the_numpy_reference_of_the_same_draws(normalize, neighbours):
    values, ts, dr = _market(1)
    kw = dict(normalize=normalize, neighbors_per_anchor=neighbours, neighbor_radius=2)
    start, t_star, clean, augmented = _reference_batch(values, ts, dr, AugmentConfig(), 2, 24, 5, **kw)
    batch = WindowSampler(values, ts, dr, SPEC, AugmentConfig(), 2, 24, 5, **kw).sample()
    assert batch.ticker_id.tolist() == start.tolist() and batch.decision_row.tolist() == t_star.tolist()
    assert np.array_equal(batch.clean.observed.numpy(), clean[1])
    np.testing.assert_allclose(batch.clean.x.numpy(), clean[0], rtol=1e-5, atol=1e-5)
    for view, (x, o) in zip(batch.views, augmented, strict=True):
        assert torch.equal(view.observed, o)
        torch.testing.assert_close(view.x, x, rtol=1e-4, atol=1e-4)


def test_on_another_device_the_windows_match_and_the_state_resumes():
    values, ts, dr = _market(2)
    cpu = WindowSampler(values, ts, dr, SPEC, AugmentConfig(), 2, 16, seed=9, future_bars=4)
    other = WindowSampler(values, ts, dr, SPEC, AugmentConfig(), 2, 16, seed=9, future_bars=4).to(torch.device("cpu", 0))
    a, b = cpu.sample(), other.sample()
    assert torch.equal(a.clean.x, b.clean.x) and torch.equal(a.extras["future_x"], b.extras["future_x"])
    state = other.state_dict()
    again = other.sample()
    other.load_state_dict(state)
    assert torch.equal(other.sample().views[1].x, again.views[1].x)


def test_tensor_zscore_equals_the_numpy_one():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 32, CHANNELS)).astype(np.float32) * 3 + 1
    observed = rng.random(x.shape) < 0.8
    x = np.where(observed, x, 0).astype(np.float32)
    np.testing.assert_allclose(zscore_observed_tensor(torch.from_numpy(x), torch.from_numpy(observed)).numpy(),
                               zscore_observed(x, observed), rtol=1e-5, atol=1e-5)
    rows = gather_window_rows(torch.zeros(5, CHANNELS), torch.zeros(2, dtype=torch.long), torch.tensor([1, 4]), 4)
    assert rows.present[0].sum(dim=1).tolist() == [0, 0, CHANNELS, CHANNELS]  # before the ticker: absent


@pytest.mark.parametrize("future_bars", [0, 6])
def test_the_sampler_never_sees_bars_after_t_star(future_bars):
    """Perturb every bar after each candidate's last possible t*: views and clean windows are unchanged."""
    values, ts, dr = _market(4)
    perturbed = values.copy()
    # Candidates only up to row 120 of each ticker; their future (<= 6 bars) ends by 126.
    keep = (dr - ts) <= 120
    ts, dr = ts[keep], dr[keep]
    for s in np.unique(ts):
        perturbed[s + 127 : s + 200] = perturbed[s + 127 : s + 200] * 7.0 + 3.0
    a = WindowSampler(values, ts, dr, SPEC, AugmentConfig(), 2, 32, seed=1, future_bars=future_bars)
    b = WindowSampler(perturbed, ts, dr, SPEC, AugmentConfig(), 2, 32, seed=1, future_bars=future_bars)
    for _ in range(3):
        ba, bb = a.sample(), b.sample()
        for va, vb in zip((ba.clean, *ba.views), (bb.clean, *bb.views), strict=True):
            assert torch.equal(va.x, vb.x) and torch.equal(va.observed, vb.observed)
        # The check has teeth: bars after the candidates' t* but inside a window's reach do change.
    c = WindowSampler(values, ts, dr, SPEC, AugmentConfig(), 2, 32, seed=1)
    moved = values.copy()
    moved[:: 5] += 50.0
    d = WindowSampler(moved, ts, dr, SPEC, AugmentConfig(), 2, 32, seed=1)
    assert not torch.equal(c.sample().clean.x, d.sample().clean.x)


def test_every_batch_tensor_is_born_on_the_device():
    values, ts, dr = _market(5)
    sampler = WindowSampler(values, ts, dr, SPEC, AugmentConfig(), 2, 16, seed=0, future_bars=4)
    with track_devices() as device:
        sampler.to(device)
        batch = sampler.sample()
        tensors = [batch.ticker_id, batch.decision_row, *batch.extras.values()]
        for view in (batch.clean, *batch.views):
            tensors += [view.x, view.observed]
        assert not any(is_host(t) for t in tensors)
