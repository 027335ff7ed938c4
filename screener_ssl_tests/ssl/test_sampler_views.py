"""Views derived from one gather equal views gathered one by one; the sampler stays seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from screener_ssl.data.windows import WindowSpec, gather_windows
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.sampler import WindowSampler, gather_window_rows

CHANNELS = 6


def _values(seed: int, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, CHANNELS)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] = np.nan  # missing cells must stay unobserved
    return values


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_views_from_one_gather_equal_separate_gathers(seed: int, normalize: bool) -> None:
    rng = np.random.default_rng(seed)
    values = _values(seed)
    window, batch = 32, 50
    ticker_start = rng.choice([0, 100, 250], size=batch).astype(np.int64)
    decision_row = ticker_start + rng.integers(0, 120, size=batch)  # some windows reach before the ticker
    open_known = np.array([False, True, False, False, False, False])
    keep_whole = rng.random(batch) < 0.3
    decision_known = np.where(keep_whole[:, None], True, open_known[None, :])
    rows = gather_window_rows(torch.from_numpy(values), torch.from_numpy(ticker_start), torch.from_numpy(decision_row), window)
    for _ in range(3):
        lengths = rng.choice([8, 16, 32], size=batch)
        x, observed = (t.numpy() for t in rows.view(torch.from_numpy(lengths), torch.from_numpy(decision_known), normalize))
        for known, rows_mask in ((open_known, ~keep_whole), (np.ones(CHANNELS, bool), keep_whole)):
            ref_x, ref_obs = gather_windows(
                values, ticker_start[rows_mask], decision_row[rows_mask], window,
                lengths=lengths[rows_mask], open_known=known, normalize=normalize,
            )
            assert np.array_equal(observed[rows_mask], ref_obs)
            np.testing.assert_allclose(x[rows_mask], ref_x, rtol=1e-5, atol=1e-5)  # torch vs numpy sums


def test_derived_views_never_see_bars_after_t_star() -> None:
    values = _values(3)
    start, rows = torch.zeros(4, dtype=torch.long), torch.tensor([77, 78, 79, 80])
    rows_a = gather_window_rows(torch.from_numpy(values), start, rows, 32)
    perturbed = values.copy()
    perturbed[81:] += 100.0  # after every window's t*
    rows_b = gather_window_rows(torch.from_numpy(perturbed), start, rows, 32)
    known = torch.zeros((4, CHANNELS), dtype=torch.bool)
    for lengths in (torch.full((4,), 32), torch.tensor([8, 16, 24, 32])):
        xa, oa = rows_a.view(lengths, known)
        xb, ob = rows_b.view(lengths, known)
        assert torch.equal(xa, xb) and torch.equal(oa, ob)


def test_sampler_batches_are_seeded_and_views_differ() -> None:
    values = _values(4, n=600)
    spec = WindowSpec(window_max=32, crop_lengths=(16, 24, 32), min_history=16)
    starts = np.repeat([0, 300], 200).astype(np.int64)
    decisions = np.concatenate([np.arange(40, 240), np.arange(340, 540)]).astype(np.int64)

    def batch(seed: int):
        sampler = WindowSampler(values, starts, decisions, spec, AugmentConfig(), n_views=2, batch_size=16, seed=seed)
        return sampler.sample()

    a, b, c = batch(7), batch(7), batch(8)
    for va, vb in zip(a.views, b.views):
        assert torch.equal(va.x, vb.x) and torch.equal(va.observed, vb.observed)
    assert not torch.equal(a.views[0].x, c.views[0].x)
    assert not torch.equal(a.views[0].observed, a.views[1].observed)  # different crops and augmentations
    # The clean view is the first view's crop, unaugmented, with the decision bar open-only.
    assert not a.clean.observed[:, -1, ~spec.open_known_mask].any()
