"""The shipped PostgreSQL instance (deploy/postgres/dagster.yaml) against a real server on loopback."""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg
import pytest
import yaml

from screener_ssl.instance import open_instance
from screener_ssl.run_launcher import POOLS
from screener_ssl_tests.defs.project import load_defs
from screener_ssl_tests.defs.servers import REPO, postgres_url  # noqa: F401  (fixture)

PG_CONFIG = REPO / "deploy" / "postgres" / "dagster.yaml"
DATA_ASSETS = ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]
PARTITION_ASSETS = ["ssl_schema", "pretrained_encoder", "probe_metrics"]


def test_postgres_config_keeps_every_setting_of_the_default_instance():
    default = yaml.safe_load((REPO / "dagster.yaml").read_text())
    shipped = yaml.safe_load(PG_CONFIG.read_text())
    assert shipped["storage"] == {"postgres": {"postgres_url": {"env": "SCREENER_SSL_PG_URL"}}}
    for key, value in default.items():
        assert shipped.get(key) == value, f"deploy/postgres/dagster.yaml: {key!r} differs from dagster.yaml"
    assert shipped["run_monitoring"]["enabled"] and shipped["concurrency"]["pools"]["default_limit"] == 1


@pytest.fixture
def pg_home(postgres_url, tiny_env, monkeypatch) -> Path:  # noqa: F811
    home = Path(tiny_env["DAGSTER_HOME"])
    shutil.copy(PG_CONFIG, home / "dagster.yaml")
    # SQLAlchemy's bare postgresql:// means psycopg 3; dagster-postgres ships psycopg2.
    monkeypatch.setenv("SCREENER_SSL_PG_URL", postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    return home


def _materialize(defs, instance, selection, partition=None):
    result = dg.materialize(list(defs.assets), selection=selection, partition_key=partition, instance=instance,
                            resources=defs.resources)
    assert result.success
    return result.run_id


def train_partition(home: str, partition: str, barrier) -> str:
    """One run materializing pretrained_encoder for ``partition`` (in a child process); returns its run id."""
    defs = load_defs()
    with dg.DagsterInstance.from_config(home) as instance:
        barrier.wait(timeout=300)  # both runs start together, whatever each child's import time
        return _materialize(defs, instance, ["pretrained_encoder"], partition)


def test_data_assets_and_a_partition_materialize_through_postgres(pg_home, postgres_url):  # noqa: F811
    import psycopg2

    defs = load_defs()
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        storages = {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                               instance.schedule_storage)}
        assert storages == {"PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
        run_ids = [_materialize(defs, instance, DATA_ASSETS),
                   _materialize(defs, instance, PARTITION_ASSETS, "masked_recon|base")]
    # What the runs recorded is in the server, for any other process to read.
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,))
        assert dict(cur.fetchall()) == {run_id: "SUCCESS" for run_id in run_ids}
    with dg.DagsterInstance.from_config(str(pg_home)) as reader:
        assert reader.get_materialized_partitions(dg.AssetKey("pretrained_encoder")) == {"masked_recon|base"}
        assert reader.get_latest_materialization_event(dg.AssetKey("windowed_dataset")) is not None


def test_open_instance_creates_each_pool_at_its_limit(pg_home):
    with open_instance(pg_home, log=lambda _m: None) as instance:
        for pool in POOLS:
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert (info.limit, info.slot_count) == (1, 1), (pool, info)


def test_two_runs_in_the_torch_pool_queue_rather_than_overlap(pg_home):
    defs = load_defs()
    # Opened as the command line and the demo open it: the pools' slots exist before any run claims
    # one (two first claims at once on a fresh instance could each create a slot).
    with open_instance(pg_home, log=lambda _m: None) as instance:
        _materialize(defs, instance, DATA_ASSETS + ["ssl_schema"], "masked_recon|base")
        _materialize(defs, instance, ["ssl_schema"], "vicreg|base")
    partitions = ("masked_recon|base", "vicreg|base")
    # Two processes, as two launched runs would be; both start before either has trained.
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
        barrier = manager.Barrier(2)
        runs = pool.map(train_partition, [str(pg_home)] * 2, partitions, [barrier] * 2, timeout=400)
        run_ids = dict(zip(partitions, runs))
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        spans, blocked, run_starts = {}, {}, {}
        for partition, run_id in run_ids.items():
            records = instance.all_logs(run_id)
            run_starts[partition] = next(r.timestamp for r in records if r.dagster_event and
                                         r.dagster_event.event_type == dg.DagsterEventType.RUN_START)
            step = [r.timestamp for r in records if r.dagster_event and r.dagster_event.step_key == "pretrained_encoder"
                    and r.dagster_event.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS)]
            spans[partition] = (min(step), max(step))
            blocked[partition] = any("blocked by limit for pool torch" in (r.message or "") for r in records)
        limit = instance.event_log_storage.get_concurrency_info("torch").slot_count
    assert limit == 1
    first, second = sorted(spans, key=lambda p: spans[p][0])
    # The second run had started while the first trained, waited for the torch slot, and trained after it.
    assert run_starts[second] < spans[first][1], "the runs did not overlap in time: nothing was queued"
    assert spans[second][0] >= spans[first][1], f"torch steps overlapped: {spans}"
    assert blocked[second] and not blocked[first]
