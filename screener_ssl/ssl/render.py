"""Candlestick rasterization of gathered windows, batched and vectorized (no plotting library).

A window ``x, observed: [B, T, C]`` of censored, per-window z-scored shape features
(decision bar last) becomes an image ``[B, 2, H_price + H_volume, T]``, one column
per bar, the decision bar in the rightmost column:

- channel 0: candles in the price panel (wick 0.5, body 1.0) and volume bars in the
  volume panel below it (1.0);
- channel 1: body direction in the price panel (+1 up bar, -1 down bar).

The chart is drawn from the features the encoder sees, so the teacher and the 1D
student read the same information (and the teacher can be probed on the same
gathered windows). Levels, in units of each channel's own per-window std:

- close path ``P_t = sum_{u <= t} z_ret_u`` over observed returns (a detrended price path:
  the window's mean return is removed by the z-score);
- open ``O_t = P_t - body_scale * z_co_t``; upper wick ``wick_scale * (z_hi_t - min z_hi)``
  above the body, lower wick ``wick_scale * (max z_lo - z_lo_t)`` below it (the shift by
  the window's extreme makes both non-negative, as ``log(high/open)`` and ``-log(low/open)``
  are; min and max run over the window's observed bars only);
- an open-only bar (the decision bar: only the gap observed) is one pixel at
  ``P_{t-1} + gap_scale * z_gap_t``; an unobserved bar (padding) is an empty column.

Causality: every pixel is a function of observed cells, which are bars <= t* with the
decision bar open-only; the vertical range is that of the drawn bars. Bars after t* never
reach a gathered window, and censored fields are never read (property test:
``screener_ssl_tests/ssl/test_render.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from screener_ssl.data.contracts import FEATURE_NAMES

# Feature roles the renderer reads, by contract name.
RENDER_FEATURES = {
    "return": "log_return",
    "gap": "gap",
    "high": "log_high_open",
    "low": "log_low_open",
    "body": "log_close_open",
    "volume": "rel_log_volume",
}
WICK_VALUE = 0.5
BODY_VALUE = 1.0


class RenderConfig(BaseModel):
    """Image geometry and the relative scales of the candle parts; recorded in the objective config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_rows: int = Field(32, ge=8, le=256)
    volume_rows: int = Field(8, ge=0, le=64)
    body_scale: float = Field(1.0, gt=0.0, le=10.0)
    wick_scale: float = Field(0.5, gt=0.0, le=10.0)
    gap_scale: float = Field(0.25, gt=0.0, le=10.0)

    @property
    def height(self) -> int:
        return self.price_rows + self.volume_rows


def feature_positions(feature_names: Sequence[str] = FEATURE_NAMES) -> dict[str, int]:
    """Column of each role in ``feature_names``; names the missing feature when one is absent."""
    names = list(feature_names)
    missing = [f for f in RENDER_FEATURES.values() if f not in names]
    if missing:
        raise ValueError(
            f"chart rendering needs the shape features {sorted(RENDER_FEATURES.values())}; "
            f"{missing} are missing from the window's features {names}"
        )
    return {role: names.index(feature) for role, feature in RENDER_FEATURES.items()}


def _masked_extreme(values: torch.Tensor, mask: torch.Tensor, largest: bool) -> torch.Tensor:
    """Per-window max (or min) of ``values [B, T]`` over ``mask [B, T]``; 0 where nothing is masked in."""
    fill = torch.finfo(values.dtype).min if largest else torch.finfo(values.dtype).max
    filled = torch.where(mask, values, torch.full_like(values, fill))
    extreme = filled.amax(dim=1) if largest else filled.amin(dim=1)
    return torch.where(mask.any(dim=1), extreme, torch.zeros_like(extreme))


def candle_levels(
    x: torch.Tensor, observed: torch.Tensor, positions: dict[str, int], config: RenderConfig
) -> dict[str, torch.Tensor]:
    """Open/close/high/low levels ``[B, T]`` and the bar kinds (full, open-only, drawn) of each column."""
    assert x.shape == observed.shape and x.dim() == 3, f"x {tuple(x.shape)} / observed {tuple(observed.shape)}"
    x = torch.where(observed, x, torch.zeros_like(x)).float()

    def channel(role: str) -> tuple[torch.Tensor, torch.Tensor]:
        c = positions[role]
        return x[..., c], observed[..., c]

    ret, ret_obs = channel("return")
    gap, gap_obs = channel("gap")
    high, high_obs = channel("high")
    low, low_obs = channel("low")
    body, body_obs = channel("body")
    close = torch.cumsum(torch.where(ret_obs, ret, torch.zeros_like(ret)), dim=1)  # [B, T]
    prev_close = close - torch.where(ret_obs, ret, torch.zeros_like(ret))
    full = body_obs | ret_obs  # the bar's close is known
    open_only = gap_obs & ~full
    open_ = torch.where(full, close - config.body_scale * torch.where(body_obs, body, torch.zeros_like(body)), close)
    open_ = torch.where(open_only, prev_close + config.gap_scale * gap, open_)
    upper = config.wick_scale * (high - _masked_extreme(high, high_obs & full, largest=False)[:, None])
    lower = config.wick_scale * (_masked_extreme(low, low_obs & full, largest=True)[:, None] - low)
    body_top = torch.maximum(open_, close)
    body_bottom = torch.minimum(open_, close)
    top = body_top + torch.where(high_obs & full, upper.clamp_min(0.0), torch.zeros_like(upper))
    bottom = body_bottom - torch.where(low_obs & full, lower.clamp_min(0.0), torch.zeros_like(lower))
    top = torch.where(open_only, open_, top)
    bottom = torch.where(open_only, open_, bottom)
    return {
        "open": open_,
        "close": close,
        "top": top,
        "bottom": bottom,
        "body_top": torch.where(open_only, open_, body_top),
        "body_bottom": torch.where(open_only, open_, body_bottom),
        "full": full,
        "open_only": open_only,
        "drawn": full | open_only,
    }


def render_candles(
    x: torch.Tensor,
    observed: torch.Tensor,
    config: RenderConfig | None = None,
    feature_names: Sequence[str] = FEATURE_NAMES,
) -> torch.Tensor:
    """Censored, normalized windows ``x, observed [B, T, C]`` -> images ``float32 [B, 2, H, T]``.

    Vectorized over the batch: each column's pixel rows are compared against the bar's
    rasterized levels in one broadcast ``[B, H, T]`` comparison.
    """
    config = config or RenderConfig()
    positions = feature_positions(feature_names)
    assert x.shape[-1] == len(feature_names), (
        f"render_candles: windows have {x.shape[-1]} channels, feature_names lists {len(feature_names)}"
    )
    levels = candle_levels(x, observed, positions, config)
    drawn = levels["drawn"]  # [B, T]
    batch, length = drawn.shape
    rows = config.price_rows

    # Vertical range: the drawn bars' extremes (a flat window gets a unit range around its level).
    hi = _masked_extreme(levels["top"], drawn, largest=True)[:, None]  # [B, 1]
    lo = _masked_extreme(levels["bottom"], drawn, largest=False)[:, None]
    span = (hi - lo).clamp_min(1e-3)

    def to_row(level: torch.Tensor) -> torch.Tensor:
        # Row 0 is the top of the price panel.
        return torch.round((rows - 1) * (hi - level) / span).clamp(0, rows - 1)

    r = torch.arange(rows, dtype=torch.float32, device=x.device).view(1, rows, 1)  # [1, H, 1]
    top, bottom = to_row(levels["top"]).unsqueeze(1), to_row(levels["bottom"]).unsqueeze(1)  # [B, 1, T]
    body_top, body_bottom = to_row(levels["body_top"]).unsqueeze(1), to_row(levels["body_bottom"]).unsqueeze(1)
    drawn_col = drawn.unsqueeze(1)  # [B, 1, T]
    wick = (r >= top) & (r <= bottom) & drawn_col  # [B, H, T]
    body = (r >= body_top) & (r <= body_bottom) & drawn_col
    candles = torch.where(body, BODY_VALUE, torch.where(wick, WICK_VALUE, 0.0))
    up = (levels["close"] >= levels["open"]) & levels["full"]
    direction = torch.where(up, 1.0, -1.0).unsqueeze(1) * (body & levels["full"].unsqueeze(1))

    image = torch.zeros(batch, 2, config.height, length, dtype=torch.float32, device=x.device)
    image[:, 0, :rows] = candles
    image[:, 1, :rows] = direction
    if config.volume_rows > 0:
        c = positions["volume"]
        volume, volume_obs = x[..., c].float(), observed[..., c]
        v_lo = _masked_extreme(volume, volume_obs, largest=False)[:, None]
        v_hi = _masked_extreme(volume, volume_obs, largest=True)[:, None]
        # Bar height in [1, volume_rows] for every observed volume; the quietest bar still shows.
        height = 1 + torch.round((config.volume_rows - 1) * (volume - v_lo) / (v_hi - v_lo).clamp_min(1e-3))
        height = torch.where(volume_obs, height, torch.zeros_like(height)).unsqueeze(1)  # [B, 1, T]
        vr = torch.arange(config.volume_rows, 0, -1, dtype=torch.float32, device=x.device).view(1, -1, 1)  # bottom row = 1
        image[:, 0, rows:] = (vr <= height).float()
    return image
