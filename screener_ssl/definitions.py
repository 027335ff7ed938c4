"""The one Definitions object, loaded from the ``defs`` folder (the ``dg`` layout).

Top-level assets live in ``defs/data``, ``defs/probe`` and ``defs/scan``; the sweep's
objective x variant assets, jobs, schedule and the settings resource come from
``defs/sweep_partitions.py``, which reads the settings (and so the sweep) once.
"""

from pathlib import Path

import dagster as dg

from screener_ssl.defs.data import assets as data_assets
from screener_ssl.defs.probe import assets as probe_assets
from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl.defs.scan import assets as scan_assets
from screener_ssl.defs.resources import NIGHTLY_CRON
from screener_ssl.defs.sweep_partitions import build_sweep_definitions

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def build_definitions(
    settings: ScreenerSettings, nightly_cron: str = NIGHTLY_CRON, nightly_variants: list[str] | None = None,
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    """The same graph as :data:`defs` for explicit settings (tests, scripts); ``executor`` as in defs/execution.py."""
    return dg.Definitions.merge(
        dg.Definitions(assets=dg.load_assets_from_modules([data_assets, probe_assets, scan_assets])),
        build_sweep_definitions(
            settings.model_copy(update={"nightly_cron": nightly_cron, "nightly_variants": ",".join(nightly_variants or [])})
        ),
        dg.Definitions(executor=executor),
    )


defs = dg.load_from_defs_folder(project_root=PROJECT_ROOT)
