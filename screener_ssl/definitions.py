"""The one Definitions object: data assets, partitioned SSL assets, resources."""

from __future__ import annotations

import dagster as dg

from screener_ssl.defs.data.assets import ohlcv_bars, pattern_labels, shape_features, windowed_dataset
from screener_ssl.defs.partitions import sweep_partitions
from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl.defs.ssl.assets import build_ssl_assets


def build_definitions(settings: ScreenerSettings) -> dg.Definitions:
    sweep = settings.load_sweep()
    partitions = sweep_partitions(sweep)
    return dg.Definitions(
        assets=[ohlcv_bars, shape_features, windowed_dataset, pattern_labels, *build_ssl_assets(sweep, partitions)],
        resources={"settings": settings},
    )


defs = build_definitions(ScreenerSettings.from_env())
