"""The project's sensors run from the start at a fixed interval: one decorator declares that for each."""

from __future__ import annotations

import dagster as dg


def running_sensor(name: str, every_seconds: int, description: str, jobs: list | None = None):
    """``dg.sensor`` named ``name``, evaluated at most every ``every_seconds``, running by default (``jobs``: those it may launch)."""
    return dg.sensor(
        name=name,
        jobs=jobs,
        minimum_interval_seconds=every_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
