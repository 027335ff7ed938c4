"""How the frozen-encoder probe samples, fits and scores (:class:`ProbeConfig`), validated once.

The sweep file's ``probe`` block of every point is one; the probe records it verbatim in
``probe_metrics.json``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from screener_ssl.probe.bootstrap import BLOCK_DAYS
from screener_ssl.probe.metrics import PREFIX_FRACS
from screener_ssl.ssl.encoder import Pooling


class ProbeConfig(BaseModel):
    """How the probe samples, fits and scores; recorded verbatim in ``probe_metrics.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    head: Literal["logistic", "mlp"] = "logistic"
    # Inverse L2 strengths of the logistic head; each pattern keeps the one of best val AUPRC.
    C_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    class_weight: Literal["none", "balanced"] = "none"
    mlp_hidden: int = Field(64, ge=1, le=4096)
    max_train_windows: int = Field(40_000, ge=10)
    # A wide embedding needs more rows than a narrow one: train windows >= this x D (when available).
    train_windows_per_dim: int = Field(20, ge=0, le=10_000)
    # Memory budget of the train feature matrix (windows x D float32): no rule lifts the train count past it.
    train_matrix_budget_gib: float = Field(2.0, gt=0.0, le=1024.0)
    max_val_windows: int = Field(40_000, ge=10)
    max_test_windows: int | None = Field(None, ge=1)  # None = every test window
    target_precision: float = Field(0.8, gt=0.0, le=1.0)
    # Earliest detection is recall at this alert volume (threshold chosen on val), the same for every model.
    alert_budget_per_1000: float = Field(5.0, gt=0.0, le=1000.0)  # alerts per 1,000 ticker-days, per pattern
    n_boot: int = Field(200, ge=0, le=100_000)
    # Resampling of the CIs: whole tickers x contiguous calendar blocks (overlapping windows are not independent).
    bootstrap: Literal["ticker_time_block", "window"] = "ticker_time_block"
    block_days: int = Field(BLOCK_DAYS, ge=1, le=2520)
    stability_windows: int = Field(256, ge=0)  # 0 = no stability measurement
    stability_augs: int = Field(8, ge=2, le=256)
    prefix_fracs: tuple[float, ...] = PREFIX_FRACS
    batch_size: int = Field(1024, ge=1, le=65_536)
    # Embedding at the decision bar ("last") or a running max/mean over every visible bar up to it.
    pooling: Pooling = "last"
    seed: int = Field(0, ge=0)
    # Label budgets (numbers of labelled train tickers) at which every head is also fitted, each with
    # ``label_draws`` seeded draws of the labelled tickers (see screener_ssl.data.label_budget);
    # full labels are always reported. ``label_seed`` seeds the draws, the same for every model.
    label_budgets: tuple[int, ...] = ()
    label_draws: int = Field(3, ge=1, le=100)
    label_seed: int = Field(0, ge=0)

    @field_validator("C_grid")
    @classmethod
    def _check_grid(cls, grid: tuple[float, ...]) -> tuple[float, ...]:
        if not grid or any(not c > 0 for c in grid):
            raise ValueError(f"C_grid must be non-empty positive values, found {list(grid)}")
        return tuple(sorted(set(grid)))

    @field_validator("label_budgets")
    @classmethod
    def _check_budgets(cls, budgets: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in budgets) or list(budgets) != sorted(set(budgets)):
            raise ValueError(
                f"label_budgets must be distinct, ascending numbers of labelled train tickers (>= 1), found {list(budgets)}"
            )
        return budgets

    @field_validator("prefix_fracs")
    @classmethod
    def _check_fracs(cls, fracs: tuple[float, ...]) -> tuple[float, ...]:
        if not fracs or any(not 0.0 < f <= 1.0 for f in fracs) or list(fracs) != sorted(set(fracs)):
            raise ValueError(f"prefix_fracs must be distinct, ascending values in (0, 1], found {list(fracs)}")
        return fracs
