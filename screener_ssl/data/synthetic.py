"""A seeded synthetic market with planted chart patterns: the embedded default bar source.

Each ticker's daily log return is ``drift regime + beta * market + GARCH(1,1) shock``
on a Mon-Fri calendar shared by all tickers; fat tails come from the volatility
clustering and occasional overnight jumps, which open the bar away from the previous
close. High/low wrap open and close by a volatility-scaled intraday range; volume is
log-normal around a per-ticker baseline and rises with ``log1p(|return| / vol)``.

Chart patterns are piecewise-linear templates in log price (knots in normalised
time ``u in [0, 1]``, unit height) whose increments are added to the close-to-close
returns over the span, so the level shift a breakout makes persists afterwards.
Their height is ``snr * sigma_span * sqrt(length)`` — a multiple of the random
walk's own spread over the span — set by ``difficulty``. The last bar of a span
(``end_idx``) is the completion bar: the close breaks the neckline / resistance
there. Near-miss distractors use the same machinery with a template that fails
the pattern's defining property.

Only shape may tell a pattern apart. Inside a span the shock is scaled so that
each bar's expected squared return (template drift plus noise) stays the
ticker's own variance wherever the drift allows (variance matching, floored by
``span_noise_easy``), and intraday range, gaps and volume follow the unscaled
volatility, so span boundaries are not visible from volatility alone; every
near miss ends with a final move of the same size as its pattern's break, and
both go through one code path, so whatever non-shape signature a pattern
carries its distractor carries too. Confirmation volume on the completion bar
(``breakout_volume_boost``) is real but a tell that no distractor shares, so it
is off by default.

Randomness is drawn from one generator per ticker (seeded by ``(seed, ticker)``)
and one for the market, so a ticker's bars do not depend on how many tickers are
generated or on the internal chunking, which keeps memory bounded at any size.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from screener_ssl.data.contracts import BAR_COLUMNS, EVENT_COLUMNS, PATTERNS

# Event frames carry bar positions beside the dates so labelers need no date lookup.
EVENT_FRAME_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, "start_idx", "end_idx")

TRADING_DAYS_PER_YEAR = 252
_TICKERS_PER_CHUNK = 512  # bounds the [tickers, days] working arrays (~0.1 GB at 2,500 days)
_SLOT_PARAMS = 20  # uniforms drawn per schedule slot: 8 for timing/size, 12 for the template shape
_TEMPLATE_PARAMS = 12
_MARKET_STREAM, _TICKER_STREAM = 0, 1
_MEAN_LOG1P_ABS_NORMAL = 0.5346  # E[log(1 + |Z|)] for standard normal Z: centres the volume response


class SyntheticMarketConfig(BaseModel):
    """Everything that determines a synthetic market; same config -> identical frames."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_tickers: int = Field(200, ge=1, le=100_000)
    n_days: int = Field(1500, ge=100, le=20_000)  # business days (Mon-Fri), shared by all tickers
    start_date: datetime.date = datetime.date(2015, 1, 2)  # rolled forward to a weekday
    seed: int = Field(0, ge=0)
    # 0 = big clean patterns (snr_easy: the drift leaves little room for noise); 1 = faint ones (snr_hard).
    difficulty: float = Field(0.5, ge=0.0, le=1.0)
    patterns_per_ticker_per_year: float = Field(3.0, ge=0.0, le=50.0)  # approximate: spans cannot overlap
    # Near-miss distractors per planted pattern: as many as patterns, so a pattern's non-shape traits
    # (its final move, its volume) predict "pattern or near miss" no better than a coin.
    distractor_rate: float = Field(1.0, ge=0.0, le=5.0)
    min_pattern_len: int = Field(15, ge=12, le=500)  # 12 bars fit the densest template's knots
    max_pattern_len: int = Field(60, ge=12, le=500)
    min_event_gap: int = Field(3, ge=1, le=250)  # bars left free between consecutive spans of a ticker
    warmup_bars: int = Field(20, ge=0, le=1000)  # no span starts before this bar: history precedes it
    pattern_snr_easy: float = Field(4.0, gt=0.0, le=20.0)  # pattern height / (sigma * sqrt(len)) at difficulty 0
    pattern_snr_hard: float = Field(0.6, gt=0.0, le=20.0)  # the same at difficulty 1
    # Floor of the variance-matched shock scale inside a span (where the template's drift exceeds the vol).
    span_noise_easy: float = Field(0.2, gt=0.0, le=1.0)
    # Extra log volume on a completion bar at difficulty 0; a non-shape tell (distractors lack it): off by default.
    breakout_volume_boost: float = Field(0.0, ge=0.0, le=3.0)
    # Return process.
    market_vol: float = Field(0.010, gt=0.0, le=0.1)  # long-run daily vol of the market factor
    idio_vol: float = Field(0.015, gt=0.0, le=0.2)  # median long-run daily idiosyncratic vol
    idio_vol_dispersion: float = Field(0.35, ge=0.0, le=2.0)  # log-sd of that vol across tickers
    beta_mean: float = Field(1.0, ge=-3.0, le=3.0)
    beta_sd: float = Field(0.3, ge=0.0, le=2.0)
    garch_alpha: float = Field(0.08, ge=0.0, lt=1.0)  # reaction of variance to yesterday's squared shock
    garch_beta: float = Field(0.90, ge=0.0, lt=1.0)  # persistence of variance
    regime_switch_prob: float = Field(0.005, ge=0.0, le=1.0)  # daily chance a drift regime ends (~200-day regimes)
    market_regime_drift: float = Field(0.0006, ge=0.0, le=0.01)  # |daily drift| of the market's bull/bear regimes
    idio_regime_drift: float = Field(0.0005, ge=0.0, le=0.01)  # sd of a ticker's own daily drift per regime
    gap_prob: float = Field(0.01, ge=0.0, le=0.5)  # daily chance of an overnight jump
    gap_size: float = Field(3.0, ge=0.0, le=20.0)  # median |jump| in units of the day's vol
    intraday_range: float = Field(0.6, gt=0.0, le=5.0)  # high/low excursion beyond open/close, in vol units
    start_price_median: float = Field(40.0, gt=0.0, le=1e5)
    volume_median: float = Field(5e5, gt=0.0, le=1e10)  # median per-ticker baseline volume (shares)
    volume_return_sensitivity: float = Field(1.0, ge=0.0, le=5.0)  # log volume per unit of log1p(|return| / vol)
    volume_noise: float = Field(0.3, ge=0.0, le=3.0)  # sd of the AR(1) log-volume noise

    @model_validator(mode="after")
    def _check_ranges(self) -> SyntheticMarketConfig:
        if self.min_pattern_len > self.max_pattern_len:
            raise ValueError(
                f"min_pattern_len ({self.min_pattern_len}) must be <= max_pattern_len ({self.max_pattern_len})"
            )
        if self.warmup_bars + self.max_pattern_len > self.n_days:
            raise ValueError(
                f"warmup_bars + max_pattern_len ({self.warmup_bars} + {self.max_pattern_len}) "
                f"must fit in n_days ({self.n_days})"
            )
        if self.garch_alpha + self.garch_beta >= 1.0:
            raise ValueError(
                f"garch_alpha + garch_beta ({self.garch_alpha} + {self.garch_beta}) must be < 1 "
                "for a finite long-run variance"
            )
        return self


@dataclass(frozen=True)
class SyntheticMarket:
    """Bars plus the ground truth planted in them.

    ``bars``: columns ``BAR_COLUMNS``, sorted by (ticker, date), unique on (ticker, date).
    ``events``: ``EVENT_FRAME_COLUMNS``, sorted by (ticker, end_date); the planted patterns.
    ``distractors``: same columns; ``pattern`` names the pattern imitated. Not ground truth.
    """

    bars: pl.DataFrame
    events: pl.DataFrame
    distractors: pl.DataFrame


def business_days(start: datetime.date, n_days: int) -> np.ndarray:
    """The first ``n_days`` Mon-Fri dates from ``start`` (rolled forward): ``datetime64[D]`` of shape ``[n_days]``."""
    return np.busday_offset(np.datetime64(start, "D"), np.arange(n_days), roll="forward")


def ticker_names(n_tickers: int) -> list[str]:
    """``T0000, T0001, ...`` zero-padded to one width, so string order is numeric order."""
    width = max(4, len(str(n_tickers - 1)))
    return [f"T{i:0{width}d}" for i in range(n_tickers)]


# --- pattern templates -----------------------------------------------------------------
# A builder maps shape parameters ``params: [E, 12]`` (uniforms in [0, 1]) and the knot
# ``last_x: [E]`` of the bar before completion, ``(L - 2) / (L - 1)``, to knots
# ``x, y: [E, K]``: x increasing from 0 to 1, y[:, 0] = 0, unit height. Interior knots
# stay <= 0.88 so they precede ``last_x`` for every length >= 12.

Knots = tuple[np.ndarray, np.ndarray]


def _lerp(lo: float, hi: float, u: np.ndarray) -> np.ndarray:
    return lo + (hi - lo) * u


def _knots(*columns: np.ndarray | float, n: int) -> np.ndarray:
    return np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), (n,)) for c in columns], axis=1)


def _head_and_shoulders(p: np.ndarray, last_x: np.ndarray, near_miss: bool) -> Knots:
    """Left shoulder, higher head, right shoulder near the left one, then a close below the neckline.

    Near miss: the same three peaks, but price bounces off the neckline instead of breaking it.
    """
    n = len(p)
    neck_left = _lerp(0.25, 0.35, p[:, 6])
    neck_right = neck_left + _lerp(-0.05, 0.05, p[:, 7])
    left_shoulder = neck_left + _lerp(0.25, 0.35, p[:, 8])
    right_shoulder = left_shoulder + _lerp(-0.04, 0.04, p[:, 9])
    before = neck_right + _lerp(0.02, 0.06, p[:, 10])
    if near_miss:
        end = neck_right + _lerp(0.15, 0.3, p[:, 11])
    else:
        end = neck_right - _lerp(0.15, 0.3, p[:, 11])
    x = _knots(
        0.0,
        _lerp(0.14, 0.20, p[:, 0]),
        _lerp(0.29, 0.35, p[:, 1]),
        _lerp(0.46, 0.54, p[:, 2]),
        _lerp(0.65, 0.71, p[:, 3]),
        _lerp(0.80, 0.86, p[:, 4]),
        last_x,
        1.0,
        n=n,
    )
    y = _knots(0.0, left_shoulder, neck_left, 1.0, neck_right, right_shoulder, before, end, n=n)
    return x, y


def _double_top(p: np.ndarray, last_x: np.ndarray, near_miss: bool) -> Knots:
    """Two peaks of about equal height around a trough, then a close below the trough.

    Near miss: the second peak is much lower than the first (a lower high, not a double top).
    """
    n = len(p)
    trough = _lerp(0.35, 0.55, p[:, 4])
    if near_miss:
        second_peak = trough + _lerp(0.3, 0.5, p[:, 5]) * (1.0 - trough)
    else:
        second_peak = 1.0 + _lerp(-0.04, 0.04, p[:, 5])
    before = trough + _lerp(0.02, 0.06, p[:, 6])
    end = trough - _lerp(0.12, 0.25, p[:, 7])
    x = _knots(
        0.0, _lerp(0.18, 0.28, p[:, 0]), _lerp(0.45, 0.55, p[:, 1]), _lerp(0.72, 0.80, p[:, 2]), last_x, 1.0, n=n
    )
    y = _knots(0.0, 1.0, trough, second_peak, before, end, n=n)
    return x, y


def _bull_flag(p: np.ndarray, last_x: np.ndarray, near_miss: bool) -> Knots:
    """A steep pole, a gently falling channel (the flag), then a close above the channel.

    Near miss: the channel and the breakout without the pole.
    """
    n = len(p)
    pole_x = _lerp(0.28, 0.38, p[:, 0])
    pole_top = _lerp(0.12, 0.25, p[:, 1]) if near_miss else np.ones(n)
    drop = _lerp(0.12, 0.28, p[:, 2])
    half_width = _lerp(0.03, 0.07, p[:, 3])
    flag_x = [pole_x + (0.86 - pole_x) * f for f in (0.2, 0.45, 0.7, 1.0)]

    def centre(x: np.ndarray) -> np.ndarray:
        return pole_top - drop * (x - pole_x) / (last_x - pole_x)

    flag_y = [centre(fx) + sign * half_width for fx, sign in zip(flag_x, (-1.0, 1.0, -1.0, 1.0), strict=True)]
    before = centre(last_x)
    end = centre(last_x) + half_width + _lerp(0.1, 0.2, p[:, 4])
    x = _knots(0.0, pole_x, *flag_x, last_x, 1.0, n=n)
    y = _knots(0.0, pole_top, *flag_y, before, end, n=n)
    return x, y


def _ascending_triangle(p: np.ndarray, last_x: np.ndarray, near_miss: bool) -> Knots:
    """Three touches of a flat resistance with rising lows between them, then a close above it.

    Near miss: the highs fall too (a symmetric triangle) and price breaks down out of it.
    """
    n = len(p)
    low_1 = _lerp(0.3, 0.45, p[:, 6])
    if near_miss:
        high_1 = np.ones(n)
        high_2 = high_1 - _lerp(0.12, 0.2, p[:, 7])
        high_3 = high_2 - _lerp(0.12, 0.2, p[:, 8])
        low_2 = low_1 + _lerp(0.3, 0.45, p[:, 9]) * (high_2 - low_1)
        low_3 = low_2 + _lerp(0.3, 0.45, p[:, 10]) * (high_3 - low_2)
        # Breaks down out of the converging range, as far as the pattern breaks up: same final move.
        middle = 0.5 * (low_3 + high_3)
        before, end = middle, middle - _lerp(0.12, 0.25, p[:, 11])
    else:
        high_1 = 1.0 + _lerp(-0.02, 0.02, p[:, 7])
        high_2 = 1.0 + _lerp(-0.02, 0.02, p[:, 8])
        high_3 = 1.0 + _lerp(-0.02, 0.02, p[:, 9])
        low_2 = low_1 + _lerp(0.35, 0.5, p[:, 10]) * (1.0 - low_1)
        low_3 = low_2 + _lerp(0.35, 0.5, p[:, 11]) * (1.0 - low_2)
        before, end = 1.0 - _lerp(0.02, 0.05, p[:, 4]), 1.0 + _lerp(0.1, 0.2, p[:, 5])
    x = _knots(
        0.0,
        _lerp(0.12, 0.16, p[:, 0]),
        _lerp(0.28, 0.32, p[:, 1]),
        _lerp(0.45, 0.50, p[:, 2]),
        _lerp(0.60, 0.66, p[:, 3]),
        0.76,
        0.86,
        last_x,
        1.0,
        n=n,
    )
    y = _knots(0.0, high_1, low_1, high_2, low_2, high_3, low_3, before, end, n=n)
    return x, y


_CUP_FRACTIONS = np.arange(1, 8) / 8.0  # interior knots of the rounded cup


def _cup_and_handle(p: np.ndarray, last_x: np.ndarray, near_miss: bool) -> Knots:
    """A rounded (sine) cup back to the left rim, a shallow handle, then a close above the rim.

    Near miss: a V-shaped cup whose right side recovers only about half the depth, then a bounce
    of the size of the pattern's breakout that stays far below the rim.
    """
    n = len(p)
    if near_miss:
        right_side = -_lerp(0.4, 0.55, p[:, 2])
        handle = right_side - _lerp(0.1, 0.15, p[:, 3])
        x = _knots(
            0.0, _lerp(0.35, 0.45, p[:, 0]), _lerp(0.72, 0.78, p[:, 1]), _lerp(0.82, 0.87, p[:, 4]), last_x, 1.0, n=n
        )
        before = right_side - 0.05
        y = _knots(0.0, -1.0, right_side, handle, before, before + _lerp(0.12, 0.25, p[:, 5]), n=n)
        return x, y
    rim_x = _lerp(0.68, 0.76, p[:, 0])
    cup_x = rim_x[:, None] * _CUP_FRACTIONS[None, :]  # [E, 7]
    cup_y = np.broadcast_to(-np.sin(np.pi * _CUP_FRACTIONS)[None, :], (n, 7))
    handle_x = rim_x + (0.88 - rim_x) * _lerp(0.4, 0.7, p[:, 1])
    x = np.column_stack([np.zeros(n), cup_x, rim_x, handle_x, last_x, np.ones(n)])
    y = np.column_stack(
        [
            np.zeros(n),
            cup_y,
            _lerp(-0.06, 0.0, p[:, 2]),
            -_lerp(0.18, 0.3, p[:, 3]),
            -_lerp(0.02, 0.08, p[:, 4]),
            _lerp(0.1, 0.2, p[:, 5]),
        ]
    )
    return x, y


TemplateBuilder = Callable[[np.ndarray, np.ndarray, bool], Knots]


def _mirrored(builder: TemplateBuilder) -> TemplateBuilder:
    """Bottoms are tops upside down: negate the log-price offsets."""

    def build(p: np.ndarray, last_x: np.ndarray, near_miss: bool) -> Knots:
        x, y = builder(p, last_x, near_miss)
        return x, -y

    return build


# Share of each template's final (completion-bar) move that is kept: the full move would be a
# one-bar jump of several sigma, a volatility tell; half of it keeps the break clear of the neckline.
BREAK_SCALE = 0.5


def _soft_break(builder: TemplateBuilder) -> TemplateBuilder:
    """Shrink the completion bar's move: a one-bar break of several sigma would be a volatility tell."""

    def build(p: np.ndarray, last_x: np.ndarray, near_miss: bool) -> Knots:
        x, y = builder(p, last_x, near_miss)
        y = y.copy()
        y[:, -1] = y[:, -2] + BREAK_SCALE * (y[:, -1] - y[:, -2])
        return x, y

    return build


_TEMPLATE_BUILDERS: dict[str, TemplateBuilder] = {
    name: _soft_break(builder)
    for name, builder in {
        "head_and_shoulders": _head_and_shoulders,
        "inverse_head_and_shoulders": _mirrored(_head_and_shoulders),
        "double_top": _double_top,
        "double_bottom": _mirrored(_double_top),
        "bull_flag": _bull_flag,
        "ascending_triangle": _ascending_triangle,
        "cup_and_handle": _cup_and_handle,
    }.items()
}
assert set(_TEMPLATE_BUILDERS) == set(PATTERNS), "every contract pattern needs a template"


def pattern_template(pattern: str, length: int, near_miss: bool = False) -> np.ndarray:
    """The canonical (mid-parameter) unit-height shape of ``pattern``: ``[length]`` log-price offsets.

    ``near_miss`` gives the distractor's shape instead. Starts at 0; the last bar is the completion (break) bar. Useful as a matched filter.
    """
    if pattern not in _TEMPLATE_BUILDERS:
        raise KeyError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    if length < 12:
        raise ValueError(f"pattern_template needs length >= 12, got {length}")
    x, y = _TEMPLATE_BUILDERS[pattern](
        np.full((1, _TEMPLATE_PARAMS), 0.5), np.array([(length - 2) / (length - 1)]), near_miss
    )
    return _evaluate_template(x, y, np.arange(length) / (length - 1), np.zeros(length, dtype=np.int64))


def _evaluate_template(x: np.ndarray, y: np.ndarray, u: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Piecewise-linear shapes at normalised times ``u: [P]`` of events ``event: [P]`` with knots ``x, y: [E, K]``.

    Segments are found by comparing each ``u`` with its own event's knots only, so the
    result is bit-identical whatever other events are evaluated alongside it.
    """
    assert x.shape == y.shape and u.shape == event.shape, f"knots {x.shape}/{y.shape}, times {u.shape}/{event.shape}"
    knot_x, knot_y = x[event], y[event]  # [P, K]
    left = np.minimum((u[:, None] >= knot_x[:, 1:-1]).sum(axis=1), x.shape[1] - 2)[:, None]  # [P, 1], 0..K-2
    x0, x1 = np.take_along_axis(knot_x, left, 1)[:, 0], np.take_along_axis(knot_x, left + 1, 1)[:, 0]
    y0, y1 = np.take_along_axis(knot_y, left, 1)[:, 0], np.take_along_axis(knot_y, left + 1, 1)[:, 0]
    return y0 + (y1 - y0) * (u - x0) / (x1 - x0)


# --- return process --------------------------------------------------------------------


def _forward_fill_regimes(switch: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Piecewise-constant regimes: ``values`` taken at each ``switch`` bar, held until the next. Both ``[..., T]``."""
    days = np.arange(switch.shape[-1])
    last_switch = np.maximum.accumulate(np.where(switch, days, 0), axis=-1)
    return np.take_along_axis(values, last_switch, axis=-1)


def _garch_shocks(z: np.ndarray, long_run_var: np.ndarray, alpha: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) shocks and their conditional vol from unit innovations ``z: [N, T]``; ``long_run_var: [N]``."""
    omega = long_run_var * (1.0 - alpha - beta)
    variance = long_run_var.copy()
    shocks = np.empty_like(z)
    vol = np.empty_like(z)
    zt = np.ascontiguousarray(z.T)  # [T, N]: a contiguous row per day for the recursion
    for day in range(z.shape[1]):
        sd = np.sqrt(variance)
        vol[:, day] = sd
        shock = sd * zt[day]
        shocks[:, day] = shock
        variance = omega + alpha * shock * shock + beta * variance
    return shocks, vol


def _market_factor(config: SyntheticMarketConfig) -> tuple[np.ndarray, np.ndarray]:
    """Market log returns and conditional vol, each ``[n_days]``: bull/bear drift regimes + GARCH shocks."""
    rng = np.random.default_rng([config.seed, _MARKET_STREAM])
    n_days = config.n_days
    z = rng.standard_normal((1, n_days))
    shocks, vol = _garch_shocks(z, np.array([config.market_vol**2]), config.garch_alpha, config.garch_beta)
    switch = rng.random(n_days) < config.regime_switch_prob
    switch[0] = True
    # Bull regimes are a little more likely than bear ones, as in equity history.
    bull = rng.random(n_days) < 0.6
    drift = _forward_fill_regimes(switch, np.where(bull, 1.0, -1.2) * config.market_regime_drift)
    return drift + shocks[0], vol[0]


@dataclass
class _ChunkDraws:
    """Per-ticker random draws stacked for a chunk of ``N`` tickers over ``T`` days, ``M`` schedule slots."""

    static: np.ndarray  # [N, 4] standard normals: vol level, beta, start price, volume level
    normal: np.ndarray  # [N, 3, T] float32: return shock, overnight noise, volume noise
    exponential: np.ndarray  # [N, 2, T] float32: high and low excursions beyond open/close
    uniform: np.ndarray  # [N, 4, T] float32: jump happens, jump size and sign, regime switch, regime drift
    slots: np.ndarray  # [N, M, 20] uniforms shaping each schedule slot


def _draw_chunk(config: SyntheticMarketConfig, tickers: range, n_slots: int) -> _ChunkDraws:
    """One generator per ticker, seeded by (seed, ticker): a ticker's draws ignore chunking and n_tickers."""
    n, n_days = len(tickers), config.n_days
    # float32 draws are about twice as fast and plenty precise for shocks and excursions.
    draws = _ChunkDraws(
        static=np.empty((n, 4)),
        normal=np.empty((n, 3, n_days), dtype=np.float32),
        exponential=np.empty((n, 2, n_days), dtype=np.float32),
        uniform=np.empty((n, 4, n_days), dtype=np.float32),
        slots=np.empty((n, n_slots, _SLOT_PARAMS)),
    )
    for row, ticker in enumerate(tickers):
        rng = np.random.default_rng([config.seed, _TICKER_STREAM, ticker])
        rng.standard_normal(out=draws.static[row])
        rng.standard_normal(out=draws.normal[row], dtype=np.float32)
        rng.standard_exponential(out=draws.exponential[row], dtype=np.float32)
        rng.random(out=draws.uniform[row], dtype=np.float32)
        rng.random(out=draws.slots[row])
    return draws


def _schedule(config: SyntheticMarketConfig, slots: np.ndarray) -> dict[str, np.ndarray]:
    """Non-overlapping spans per ticker from slot uniforms ``slots: [N, M, 20]``; returns flat per-span arrays."""
    n_days = config.n_days
    length = config.min_pattern_len + np.floor(slots[..., 0] * (config.max_pattern_len - config.min_pattern_len + 1))
    length = np.minimum(length, config.max_pattern_len).astype(np.int64)  # [N, M]
    spans_per_year = config.patterns_per_ticker_per_year * (1.0 + config.distractor_rate)
    if spans_per_year == 0.0:
        none = np.zeros(0, dtype=np.int64)
        return {
            "ticker": none,
            "start": none,
            "length": none,
            "distractor": none.astype(bool),
            "pattern": none,
            "params": np.zeros((0, _SLOT_PARAMS)),
        }
    mean_length = 0.5 * (config.min_pattern_len + config.max_pattern_len)
    # Idle time between spans so that span + gap + idle averages one year / spans_per_year.
    mean_idle = max(TRADING_DAYS_PER_YEAR / spans_per_year - mean_length - config.min_event_gap, 0.5)
    idle = np.floor(-np.log1p(-slots[..., 1]) * mean_idle).astype(np.int64)
    stride = length + config.min_event_gap
    start = config.warmup_bars + np.cumsum(idle, axis=1) + np.cumsum(stride, axis=1) - stride
    fits = start + length <= n_days
    ticker, slot = np.nonzero(fits)
    chosen = slots[ticker, slot]  # [S, 20]
    distractor_share = config.distractor_rate / (1.0 + config.distractor_rate)
    return {
        "ticker": ticker,
        "start": start[ticker, slot],
        "length": length[ticker, slot],
        "distractor": chosen[:, 2] < distractor_share,
        "pattern": np.minimum((chosen[:, 3] * len(PATTERNS)).astype(np.int64), len(PATTERNS) - 1),
        "params": chosen,
    }


def _plant_spans(
    config: SyntheticMarketConfig,
    spans: dict[str, np.ndarray],
    returns: np.ndarray,
    noise_scale: np.ndarray,
    total_vol: np.ndarray,
) -> None:
    """Add each span's template increments to the returns and variance-match its noise, in place.

    ``returns, noise_scale, total_vol: [N, T]``; ``spans`` from :func:`_schedule`.
    """
    n_spans = len(spans["start"])
    if n_spans == 0:
        return
    n_days = returns.shape[1]
    lengths = spans["length"]
    params = spans["params"]
    last_x = (lengths - 2.0) / (lengths - 1.0)
    event_of_bar = np.repeat(np.arange(n_spans), lengths)
    offset = np.cumsum(lengths) - lengths
    position = np.arange(int(lengths.sum())) - offset[event_of_bar]
    u = position / (lengths[event_of_bar] - 1.0)  # normalised time of every span bar, [sum(lengths)]
    shape = np.empty(len(u))  # unit template value at every span bar
    for pattern_id, pattern in enumerate(PATTERNS):
        for near_miss in (False, True):
            ids = np.nonzero((spans["pattern"] == pattern_id) & (spans["distractor"] == near_miss))[0]
            if len(ids) == 0:
                continue
            x, y = _TEMPLATE_BUILDERS[pattern](params[ids, 8:], last_x[ids], near_miss)
            local_event = np.full(n_spans, -1)
            local_event[ids] = np.arange(len(ids))
            bars = np.nonzero(local_event[event_of_bar] >= 0)[0]
            shape[bars] = _evaluate_template(x, y, u[bars], local_event[event_of_bar[bars]])

    flat_bar = spans["ticker"][event_of_bar] * n_days + spans["start"][event_of_bar] + position
    inside = position > 0  # the first bar's close is the template's zero; increments start after it
    increment = np.diff(shape, prepend=0.0)

    # Height relative to the random walk's own spread over the span sets how visible the pattern is.
    difficulty = config.difficulty
    snr = config.pattern_snr_easy + (config.pattern_snr_hard - config.pattern_snr_easy) * difficulty
    span_vol = np.bincount(event_of_bar, weights=total_vol.ravel()[flat_bar], minlength=n_spans) / lengths
    height = snr * span_vol * np.sqrt(lengths) * _lerp(0.75, 1.35, params[:, 4])
    floor = config.span_noise_easy

    target = flat_bar[inside]
    drift = height[event_of_bar[inside]] * increment[inside]  # template log return of every span bar
    # drift^2 + (scale * vol)^2 = vol^2: the bar is as volatile as outside the span, unless the drift alone is more.
    drift_share = (drift / total_vol.ravel()[target]) ** 2
    scale = np.sqrt(np.clip(1.0 - drift_share, floor**2, 1.0))
    flat_returns = returns.reshape(-1)
    flat_noise = noise_scale.reshape(-1)
    flat_noise[target] = scale
    flat_returns[target] = flat_returns[target] * scale + drift


def _generate_chunk(
    config: SyntheticMarketConfig,
    tickers: range,
    market: np.ndarray,
    market_vol: np.ndarray,
    n_slots: int,
    ohlcv: np.ndarray,
) -> dict[str, np.ndarray]:
    """Fill ``ohlcv: [5, N, T]`` (open, high, low, close, volume) in place; return the chunk's spans.

    ``market, market_vol: [T]`` are the shared factor's log returns and conditional vol.
    Span tickers are global indices.
    """
    expected = (5, len(tickers), config.n_days)
    assert ohlcv.shape == expected, f"ohlcv must be {list(expected)}, got {list(ohlcv.shape)}"
    open_, high, low, close, volume = ohlcv
    draws = _draw_chunk(config, tickers, n_slots)
    n_days = config.n_days
    shock_z, overnight_z, volume_z = draws.normal[:, 0], draws.normal[:, 1], draws.normal[:, 2]
    jump_u, jump_size_u, switch_u, drift_u = (draws.uniform[:, k] for k in range(4))

    ticker_vol = config.idio_vol * np.exp(config.idio_vol_dispersion * draws.static[:, 0])  # [N]
    beta = config.beta_mean + config.beta_sd * draws.static[:, 1]
    idio_shock, idio_vol = _garch_shocks(shock_z, ticker_vol**2, config.garch_alpha, config.garch_beta)
    total_vol = np.sqrt(idio_vol**2 + (beta[:, None] * market_vol[None, :]) ** 2)  # [N, T]

    switch = switch_u < config.regime_switch_prob
    switch[:, 0] = True
    # Uniform drift per regime with sd idio_regime_drift: sqrt(3) * (2u - 1) has unit variance.
    drift = _forward_fill_regimes(switch, config.idio_regime_drift * np.sqrt(3.0) * (2.0 * drift_u - 1.0))
    jump_sign = np.where(jump_size_u < 0.5, -1.0, 1.0)
    jump_scale = _lerp(0.5, 1.5, 2.0 * np.abs(jump_size_u - 0.5))  # the same uniform, folded: sign independent
    jump = np.where(jump_u < config.gap_prob, jump_sign * config.gap_size * total_vol * jump_scale, 0.0)
    returns = drift + beta[:, None] * market[None, :] + idio_shock + jump  # [N, T] close-to-close log returns

    spans = _schedule(config, draws.slots)
    noise_scale = np.ones_like(returns)
    _plant_spans(config, spans, returns, noise_scale, total_vol)

    log_start = np.log(config.start_price_median) + 0.8 * draws.static[:, 2]  # prices from ~$10 to ~$150
    np.exp(log_start[:, None] + np.cumsum(returns, axis=1), out=close)
    previous_close = np.concatenate([np.exp(log_start)[:, None], close[:, :-1]], axis=1)
    # The jump opens the bar; the rest of the gap is small overnight noise. Gaps and ranges ignore the
    # span's shock scale (noise_scale): a quieter gap or range inside spans would mark their boundaries.
    gap = jump + 0.25 * total_vol * overnight_z
    np.multiply(previous_close, np.exp(gap.astype(np.float32)), out=open_)
    # Multipliers >= 1 (<= 1) keep high >= max(open, close) and low <= min(open, close) exactly.
    excursion = (config.intraday_range * total_vol).astype(np.float32)
    one = np.float32(1.0)
    np.multiply(np.maximum(open_, close), np.maximum(np.exp(excursion * draws.exponential[:, 0]), one), out=high)
    np.multiply(np.minimum(open_, close), np.minimum(np.exp(-excursion * draws.exponential[:, 1]), one), out=low)

    # Concave in the standardised move, so a 6-sigma day trades ~7x normal volume, not 30x.
    surprise = np.log1p(np.abs(returns) / total_vol) - _MEAN_LOG1P_ABS_NORMAL
    log_volume = (
        np.log(config.volume_median)
        + 0.8 * draws.static[:, 3, None]  # baselines spread ~5x either way across tickers
        + 0.5 * np.log((total_vol / ticker_vol[:, None]).astype(np.float32))
        + config.volume_return_sensitivity * surprise
        + _ar1(config.volume_noise * volume_z, persistence=0.7)
    )
    completes = ~spans["distractor"]
    if completes.any() and config.breakout_volume_boost > 0:
        # Confirmation volume is itself a tell, so it fades with difficulty too.
        boost = config.breakout_volume_boost * (1.0 - 0.7 * config.difficulty)
        end_bar = spans["ticker"][completes] * n_days + spans["start"][completes] + spans["length"][completes] - 1
        log_volume.reshape(-1)[end_bar] += boost * _lerp(0.7, 1.3, spans["params"][completes, 6])
    volume[:] = np.round(np.exp(log_volume.astype(np.float32)))
    return {**spans, "ticker": spans["ticker"] + tickers.start}


def _ar1(innovation_scale: np.ndarray, persistence: float) -> np.ndarray:
    """Stationary AR(1) along days, ``[N, T] -> [N, T]``, whose marginal sd is the scale of ``innovation_scale``."""
    out = np.empty(innovation_scale.shape, dtype=np.float64)
    level = innovation_scale[:, 0].astype(np.float64)
    innovation = np.sqrt(1.0 - persistence**2) * innovation_scale
    columns = np.ascontiguousarray(innovation.T)  # [T, N]
    out[:, 0] = level
    for day in range(1, out.shape[1]):
        level = persistence * level + columns[day]
        out[:, day] = level
    return out


def _event_frame(
    spans: dict[str, np.ndarray], names: list[str], calendar: np.ndarray, distractor: bool
) -> pl.DataFrame:
    """Planted events (``distractor=False``) or near misses as an ``EVENT_FRAME_COLUMNS`` frame."""
    keep = spans["distractor"] == distractor
    start = spans["start"][keep]
    end = start + spans["length"][keep] - 1
    frame = pl.DataFrame(
        {
            "ticker": pl.Series(names, dtype=pl.String).gather(spans["ticker"][keep]),
            "pattern": pl.Series(PATTERNS, dtype=pl.String).gather(spans["pattern"][keep]),
            "start_date": pl.Series(calendar[start], dtype=pl.Date),
            "end_date": pl.Series(calendar[end], dtype=pl.Date),
            "start_idx": pl.Series(start, dtype=pl.Int64),
            "end_idx": pl.Series(end, dtype=pl.Int64),
        }
    )
    return frame.sort(["ticker", "end_date"])


def generate_market(config: SyntheticMarketConfig) -> SyntheticMarket:
    """Bars for ``config.n_tickers`` x ``config.n_days`` plus planted events and distractors.

    Tickers are generated in chunks of a fixed size into preallocated columns, so
    memory stays near the size of the output frame.
    """
    n_tickers, n_days = config.n_tickers, config.n_days
    calendar = business_days(config.start_date, n_days)
    names = ticker_names(n_tickers)
    market, market_vol = _market_factor(config)
    n_slots = (n_days - config.warmup_bars) // (config.min_pattern_len + config.min_event_gap) + 1

    columns = np.empty((5, n_tickers, n_days))  # open, high, low, close, volume
    chunk_spans: list[dict[str, np.ndarray]] = []
    for first in range(0, n_tickers, _TICKERS_PER_CHUNK):
        tickers = range(first, min(first + _TICKERS_PER_CHUNK, n_tickers))
        chunk_spans.append(
            _generate_chunk(config, tickers, market, market_vol, n_slots, columns[:, tickers.start : tickers.stop])
        )
    spans = {key: np.concatenate([s[key] for s in chunk_spans]) for key in chunk_spans[0]}

    day_numbers = calendar.astype(np.int64).astype(np.int32)  # days since epoch: the pl.Date physical type
    bars = pl.DataFrame(
        {
            "ticker": pl.Series(names, dtype=pl.String).gather(np.repeat(np.arange(n_tickers), n_days)),
            "date": pl.Series(np.tile(day_numbers, n_tickers)).cast(pl.Date),
            **{name: columns[i].reshape(-1) for i, name in enumerate(("open", "high", "low", "close", "volume"))},
        }
    ).select(BAR_COLUMNS)
    return SyntheticMarket(
        bars=bars,
        events=_event_frame(spans, names, calendar, distractor=False),
        distractors=_event_frame(spans, names, calendar, distractor=True),
    )
