"""Candlestick rendering: geometry on hand-made bars, batch independence, and causality from raw bars."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from screener_ssl.data.contracts import FEATURE_NAMES
from screener_ssl.data.features import compute_shape_features
from screener_ssl.data.windows import WindowSpec, gather_windows
from screener_ssl.ssl.checks import _perturb_after
from screener_ssl.ssl.render import RenderConfig, render_candles
from screener_ssl_tests.conftest import random_walk_bars

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
C = {name: i for i, name in enumerate(FEATURE_NAMES)}


def hand_window() -> tuple[torch.Tensor, torch.Tensor]:
    """One window of 6 bars: 2 padding, an up bar, a down bar, a flat bar, then an open-only decision bar."""
    x = torch.zeros(1, 6, len(FEATURE_NAMES))
    observed = torch.zeros(1, 6, len(FEATURE_NAMES), dtype=torch.bool)
    observed[0, 2:5] = True
    x[0, 2, C["log_return"]], x[0, 2, C["log_close_open"]] = 1.0, 1.0  # up
    x[0, 3, C["log_return"]], x[0, 3, C["log_close_open"]] = -1.0, -1.0  # down
    x[0, 2:5, C["log_high_open"]] = torch.tensor([1.0, 0.0, 0.0])
    x[0, 2:5, C["log_low_open"]] = torch.tensor([0.0, 0.0, 0.0])
    x[0, 2:5, C["rel_log_volume"]] = torch.tensor([0.0, 1.0, 2.0])
    observed[0, 5, C["gap"]] = True  # decision bar: only the gap is known
    x[0, 5, C["gap"]] = 1.0
    return x, observed


def test_hand_made_bars_render_as_expected():
    config = RenderConfig(price_rows=16, volume_rows=4)
    image = render_candles(*hand_window(), config)
    assert image.shape == (1, 2, 20, 6) and image.dtype == torch.float32
    candles, direction = image[0, 0, :16], image[0, 1, :16]
    assert candles[:, :2].abs().sum() == 0 and image[0, :, :, :2].abs().sum() == 0  # padding: empty columns
    assert (direction[:, 2] == 1).any() and not (direction[:, 2] == -1).any()  # up bar
    assert (direction[:, 3] == -1).any() and not (direction[:, 3] == 1).any()  # down bar
    assert (candles[:, 2] == 0.5).any(), "the up bar's upper wick is drawn"
    # The decision bar is one pixel at its open, with no direction.
    assert int((candles[:, 5] > 0).sum()) == 1 and direction[:, 5].abs().sum() == 0
    # Volume panel: heights rise with volume, the decision bar (volume censored) has none.
    volume_heights = image[0, 0, 16:].sum(dim=0)
    assert volume_heights[2] < volume_heights[3] < volume_heights[4] and volume_heights[5] == 0


def test_each_window_renders_independently_of_its_batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 24, len(FEATURE_NAMES), generator=gen)
    observed = torch.rand(5, 24, len(FEATURE_NAMES), generator=gen) > 0.1
    batch = render_candles(x, observed)
    for i in range(5):
        assert torch.equal(batch[i : i + 1], render_candles(x[i : i + 1], observed[i : i + 1]))


def test_missing_shape_feature_is_a_clear_error():
    x, observed = hand_window()
    names = tuple(n if n != "log_high_open" else "something_else" for n in FEATURE_NAMES)
    with pytest.raises(ValueError, match="log_high_open"):
        render_candles(x, observed, feature_names=names)


def _images(bars: pl.DataFrame, decision_row: int, spec: WindowSpec) -> torch.Tensor:
    store = compute_shape_features(bars, volume_lookback=spec.volume_lookback)
    x, observed = gather_windows(
        store.values, np.zeros(1, dtype=np.int64), np.array([decision_row]), spec.window_max,
        open_known=spec.open_known_mask,
    )
    return render_candles(torch.from_numpy(x), torch.from_numpy(observed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_future_bars_and_the_decision_bars_hlc_leave_the_image_identical(seed):
    rng = np.random.default_rng(seed)
    bars = random_walk_bars(n_tickers=1, n_days=90, seed=seed)
    for _ in range(6):
        d = int(rng.integers(SPEC.min_history - 1, bars.height - 2))
        perturbed = _perturb_after(bars, d, rng)
        assert not perturbed.slice(d, bars.height - d).equals(bars.slice(d, bars.height - d))
        assert torch.equal(_images(bars, d, SPEC), _images(perturbed, d, SPEC)), f"image changed at decision {d}"


def test_the_causality_check_can_fail():
    # Treating the close-derived return as known at the open leaks the decision bar's close into the image.
    leaky = SPEC.model_copy(update={"open_known_features": ("gap", "log_return")})
    rng = np.random.default_rng(0)
    bars = random_walk_bars(n_tickers=1, n_days=90, seed=0)
    changed = 0
    for _ in range(6):
        d = int(rng.integers(SPEC.min_history - 1, bars.height - 2))
        changed += not torch.equal(_images(bars, d, leaky), _images(_perturb_after(bars, d, rng), d, leaky))
    assert changed > 0
