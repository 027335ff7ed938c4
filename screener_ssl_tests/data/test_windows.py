"""Features, window index, splits and the censoring gatherer."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screener_ssl.data.contracts import FEATURE_NAMES
from screener_ssl.data.features import compute_shape_features
from screener_ssl.data.windows import WindowSpec, build_window_index, gather_windows, zscore_observed
from screener_ssl_tests.conftest import random_walk_bars

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
BARS = random_walk_bars(n_tickers=4, n_days=260, seed=1, ragged=True)
STORE = compute_shape_features(BARS)


def _gather(store, row, lengths=None, spec=SPEC):
    tid = int(np.searchsorted(store.offsets, row, side="right") - 1)
    x, obs = gather_windows(
        store.values,
        np.array([store.offsets[tid]]),
        np.array([row]),
        spec.window_max,
        lengths=None if lengths is None else np.array([lengths]),
        open_known=spec.open_known_mask,
    )
    return x[0], obs[0]


def test_features_match_hand_computation():
    bars = BARS.filter(pl.col("ticker") == "T000").head(30)
    store = compute_shape_features(bars)
    o, h, lo, c, v = (bars[col].to_numpy() for col in ("open", "high", "low", "close", "volume"))
    t = 25
    expected = [
        np.log(c[t] / c[t - 1]),
        np.log(o[t] / c[t - 1]),
        np.log(h[t] / o[t]),
        np.log(lo[t] / o[t]),
        np.log(c[t] / o[t]),
        np.log1p(v[t]) - np.log1p(v[t - 20 : t]).mean(),
    ]
    np.testing.assert_allclose(store.values[t], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(store.values[0, 0]) and np.isnan(store.values[0, 1])  # no previous close
    assert np.isnan(store.values[19, 5]) and np.isfinite(store.values[20, 5])  # volume warm-up


def test_features_never_cross_tickers():
    first_rows = STORE.offsets[:-1]
    assert np.isnan(STORE.values[first_rows, 0]).all()


def test_unsorted_bars_are_refused():
    with pytest.raises(ValueError, match="sorted"):
        compute_shape_features(BARS.sort("date"))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_future_and_decision_bar_fields_cannot_change_the_window(data):
    """Perturb every bar after d and the high/low/close/volume of bar d: the window is bit-identical."""
    ticker = data.draw(st.sampled_from(sorted(set(BARS["ticker"]))))
    sub = BARS.filter(pl.col("ticker") == ticker)
    n = sub.height
    d = data.draw(st.integers(SPEC.min_history, n - 2))
    crop = data.draw(st.sampled_from([None, 16, 32, 5]))
    seed = data.draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    noise = lambda k: np.exp(rng.normal(0, 0.3, k))  # noqa: E731
    cols = {c: sub[c].to_numpy().copy() for c in ("open", "high", "low", "close", "volume")}
    future = slice(d + 1, n)
    k = n - d - 1
    for c in ("open", "close"):
        cols[c][future] *= noise(k)
    cols["high"][future] = np.maximum(cols["open"][future], cols["close"][future]) * noise(k) ** 0.1 + 1
    cols["low"][future] = np.minimum(cols["open"][future], cols["close"][future]) * 0.5
    cols["volume"][future] *= noise(k)
    # Decision bar: only the open is known; change everything else.
    cols["close"][d] *= 1.37
    cols["high"][d] = max(cols["open"][d], cols["close"][d]) * 1.2
    cols["low"][d] = min(cols["open"][d], cols["close"][d]) * 0.7
    cols["volume"][d] *= 9.0
    perturbed = BARS.filter(pl.col("ticker") != ticker).vstack(sub.with_columns(**{c: pl.Series(v) for c, v in cols.items()})).sort("ticker", "date")
    store_p = compute_shape_features(perturbed)
    tid = STORE.tickers.index(ticker)
    row = int(STORE.offsets[tid] + d)
    x0, o0 = _gather(STORE, row, crop)
    x1, o1 = _gather(store_p, row, crop)
    assert np.array_equal(o0, o1)
    assert np.array_equal(x0, x1)
    # The perturbation did change the stored future, so the check above has teeth.
    assert not np.array_equal(STORE.values[row + 1 : row + 3], store_p.values[row + 1 : row + 3])


def test_decision_bar_is_open_only_and_last():
    row = int(STORE.offsets[1] + 100)
    _, obs = _gather(STORE, row)
    gap = FEATURE_NAMES.index("gap")
    assert obs[-1, gap] and obs[-1].sum() == 1
    assert obs[:-1].all()


def test_crop_and_short_history_pad_on_the_left():
    row = int(STORE.offsets[2] + 100)
    x, obs = _gather(STORE, row, lengths=10)
    assert not obs[:-10].any() and obs[-10:-1].all()
    assert (x[:-10] == 0).all()
    early = int(STORE.offsets[2] + 3)  # only 4 bars of history
    _, obs_short = _gather(STORE, early)
    assert obs_short[:-4].sum() == 0


def test_normalization_uses_only_observed_cells():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (4, 20, 3)).astype(np.float32)
    observed = rng.random((4, 20, 3)) > 0.3
    z = zscore_observed(np.where(observed, x, 0).astype(np.float32), observed)
    garbage = np.where(observed, x, 1e6).astype(np.float32)  # unobserved cells must not matter...
    z2 = zscore_observed(np.where(observed, garbage, 0).astype(np.float32), observed)
    assert np.array_equal(z, z2)
    for b in range(4):
        for c in range(3):
            vals = z[b, observed[b, :, c], c]
            assert abs(vals.mean()) < 1e-4 and abs(vals.std() - 1) < 1e-3
            assert (z[b, ~observed[b, :, c], c] == 0).all()


def test_splits_are_chronological_with_embargo():
    index = build_window_index(STORE, SPEC)
    day_pos = np.searchsorted(index.calendar, STORE.dates[index.decision_row])
    last = {s: day_pos[index.split == s].max() for s in (0, 1)}
    first = {s: day_pos[index.split == s].min() for s in (1, 2)}
    assert first[1] - last[0] > SPEC.embargo
    assert first[2] - last[1] > SPEC.embargo
    # A later split's earliest window starts after the previous split's last decision + label horizon.
    assert first[1] - (SPEC.window_max - 1) > last[0] + SPEC.label_horizon
    assert set(np.unique(index.split)) == {0, 1, 2}


def test_window_index_respects_history_and_stride():
    spec = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16, stride=3)
    index = build_window_index(STORE, spec)
    pos = index.decision_row - STORE.offsets[index.ticker_id]
    assert (pos >= spec.min_history - 1).all() and (pos % 3 == 0).all()
    assert len(index) < len(build_window_index(STORE, SPEC))


def test_spec_fingerprint_is_stable_and_sensitive_to_every_field():
    base = WindowSpec()
    assert base.fingerprint() == WindowSpec().fingerprint()
    changes = {
        "feature_names": FEATURE_NAMES[:-1],
        "open_known_features": (),
        "volume_lookback": 10,
        "window_max": 48,
        "crop_lengths": (32, 64),
        "min_history": 20,
        "stride": 2,
        "label_horizon": 3,
        "split_fractions": (0.5, 0.25, 0.25),
        "embargo": 100,
    }
    assert set(changes) | {"censor", "normalization"} == set(WindowSpec.model_fields)
    prints = {base.fingerprint()}
    for field, value in changes.items():
        kwargs = {field: value}
        if field == "window_max":
            kwargs["crop_lengths"] = (32, 48)
        prints.add(WindowSpec(**kwargs).fingerprint())
    assert len(prints) == len(changes) + 1


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="embargo"):
        WindowSpec(embargo=10)
    with pytest.raises(ValueError, match="crop_lengths"):
        WindowSpec(crop_lengths=(128,))
    with pytest.raises(ValueError, match="split_fractions"):
        WindowSpec(split_fractions=(0.5, 0.5, 0.5))
