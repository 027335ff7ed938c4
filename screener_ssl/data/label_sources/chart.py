"""Label source ``chart``: chart-pattern label events on real bars from ta-patterns' point-in-time detectors.

``ta_patterns.chart_patterns`` (pure numpy, MIT) ships pivot- and trendline-based
detectors; each returns one signed int8 per bar (+1 bullish, -1 bearish, 0 none)
and claims that the value at bar i reads bars ``0..i`` only. The claim is checked,
not trusted: :func:`chart_pattern_events` re-runs every requested detector on
truncated histories of the first tickers and refuses a detector whose past
values change when later bars are removed (``flag_bull`` 1.2.1 does, so it is not
in the default list). The tests prove the default list on random walks the same
way the TA-Lib source is proven.

A detector fires on consecutive bars while a pattern stays confirmed; each such
run is folded into one event: ``end_date`` = the run's first bar (the first bar on
which the whole pattern is visible), ``start_date`` = the first bar of the
detector's lookback window ending there (the span it searched; clipped at the
ticker's first bar).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from screener_ssl.data.contracts import BAR_COLUMNS, PRICE_COLUMNS
from screener_ssl.data.label_sources.base import EVENT_SCHEMA, LabelEvents, LabelInputs, register_label_source

# Our pattern name -> (ta-patterns detector, lookback bars of that detector's defaults, what it means).
CHART_DETECTORS: dict[str, tuple[str, int, str]] = {
    "head_and_shoulders": ("hs_top", 150, "left shoulder, higher head, right shoulder near the left one; close below the neckline through the two troughs (bearish)"),
    "inverse_head_and_shoulders": ("hs_bottom", 150, "the mirror image: head the lowest trough, close above the neckline (bullish)"),
    "double_top": ("double_top", 60, "two pivot highs at about one level (within 3 %), >= 5 bars apart, inside 60 bars (bearish)"),
    "double_bottom": ("double_bottom", 60, "two pivot lows at about one level (within 3 %), >= 5 bars apart, inside 60 bars (bullish)"),
    "triple_top": ("triple_top", 100, "three pivot highs at about one level (within 3 %); close below the lowest valley between them (bearish)"),
    "triple_bottom": ("triple_bottom", 100, "three pivot lows at about one level (within 3 %); close above the highest peak between them (bullish)"),
    "ascending_triangle": ("ascending_triangle", 100, "flat resistance through pivot highs and rising support through pivot lows; close above resistance (bullish)"),
    "descending_triangle": ("descending_triangle", 100, "flat support and falling resistance; close below support (bearish)"),
    "cup_with_handle": ("cup_with_handle", 80, "a U-shaped base (cup, up to 65 bars) then a shallow pullback (handle, <= 15 bars, <= 50 % retrace); close above the rim (bullish)"),
    "rising_wedge": ("rising_wedge", 80, "both trendlines rising and converging, support rising faster than resistance (bearish)"),
    "falling_wedge": ("falling_wedge", 80, "both trendlines falling and converging, resistance falling faster than support (bullish)"),
    "bear_flag": ("flag_bear", 30, "a sharp drop (pole: >= 5 % over 10 bars) then a shallow upward channel (bearish)"),
}
DEFAULT_CHART_PATTERNS: tuple[str, ...] = tuple(CHART_DETECTORS)


class ChartPatternConfig(BaseModel):
    """Which detectors run and how; recorded with the labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patterns: tuple[str, ...] = DEFAULT_CHART_PATTERNS
    mode: Literal["confirmed", "forming"] = "confirmed"
    verify_tickers: int = Field(2, ge=0, le=100)  # tickers whose histories are truncated to verify causality
    verify_points: int = Field(12, ge=1, le=1000)  # truncation points per verified ticker

    @field_validator("patterns")
    @classmethod
    def _known(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in patterns if p not in CHART_DETECTORS]
        if unknown or not patterns:
            raise ValueError(f"unknown chart patterns {unknown}; known: {list(CHART_DETECTORS)}")
        if len(set(patterns)) != len(patterns):
            raise ValueError(f"chart patterns listed twice: {list(patterns)}")
        return patterns


def parse_chart_source(source: str) -> ChartPatternConfig:
    """``"chart"`` -> the default detectors; ``"chart:double_top,cup_with_handle"`` -> those."""
    if source == "chart":
        return ChartPatternConfig()
    prefix = "chart:"
    if not source.startswith(prefix):
        raise ValueError(f"a chart label source is 'chart' or 'chart:<pattern>,<pattern>', found {source!r}")
    names = tuple(p.strip() for p in source[len(prefix) :].split(",") if p.strip())
    return ChartPatternConfig(patterns=names)


def _detector(name: str):
    import ta_patterns.chart_patterns as cp

    return getattr(cp, CHART_DETECTORS[name][0])


def detect(name: str, o: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray, mode: str) -> np.ndarray:
    """int8 ``[n]`` signal of one detector on one ticker's bars (date order), ta-patterns' cache cleared."""
    import ta_patterns.chart_patterns as cp

    cp.clear_cache()  # results are memoised by array content; truncation checks must recompute
    out = np.asarray(_detector(name)(o, h, l, c, mode=mode), dtype=np.int8)
    if out.shape != o.shape:
        raise ValueError(f"ta-patterns {CHART_DETECTORS[name][0]} returned shape {out.shape} for {o.shape[0]} bars")
    return out


def fold_runs(signal: np.ndarray) -> np.ndarray:
    """Positions of the first bar of each run of consecutive non-zero values of ``signal [n]``."""
    fired = signal != 0
    return np.flatnonzero(fired & ~np.r_[False, fired[:-1]])


class LookaheadError(ValueError):
    """A detector's past output changed when later bars were removed."""


def verify_point_in_time(
    name: str, o: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray, mode: str, points: np.ndarray
) -> None:
    """Raise :class:`LookaheadError` when ``detect`` on ``bars[:i+1]`` differs from the full run at any bar ``<= i``."""
    full = detect(name, o, h, l, c, mode)
    for i in points:
        i = int(i)
        truncated = detect(name, o[: i + 1], h[: i + 1], l[: i + 1], c[: i + 1], mode)
        if not np.array_equal(truncated, full[: i + 1]):
            bar = int(np.flatnonzero(truncated != full[: i + 1])[0])
            raise LookaheadError(
                f"chart pattern {name!r} (ta-patterns {CHART_DETECTORS[name][0]}, mode={mode}) is not point-in-time: "
                f"its value at bar {bar} changes when the bars after bar {i} are removed"
            )


def chart_pattern_events(bars: pl.DataFrame, config: ChartPatternConfig | None = None) -> pl.DataFrame:
    """Chart-pattern events per ticker (``EVENT_COLUMNS``), each detector run folded into one event.

    Args:
        bars: validated bars (``BAR_COLUMNS``, finite prices, unique (ticker, date)).
        config: which detectors; by default :data:`DEFAULT_CHART_PATTERNS`.

    Raises:
        LookaheadError: a requested detector failed the truncation check on the first tickers.
        ValueError: bars lack a column or hold non-finite prices.
    """
    config = config or ChartPatternConfig()
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"chart_pattern_events: bars lack column(s) {missing}; expected {list(BAR_COLUMNS)}")
    ordered = bars.select(BAR_COLUMNS).sort("ticker", "date")
    prices = {c: np.ascontiguousarray(ordered[c].to_numpy(), dtype=np.float64) for c in PRICE_COLUMNS}
    if not all(np.isfinite(v).all() for v in prices.values()):
        raise ValueError("chart_pattern_events: bars hold null/NaN/inf prices; pass validate_bars(...).clean")
    runs = ordered.select(pl.col("ticker").rle()).unnest("ticker")
    ends = np.cumsum(runs["len"].to_numpy()).astype(np.int64)
    starts = ends - runs["len"].to_numpy()
    o, h, l, c = (prices[k] for k in PRICE_COLUMNS)
    rng = np.random.default_rng(0)
    for t in range(min(config.verify_tickers, len(starts))):
        s, e = int(starts[t]), int(ends[t])
        if e - s < 3:
            continue
        points = np.unique(rng.integers(1, e - s - 1, size=config.verify_points))
        for name in config.patterns:
            verify_point_in_time(name, o[s:e], h[s:e], l[s:e], c[s:e], config.mode, points)
    tickers, patterns, start_idx, end_idx = [], [], [], []
    for s, e in zip(starts, ends):
        s, e = int(s), int(e)
        for name in config.patterns:
            first = fold_runs(detect(name, o[s:e], h[s:e], l[s:e], c[s:e], config.mode))
            lookback = CHART_DETECTORS[name][1]
            end_idx.append(s + first)
            start_idx.append(s + np.maximum(first - (lookback - 1), 0))
            patterns.extend([name] * len(first))
    end_all = np.concatenate(end_idx) if end_idx else np.zeros(0, dtype=np.int64)
    start_all = np.concatenate(start_idx) if start_idx else np.zeros(0, dtype=np.int64)
    events = pl.DataFrame(
        {
            "ticker": ordered["ticker"].gather(end_all),
            "pattern": pl.Series(patterns, dtype=pl.String),
            "start_date": ordered["date"].gather(start_all),
            "end_date": ordered["date"].gather(end_all),
        },
        schema=EVENT_SCHEMA,
    )
    return events.sort("ticker", "end_date", "pattern")


@register_label_source(
    "chart", reads="the validated bars (ta-patterns chart detectors; default: every detector)",
    argument="<pattern>,<pattern>",
)
def chart_labels(inputs: LabelInputs) -> LabelEvents:
    config = parse_chart_source(inputs.setting)
    events = chart_pattern_events(inputs.load_bars(), config)
    return LabelEvents(events, config.patterns, f"ta-patterns chart detectors ({config.mode}): {', '.join(config.patterns)}")
