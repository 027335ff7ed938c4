"""The device-resident sampler path (``WindowSampler.to``) against the host path: the same windows
for the same seed, causal, and every tensor born on the sampler's device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from screener_ssl.data.windows import WindowSpec, zscore_observed
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.sampler import WindowSampler, gather_window_rows, gather_window_rows_tensor, zscore_observed_tensor
from screener_ssl_tests.device_tracking import is_host, track_devices

CHANNELS = 6
SPEC = WindowSpec(window_max=32, crop_lengths=(16, 24, 32), min_history=16)


def _market(seed: int = 0, n_tickers: int = 4, length: int = 200):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_tickers * length, CHANNELS)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] = np.nan  # missing cells stay unobserved on both paths
    starts = np.arange(n_tickers, dtype=np.int64) * length
    ticker_start = np.repeat(starts, length - 20)
    decision_row = (starts[:, None] + np.arange(20, length)[None, :]).reshape(-1)  # some reach before the ticker
    return values, ticker_start, decision_row


def _pair(values, ticker_start, decision_row, **kw):
    args = dict(spec=SPEC, augment=kw.pop("augment", AugmentConfig()), n_views=kw.pop("n_views", 2),
                batch_size=kw.pop("batch_size", 24), seed=kw.pop("seed", 5), **kw)
    host = WindowSampler(values, ticker_start, decision_row, **args)
    device = WindowSampler(values, ticker_start, decision_row, **args).to("cpu")
    return host, device


def _assert_batches_equal(a, b):
    assert torch.equal(a.ticker_id, b.ticker_id) and torch.equal(a.decision_row, b.decision_row)
    for va, vb in zip((a.clean, *a.views), (b.clean, *b.views), strict=True):
        assert torch.equal(va.observed, vb.observed)
        torch.testing.assert_close(va.x, vb.x, rtol=1e-5, atol=1e-5)
    assert a.extras.keys() == b.extras.keys()
    for k in a.extras:
        torch.testing.assert_close(a.extras[k], b.extras[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("future_bars", [0, 6])
def test_the_tensor_path_draws_the_host_paths_batches(normalize, future_bars):
    host, device = _pair(*_market(1), normalize=normalize, future_bars=future_bars)
    for _ in range(4):  # the streams stay in step batch after batch
        _assert_batches_equal(host.sample(), device.sample())


def test_neighbour_batches_and_checkpointed_state_match():
    values, ts, dr = _market(2)
    host, device = _pair(values, ts, dr, neighbors_per_anchor=3, neighbor_radius=2, seed=9)
    host.sample(), device.sample()
    state_h, state_d = host.state_dict(), device.state_dict()
    _assert_batches_equal(host.sample(), device.sample())
    host.load_state_dict(state_h)
    device.load_state_dict(state_d)
    _assert_batches_equal(host.sample(), device.sample())


def test_tensor_gather_and_zscore_equal_the_numpy_ones():
    values, ts, dr = _market(3)
    pick = np.random.default_rng(0).integers(0, len(dr), size=40)
    ref = gather_window_rows(values, ts[pick], dr[pick], 32)
    rows = gather_window_rows_tensor(torch.from_numpy(values), torch.from_numpy(ts[pick]), torch.from_numpy(dr[pick]), 32)
    assert np.array_equal(rows.present.numpy(), ref.present)
    np.testing.assert_array_equal(np.nan_to_num(rows.x.numpy()), np.nan_to_num(ref.x))
    lengths = np.random.default_rng(1).choice([16, 32], size=40)
    known = np.random.default_rng(2).random((40, CHANNELS)) < 0.5
    x_ref, o_ref = ref.view(lengths, known)
    x, o = rows.view(torch.from_numpy(lengths), torch.from_numpy(known))
    assert np.array_equal(o.numpy(), o_ref)
    np.testing.assert_allclose(x.numpy(), x_ref, rtol=1e-5, atol=1e-5)
    raw = np.where(o_ref, ref.x, 0).astype(np.float32)
    np.testing.assert_allclose(zscore_observed_tensor(torch.from_numpy(raw), torch.from_numpy(o_ref)).numpy(),
                               zscore_observed(raw, o_ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("future_bars", [0, 6])
def test_the_tensor_path_never_sees_bars_after_t_star(future_bars):
    """Perturb every bar after each candidate's last possible t*: views and clean windows are unchanged."""
    values, ts, dr = _market(4)
    perturbed = values.copy()
    # Candidates only up to row 120 of each ticker; their future (<= 6 bars) ends by 126.
    keep = (dr - ts) <= 120
    ts, dr = ts[keep], dr[keep]
    for s in np.unique(ts):
        perturbed[s + 127 : s + 200] = perturbed[s + 127 : s + 200] * 7.0 + 3.0
    a = WindowSampler(values, ts, dr, SPEC, AugmentConfig(), 2, 32, seed=1, future_bars=future_bars).to("cpu")
    b = WindowSampler(perturbed, ts, dr, SPEC, AugmentConfig(), 2, 32, seed=1, future_bars=future_bars).to("cpu")
    for _ in range(3):
        ba, bb = a.sample(), b.sample()
        for va, vb in zip((ba.clean, *ba.views), (bb.clean, *bb.views), strict=True):
            assert torch.equal(va.x, vb.x) and torch.equal(va.observed, vb.observed)
        # The check has teeth: bars after the candidates' t* but inside a window's reach do change.
    c = WindowSampler(values, ts, dr, SPEC, AugmentConfig(), 2, 32, seed=1).to("cpu")
    moved = values.copy()
    moved[:: 5] += 50.0
    d = WindowSampler(moved, ts, dr, SPEC, AugmentConfig(), 2, 32, seed=1).to("cpu")
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
