"""The sweep's assets, jobs and schedule, partitioned by exactly the sweep file's points, read once from the settings resource."""

import dagster as dg

from screener_ssl.defs.partitions import sweep_partitions
from screener_ssl.defs.probe.assets import build_probe_assets
from screener_ssl.defs.resources import ScreenerSettings, warehouse_resource
from screener_ssl.defs.schedules import build_nightly_followup_sensor, build_nightly_schedule, build_sweep_jobs
from screener_ssl.defs.ssl.assets import build_ssl_assets
from screener_ssl.defs.staleness import build_stale_partitions_sensor, build_staleness_checks
from screener_ssl.defs.sweep_file import build_sweep_file_asset, build_sweep_file_sensor

@dg.definitions
def sweep_definitions() -> dg.Definitions:
    """Partitioned assets, the sweep jobs, the nightly schedule and the sensors for the sweep file the settings name."""
    settings = ScreenerSettings.from_env()
    sweep = settings.load_sweep()
    partitions = sweep_partitions(sweep)
    jobs = build_sweep_jobs(sweep, partitions)
    return dg.Definitions(
        assets=[build_sweep_file_asset(partitions), *build_ssl_assets(partitions), *build_probe_assets(partitions)],
        asset_checks=build_staleness_checks(),
        jobs=jobs,
        schedules=[build_nightly_schedule(sweep, settings.nightly_cron, settings.nightly_variant_list)],
        sensors=[build_nightly_followup_sensor(sweep, jobs), build_sweep_file_sensor(), build_stale_partitions_sensor()],
        resources={"settings": settings, "warehouse": warehouse_resource(settings)},
    )
