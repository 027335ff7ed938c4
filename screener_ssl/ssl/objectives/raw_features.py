"""Baseline ``raw_features``: the censored features themselves, through the parameter-free raw_window backbone."""

from __future__ import annotations

from screener_ssl.ssl.objectives.base import register_objective
from screener_ssl.ssl.objectives.random_init import RandomInit


@register_objective
class RawFeatures(RandomInit):
    """The window's own features as the embedding: what a probe gets with no representation learning."""

    name = "raw_features"
    backbone_kind = "raw_window"
    finetunable = False  # no weights
    # Censored decision-bar fields and mask channels are constant by design in the raw window;
    # only the effective rank says whether this baseline is degenerate.
    collapse_rule = "rank_only"
