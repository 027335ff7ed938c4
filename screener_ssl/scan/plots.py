"""Small charts of alerted tickers' recent bars, for the market scan's metadata."""

from __future__ import annotations

import math

import polars as pl
from matplotlib.figure import Figure

from screener_ssl.probe.plots import _png


def recent_bars_png(bars: pl.DataFrame, alerts: pl.DataFrame, n_bars: int = 60, max_panels: int = 12) -> bytes:
    """A grid of close-price lines with high/low bands, one panel per alerted (ticker, pattern).

    ``bars``: BAR_COLUMNS rows up to the scan date; ``alerts``: ticker, pattern, score (best first).
    """
    rows = alerts.head(max_panels).iter_rows(named=True)
    panels = list(rows)
    n = max(len(panels), 1)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 2.6 * nrows))
    for i, alert in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        recent = bars.filter(pl.col("ticker") == alert["ticker"]).sort("date").tail(n_bars)
        x = list(range(recent.height))
        ax.fill_between(x, recent["low"].to_list(), recent["high"].to_list(), alpha=0.25, color="tab:blue", lw=0)
        ax.plot(x, recent["close"].to_list(), color="tab:blue", lw=1.2)
        ax.set_title(f"{alert['ticker']} — {alert['pattern']} ({alert['score']:.2f})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xticks([0, max(recent.height - 1, 0)])
        if recent.height:
            ax.set_xticklabels([str(recent["date"][0]), str(recent["date"][-1])])
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no alerts", ha="center", va="center")
        ax.set_axis_off()
    fig.tight_layout()
    return _png(fig, None)
