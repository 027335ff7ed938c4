"""The one Definitions object: data assets, partitioned SSL and probe assets, jobs, schedule, resources."""

import os

import dagster as dg

from screener_ssl.defs.data.assets import ohlcv_bars, pattern_labels, shape_features, windowed_dataset
from screener_ssl.defs.execution import executor_from_env
from screener_ssl.defs.partitions import sweep_partitions
from screener_ssl.defs.probe.assets import build_probe_assets
from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl.defs.scan.assets import build_scan_assets
from screener_ssl.defs.schedules import build_nightly_schedule, build_sweep_jobs
from screener_ssl.defs.ssl.assets import build_ssl_assets

NIGHTLY_CRON = "0 2 * * *"


def build_definitions(
    settings: ScreenerSettings, nightly_cron: str = NIGHTLY_CRON, nightly_variants: list[str] | None = None,
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    sweep = settings.load_sweep()
    partitions = sweep_partitions(sweep)
    ssl_schema, pretrained_encoder = build_ssl_assets(sweep, partitions)
    probe_assets = build_probe_assets(partitions, pretrained_encoder)
    scan_assets = build_scan_assets(probe_assets[-1])
    sweep_job, index_job = build_sweep_jobs(partitions)
    return dg.Definitions(
        assets=[ohlcv_bars, shape_features, windowed_dataset, pattern_labels, ssl_schema, pretrained_encoder, *probe_assets,
                *scan_assets],
        jobs=[sweep_job, index_job],
        schedules=[build_nightly_schedule(sweep, nightly_cron, nightly_variants)],
        resources={"settings": settings},
        executor=executor,
    )


defs = build_definitions(
    ScreenerSettings.from_env(),
    nightly_cron=os.environ.get("SCREENER_SSL_NIGHTLY_CRON", NIGHTLY_CRON),
    nightly_variants=[v for v in os.environ.get("SCREENER_SSL_NIGHTLY_VARIANTS", "full").split(",") if v] or None,
    executor=executor_from_env(),
)
