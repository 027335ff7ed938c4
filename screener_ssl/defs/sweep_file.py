"""The sweep file as an observed source: one data version per partition, the sweep point's fingerprint.

Dagster decides staleness from code versions and the data versions of an asset's direct
inputs, so an edit to the sweep file (a point's steps, its augmentations, the window
settings every point shares) must reach Dagster as a changed input before anything is
re-materialized. ``sweep_file`` is that input: an observable source asset partitioned like
the sweep, whose observation records ``Sweep.point_fingerprint`` per partition. Editing one
point changes its partition's version only; editing the dataset section changes all of them.

Observations come from two places: the sweep job observes ``sweep_file`` in the same run,
before its first step, so every run records the version it ran with; and the
``sweep_file_sensor`` (on by default, a daemon tick) observes the file whenever a point's
fingerprint changed, so the graph marks the edited partitions stale with no run at all.
"""

from __future__ import annotations

import json
import warnings

import dagster as dg

from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl.defs.sensors import running_sensor
from screener_ssl.runs.sweep import Sweep

SWEEP_FILE = dg.AssetKey("sweep_file")
# The tag Dagster reads an observation's data version from.
DATA_VERSION_TAG = "dagster/data_version"


def point_fingerprints(sweep: Sweep) -> dict[str, str]:
    """``objective|variant`` -> the point's fingerprint, for every point of the sweep."""
    return {point.partition_key: sweep.point_fingerprint(o, v) for (o, v), point in sweep.points.items()}


def build_sweep_file_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.observable_source_asset(
        key=SWEEP_FILE,
        group_name="ssl",
        partitions_def=partitions,
        tags={"dagster/kind/yaml": ""},  # what kinds= sets on an asset; observable sources take it as a tag
        description="The sweep file; data version per partition = the sweep point's fingerprint (its settings "
        "and the dataset section). Observed by the sweep job and by sweep_file_sensor.",
    )
    def sweep_file(settings: ScreenerSettings) -> dg.DataVersionsByPartition:
        versions = {key: dg.DataVersion(fp) for key, fp in point_fingerprints(settings.load_sweep()).items()}
        with warnings.catch_warnings():  # the one beta API this asset rests on, warned about on every run
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.DataVersionsByPartition(versions)

    return sweep_file


def build_sweep_file_sensor() -> dg.SensorDefinition:
    @running_sensor(
        "sweep_file_sensor",
        every_seconds=30,
        description="Observes sweep_file when a sweep point's fingerprint changed, so the edited partitions "
        "and their downstream show stale before anything runs.",
    )
    def sweep_file_sensor(context: dg.SensorEvaluationContext, settings: ScreenerSettings) -> dg.SensorResult:
        current = point_fingerprints(settings.load_sweep())
        seen = json.loads(context.cursor) if context.cursor else {}
        changed = {key: fp for key, fp in current.items() if seen.get(key) != fp}
        if changed:
            context.log.info(f"sweep points changed: {sorted(changed)}")
        return dg.SensorResult(
            asset_events=[
                dg.AssetObservation(asset_key=SWEEP_FILE, partition=key, tags={DATA_VERSION_TAG: fp})
                for key, fp in changed.items()
            ],
            cursor=json.dumps(current, sort_keys=True),
        )

    return sweep_file_sensor
