"""The Dagster instance the command line and the demo run in: initialized once, pools checked.

A fresh SQLite instance creates its databases (and stamps their schema version) the first
time a process opens them; two first runs started at once can both do it and leave the
instance with two schema heads, after which every command fails. :func:`open_instance`
therefore opens the instance under an exclusive file lock in ``DAGSTER_HOME`` and touches every
storage before it returns, so storage exists before any run is launched. Under the same lock it
creates the slots of the project's pools (:func:`initialize_pools`): Dagster creates a pool's
slots the first time a step claims one, in the claiming run's own transaction, so two runs whose
first claims on a fresh instance meet can each add a slot to a pool of limit 1 and run their
steps side by side. It then frees the pool slots of runs that ended or were killed, and reports
those of runs that may be alive (:func:`screener_ssl.run_launcher.release_dead_runs_slots`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg

from screener_ssl.run_launcher import initialize_pools, instance_lock, release_dead_runs_slots
from screener_ssl.store.environment import dagster_home


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
    """The instance at ``home`` (default ``$DAGSTER_HOME``), its storage and pools initialized, dead runs' slots freed."""
    home = Path(home or dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    with instance_lock(home):  # one process at a time creates the storage and the pools' slots
        instance = dg.DagsterInstance.from_config(str(home))
        initialize_storage(instance)
        initialize_pools(instance)
    release_dead_runs_slots(instance, log)
    return instance
