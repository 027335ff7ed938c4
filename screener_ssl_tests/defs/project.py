"""The project's definitions as ``dagster`` and ``dg`` load them: the defs folder, configured by the settings' variables.

Tests configure the graph the way a user does, through the environment the settings resource
reads (``ScreenerSettings.from_env``): :func:`load_defs` loads the defs folder with some settings
given for the load, and :func:`settings_environment` sets them for a block.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import dagster as dg

REPO = Path(__file__).resolve().parents[2]
# The variable of each setting a test may give (ScreenerSettings' fields and the executor).
SETTING_VARIABLES = {
    "data_dir": "SCREENER_SSL_DATA_DIR",
    "bars": "SCREENER_SSL_BARS",
    "labels": "SCREENER_SSL_LABELS",
    "sweep": "SCREENER_SSL_SWEEP",
    "nightly_cron": "SCREENER_SSL_NIGHTLY_CRON",
    "nightly_variants": "SCREENER_SSL_NIGHTLY_VARIANTS",
    "executor": "SCREENER_SSL_EXECUTOR",
}


def _value(setting: str, value) -> str:
    if setting == "nightly_variants":  # a list of variants, or None for every variant
        return ",".join(value or [])
    return str(value)


@contextmanager
def settings_environment(**settings) -> Iterator[None]:
    """The settings given (by field name) set in the process environment for the block, then as before."""
    unknown = set(settings) - set(SETTING_VARIABLES)
    assert not unknown, f"no setting {sorted(unknown)}; known: {sorted(SETTING_VARIABLES)}"
    with mock.patch.dict(os.environ, {SETTING_VARIABLES[k]: _value(k, v) for k, v in settings.items()}):
        yield


def load_defs(**settings) -> dg.Definitions:
    """``dg.load_from_defs_folder`` as ``screener_ssl/definitions.py`` calls it, with ``settings`` set for the load."""
    with settings_environment(**settings):
        return dg.load_from_defs_folder(project_root=REPO)
