"""Chart-pattern events from ta-patterns: point-in-time (truncation), folded runs, configurable, refused when leaky."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from screener_ssl.data import dataset as ds
from screener_ssl.data.label_sources.chart import (
    CHART_DETECTORS,
    DEFAULT_CHART_PATTERNS,
    ChartPatternConfig,
    LookaheadError,
    chart_pattern_events,
    detect,
    fold_runs,
    parse_chart_source,
    verify_point_in_time,
)
from screener_ssl.data.label_sources.base import EVENT_SCHEMA
from screener_ssl.data.synthetic import SyntheticMarketConfig
from screener_ssl_tests.data.test_bars import random_walk_ohlcv

BARS = random_walk_ohlcv(n_tickers=3, n_days=500, seed=5)
FULL_EVENTS = chart_pattern_events(BARS)


def _prices(seed: int, n: int = 400):
    one = random_walk_ohlcv(n_tickers=1, n_days=n, seed=seed)
    return tuple(one[c].to_numpy().astype(np.float64) for c in ("open", "high", "low", "close"))


def _volatile_prices(seed: int, n: int = 600):
    """A 2 %-a-day random walk: enough 5 % moves in 10 bars for flag poles."""
    rng = np.random.default_rng(seed)
    c = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    o = np.r_[c[0], c[:-1]] * np.exp(rng.normal(0, 0.005, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    l = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    return o, h, l, c


def test_random_walk_yields_events_of_several_patterns():
    # Without events the causality tests below would prove nothing.
    assert FULL_EVENTS.schema == pl.Schema(EVENT_SCHEMA)
    assert FULL_EVENTS["pattern"].n_unique() >= 4
    assert set(FULL_EVENTS["pattern"].unique()) <= set(DEFAULT_CHART_PATTERNS)
    assert (FULL_EVENTS["start_date"] <= FULL_EVENTS["end_date"]).all()


@pytest.mark.parametrize("name", DEFAULT_CHART_PATTERNS)
def test_every_default_detector_is_point_in_time(name):
    # Removing the bars after bar i never changes the detector's output at bars <= i.
    for o, h, l, c in (_prices(1), _prices(2), _volatile_prices(0), _volatile_prices(1)):
        verify_point_in_time(name, o, h, l, c, "confirmed", np.arange(60, len(o), 17))


def test_a_leaky_detector_is_refused_by_name():
    # ta-patterns 1.2.1's flag_bull changes past values when later bars are removed.
    import screener_ssl.data.label_sources.chart as chart

    chart.CHART_DETECTORS["bull_flag_leaky"] = ("flag_bull", 30, "test only")
    try:
        found = False
        for seed in range(4):
            o, h, l, c = _volatile_prices(seed)
            try:
                verify_point_in_time("bull_flag_leaky", o, h, l, c, "confirmed", np.arange(100, 600, 7))
            except LookaheadError as exc:
                assert "bull_flag_leaky" in str(exc) and "flag_bull" in str(exc)
                found = True
                break
        assert found, "the truncation check must catch flag_bull's lookahead"
    finally:
        del chart.CHART_DETECTORS["bull_flag_leaky"]


def test_events_on_truncated_history_equal_past_events_of_full_history():
    dates = BARS["date"].unique().sort()
    rng = np.random.default_rng(7)
    for cut in rng.choice(np.arange(100, dates.len()), size=5, replace=False):
        last_day = dates[int(cut)]
        truncated = chart_pattern_events(BARS.filter(pl.col("date") <= last_day))
        expected = FULL_EVENTS.filter(pl.col("end_date") <= last_day)
        assert truncated.equals(expected), f"events differ when history ends on {last_day}"


def test_runs_fold_into_one_event_at_their_first_bar():
    assert fold_runs(np.array([0, 1, 1, 0, -1, 0, 1], dtype=np.int8)).tolist() == [1, 4, 6]
    o, h, l, c = _prices(3, 500)
    for name in ("double_top", "double_bottom"):
        signal = detect(name, o, h, l, c, "confirmed")
        firsts = fold_runs(signal)
        n_runs = int(((signal != 0) & ~np.r_[False, signal[:-1] != 0]).sum())
        assert len(firsts) == n_runs and (signal[firsts] != 0).all()
    one = BARS.filter(pl.col("ticker") == "T000")
    events = chart_pattern_events(one, ChartPatternConfig(patterns=("double_bottom",)))
    o, h, l, c = (one[k].to_numpy().astype(np.float64) for k in ("open", "high", "low", "close"))
    firsts = fold_runs(detect("double_bottom", o, h, l, c, "confirmed"))
    assert events["end_date"].to_list() == one["date"].gather(firsts).to_list()
    lookback = CHART_DETECTORS["double_bottom"][1]
    assert events["start_date"].to_list() == one["date"].gather(np.maximum(firsts - lookback + 1, 0)).to_list()


def test_pattern_list_is_configurable_and_checked():
    assert parse_chart_source("chart").patterns == DEFAULT_CHART_PATTERNS
    assert parse_chart_source("chart:double_top, cup_with_handle").patterns == ("double_top", "cup_with_handle")
    subset = chart_pattern_events(BARS, parse_chart_source("chart:double_top"))
    assert subset.equals(FULL_EVENTS.filter(pl.col("pattern") == "double_top"))
    with pytest.raises(ValueError, match="unknown chart patterns"):
        parse_chart_source("chart:bull_flag")
    with pytest.raises(ValueError, match="'chart' or 'chart:"):
        parse_chart_source("charts")


def test_tickers_do_not_leak_into_each_other_and_order_does_not_matter():
    alone = chart_pattern_events(BARS.filter(pl.col("ticker") == "T001"))
    assert alone.equals(FULL_EVENTS.filter(pl.col("ticker") == "T001"))
    assert chart_pattern_events(BARS.sample(fraction=1.0, shuffle=True, seed=2)).equals(FULL_EVENTS)


def test_bad_bars_are_clear_errors():
    with pytest.raises(ValueError, match="lack column"):
        chart_pattern_events(BARS.drop("low"))
    broken = BARS.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("close")).alias("close"))
    with pytest.raises(ValueError, match="NaN"):
        chart_pattern_events(broken)


def test_chart_label_source_builds_labels_with_prevalence_per_split(tmp_path):
    bars_file = tmp_path / "bars.parquet"
    BARS.write_parquet(bars_file)
    root = tmp_path / "root"
    ds.ingest_bars(root, str(bars_file), SyntheticMarketConfig())
    from screener_ssl.data.windows import WindowSpec

    spec = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
    ds.build_features(root, spec.volume_lookback)
    ds.build_windowed_dataset(root, spec)
    info = ds.build_labels(root, "chart:double_top,double_bottom", spec)
    assert info["patterns"] == ["double_top", "double_bottom"]
    assert "ta-patterns" in info["source"] and info["events"] > 0
    for split in ("train", "val", "test"):
        shares = info["prevalence"][split]
        assert {"double_top", "double_bottom"} <= set(shares)
        assert all(0.0 <= shares[p] <= 1.0 for p in ("double_top", "double_bottom"))
    assert info["prevalence"]["train"]["double_top"] + info["prevalence"]["train"]["double_bottom"] > 0
