"""The Dagster instance the command line and the demo run in: initialized once, pools checked.

A fresh SQLite instance creates its databases (and stamps their schema version) the first
time a process opens them; two first runs started at once can both do it and leave the
instance with two schema heads, after which every command fails. :func:`open_instance`
therefore opens the instance under an exclusive file lock in ``DAGSTER_HOME`` and touches every
storage before it returns, so storage exists before any run is launched. It then frees the
pool slots of runs that ended or were killed, and reports those of runs that may be alive
(:func:`screener_ssl.run_launcher.release_dead_runs_slots`).
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from screener_ssl.run_launcher import release_dead_runs_slots
from screener_ssl.store.environment import dagster_home

INIT_LOCK = ".screener_ssl-instance.lock"


def initialize_storage(instance: dg.DagsterInstance) -> None:
    """Create (or migrate-check) the run, event-log and schedule storage by using each once."""
    instance.get_runs(limit=1)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.get_concurrency_keys()
    storage.get_asset_records([])
    if instance.schedule_storage is not None:
        instance.all_instigator_state()


def open_instance(home: str | Path | None = None, log: Callable[[str], None] = print) -> dg.DagsterInstance:
    """The instance at ``home`` (default ``$DAGSTER_HOME``), its storage initialized, dead runs' pool slots freed."""
    home = Path(home or dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / INIT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process at a time creates the storage
        try:
            instance = dg.DagsterInstance.from_config(str(home))
            initialize_storage(instance)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    release_dead_runs_slots(instance, log)
    return instance
