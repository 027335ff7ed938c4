"""Column contracts shared by every layer: bars, label events, shape features, patterns."""

from __future__ import annotations

BAR_COLUMNS: tuple[str, ...] = ("ticker", "date", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
EVENT_COLUMNS: tuple[str, ...] = ("ticker", "pattern", "start_date", "end_date")

# Chart patterns the synthetic market plants (ground truth) and the probe scores.
PATTERNS: tuple[str, ...] = (
    "head_and_shoulders",
    "inverse_head_and_shoulders",
    "double_top",
    "double_bottom",
    "bull_flag",
    "ascending_triangle",
    "cup_and_handle",
)

# Per-bar shape features, all scale-free and computable from bars <= t.
# On the decision bar only the gap (open vs previous close) is known.
FEATURE_NAMES: tuple[str, ...] = (
    "log_return",  # log(close_t / close_{t-1})
    "gap",  # log(open_t / close_{t-1})
    "log_high_open",  # log(high_t / open_t)
    "log_low_open",  # log(low_t / open_t)
    "log_close_open",  # log(close_t / open_t)
    "rel_log_volume",  # log1p(volume_t) - mean(log1p(volume) over the trailing bars t-L..t-1)
)
# Features still known at the decision bar's open.
OPEN_KNOWN_FEATURES: tuple[str, ...] = ("gap",)

SPLITS: tuple[str, ...] = ("train", "val", "test")
