"""Label source ``synthetic``: the synthetic market's ground truth, written beside its bars."""

from __future__ import annotations

import polars as pl

from screener_ssl.data.contracts import PATTERNS
from screener_ssl.data.label_sources.base import LabelEvents, LabelInputs, register_label_source


@register_label_source("synthetic", reads="bars/source_events.parquet: the synthetic market's ground truth")
def synthetic_labels(inputs: LabelInputs) -> LabelEvents:
    path = inputs.bars_dir / "source_events.parquet"
    if not path.exists():
        raise ValueError(
            "labels source 'synthetic' needs the synthetic market's ground truth, but the bars came "
            "from a file; use the labels source 'talib' or a label file"
        )
    return LabelEvents(pl.read_parquet(path), PATTERNS, "synthetic ground truth")
