"""The process environment: the one module that reads or sets environment variables.

Everything else receives what it needs from here, by name: the settings resource
(``defs/resources.py``) builds the project's configuration from :func:`project_variables`,
the command line, the demo and the instance find the Dagster instance with
:func:`dagster_home`, a run records :func:`thread_variables` in its metadata, and training
pins the numeric libraries' thread pools with :func:`default_thread_counts`.
``screener_ssl_tests/test_layers.py`` fails on an environment read anywhere else in the package.
"""

from __future__ import annotations

import os
from pathlib import Path

from screener_ssl.store.artifacts import DUCKDB_THREADS_ENV

PROJECT_PREFIX = "SCREENER_SSL_"
DAGSTER_HOME = "DAGSTER_HOME"
# The thread settings a run records (store.artifacts.thread_env reads exactly these).
RECORDED_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", DUCKDB_THREADS_ENV)
# The thread pools a worker process sizes before torch (and numba) start.
WORKER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def project_variables() -> dict[str, str]:
    """Every ``SCREENER_SSL_*`` variable of this process (the settings resource reads its configuration from these)."""
    return {name: value for name, value in os.environ.items() if name.startswith(PROJECT_PREFIX)}


def thread_variables() -> dict[str, str]:
    """The thread settings of this process that a run records (those set)."""
    return {name: os.environ[name] for name in RECORDED_THREAD_VARIABLES if name in os.environ}


def default_thread_counts(threads: int) -> None:
    """OMP and MKL thread pools of ``threads`` unless the environment already sizes them."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))


def set_worker_thread_counts(threads: int) -> None:
    """Size every numeric thread pool of this process (call before torch is imported: its pools read these at start)."""
    for name in WORKER_THREAD_VARIABLES:
        os.environ[name] = str(threads)


def dagster_home(default: str | Path | None = None) -> str:
    """``$DAGSTER_HOME``; when it is unset, ``default`` becomes it (without a default, unset is a KeyError)."""
    if default is not None:
        os.environ.setdefault(DAGSTER_HOME, str(default))
    return os.environ[DAGSTER_HOME]
