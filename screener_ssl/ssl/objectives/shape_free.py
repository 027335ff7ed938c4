"""Baseline ``shape_free``: volume and volatility of the last bars, no path, through the shape_free backbone.

A shape benchmark must keep this near the prevalence: whatever it scores is
volume/volatility detection, not shape (DESIGN.md section 3).
"""

from __future__ import annotations

from screener_ssl.ssl.objectives.base import register_objective
from screener_ssl.ssl.objectives.random_init import RandomInit


@register_objective
class ShapeFree(RandomInit):
    """Magnitudes, range and relative volume of the last bars as the embedding; no weights."""

    name = "shape_free"
    backbone_kind = "shape_free"
    finetunable = False  # no weights
    # Censored decision-bar magnitudes are constant by design; judge degeneracy by effective rank only.
    collapse_rule = "rank_only"
