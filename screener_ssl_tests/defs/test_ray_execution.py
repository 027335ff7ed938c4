"""Sweep partitions as Ray jobs (dagster-ray) on a local head: same artifacts as the local path, retried after a kill."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg
import pytest
import torch

from screener_ssl.defs.execution import RaySettings, StepResources, executor_from_env
from screener_ssl_tests.defs.project import load_defs
from screener_ssl_tests.defs.conftest import TINY_SWEEP
from screener_ssl_tests.defs.servers import REPO, RayHead, postgres_url  # noqa: F401  (fixture)

DATA_ASSETS = ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]
TRAIN_ASSETS = [dg.AssetKey("ssl_schema"), dg.AssetKey("pretrained_encoder")]
PARTITIONS = ("masked_recon|base", "vicreg|base")
# Long enough to be killed between two checkpoints.
KILL_SWEEP = TINY_SWEEP.replace("variants: {base: {}, full: {train: {steps: 8}}}",
                                "variants: {base: {}, full: {train: {steps: 150, checkpoint_every: 10}}}")


def ray_sweep_job() -> dg.JobDefinition:
    """The project's sweep job, built from the environment like definitions.py (every Ray step rebuilds it)."""
    return load_defs().resolve_job_def(
        "sweep_partition_job"
    )


def test_executor_choice_and_step_resources_come_from_configuration():
    assert executor_from_env({}) is None
    with pytest.raises(ValueError, match="SCREENER_SSL_RAY_ADDRESS"):
        executor_from_env({"SCREENER_SSL_EXECUTOR": "ray"})
    with pytest.raises(ValueError, match="expected one of"):
        executor_from_env({"SCREENER_SSL_EXECUTOR": "dask"})
    settings = RaySettings.from_env({"SCREENER_SSL_RAY_ADDRESS": "http://head:8265", "SCREENER_SSL_RAY_NUM_CPUS": "0.5",
                                     "SCREENER_SSL_RAY_TORCH_NUM_CPUS": "4", "SCREENER_SSL_RAY_TORCH_NUM_GPUS": "1"})
    assert settings.num_cpus == 0.5 and settings.pool_resources["torch"] == StepResources(num_cpus=4, num_gpus=1)
    assert "SCREENER_SSL_DATA_DIR" in settings.forwarded_env and "DAGSTER_HOME" in settings.forwarded_env
    assert executor_from_env({"SCREENER_SSL_EXECUTOR": "ray", "SCREENER_SSL_RAY_ADDRESS": "http://head:8265"}).name == "ray"


@pytest.fixture(scope="module")
def ray_head():
    head = RayHead(num_cpus=2)
    yield head
    head.stop()


@pytest.fixture
def ray_env(tiny_env, ray_head, postgres_url, monkeypatch, tmp_path) -> dict[str, str]:  # noqa: F811
    home = Path(tiny_env["DAGSTER_HOME"])
    shutil.copy(REPO / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "SCREENER_SSL_PG_URL": postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        "SCREENER_SSL_EXECUTOR": "ray",
        "SCREENER_SSL_RAY_ADDRESS": ray_head.address,
        "SCREENER_SSL_RAY_NUM_CPUS": "0.5",
        "SCREENER_SSL_RAY_TORCH_NUM_CPUS": "1",
        "SCREENER_SSL_RAY_HEALTH_CHECK_SECONDS": "1",
        # The step processes must import this worktree's code, as a Ray image would ship it.
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Two torch steps at once: the cluster's CPUs, not the pool, bound the sweep on Ray.
        instance.event_log_storage.set_concurrency_slots("torch", 2)
    return {**tiny_env, **env}


def _local_reference(root: Path, partitions, monkeypatch) -> tuple[dict[str, str], float]:
    """The same partitions on the local path (in-process), one after the other: their data versions, seconds."""
    monkeypatch.setenv("SCREENER_SSL_DATA_DIR", str(root))
    monkeypatch.delenv("SCREENER_SSL_EXECUTOR")
    defs = load_defs()
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(list(defs.assets), selection=DATA_ASSETS, instance=instance, resources=defs.resources).success
    versions = {}
    started = time.time()
    for partition in partitions:
        result = dg.materialize(list(defs.assets), selection=[k.to_user_string() for k in TRAIN_ASSETS],
                                partition_key=partition, instance=instance, resources=defs.resources)
        assert result.success
        versions[partition] = _pointer(root, partition)["data_version"]
    seconds = time.time() - started
    monkeypatch.setenv("SCREENER_SSL_EXECUTOR", "ray")
    return versions, seconds


def _pointer(root: Path, partition: str) -> dict:
    """The partition's run pointer with its run dir resolved (pointers store it relative to the data root)."""
    from screener_ssl.tracking.latest import latest_partition_run

    objective, variant = partition.split("|")
    pointer = json.loads((root / "models" / "_partitions" / f"{objective}__{variant}.json").read_text())
    return pointer | {"run_dir": str(latest_partition_run(root, objective, variant))}


def run_partition(home: str, partition: str, barrier=None) -> tuple[str, bool]:
    """One sweep run of ``partition`` whose steps go to Ray (in a child process, as a launched run); (run id, success)."""
    job = dg.reconstructable(ray_sweep_job)
    tags = ray_sweep_job().partitions_def.get_tags_for_partition_key(partition)
    with dg.DagsterInstance.from_config(home) as instance:
        if barrier is not None:
            barrier.wait(timeout=300)
        result = dg.execute_job(job, instance, tags=tags, asset_selection=TRAIN_ASSETS)
        return result.run_id, result.success


SPAWN = multiprocessing.get_context("spawn")


def test_two_partitions_run_concurrently_on_ray_with_the_local_artifacts(ray_env, monkeypatch, tmp_path):
    ray_root = Path(ray_env["SCREENER_SSL_DATA_DIR"])
    local_root = tmp_path / "local_data"
    local, local_seconds = _local_reference(local_root, PARTITIONS, monkeypatch)
    monkeypatch.setenv("SCREENER_SSL_DATA_DIR", str(ray_root))
    shutil.copytree(local_root, ray_root, ignore=shutil.ignore_patterns("models", "schemas", "checkpoints"))

    home = ray_env["DAGSTER_HOME"]
    with SPAWN.Manager() as manager, ProcessPoolExecutor(2, mp_context=SPAWN) as pool:
        barrier = manager.Barrier(3)
        futures = [pool.submit(run_partition, home, p, barrier) for p in PARTITIONS]
        barrier.wait(timeout=300)  # timed from when both runs start, not from their imports
        started = time.time()
        results = {p: f.result(timeout=400) for p, f in zip(PARTITIONS, futures)}
        ray_seconds = time.time() - started
    print(f"two partitions (ssl_schema + pretrained_encoder): local one after the other {local_seconds:.1f}s, "
          f"on Ray concurrently {ray_seconds:.1f}s; load {os.getloadavg()}")
    assert all(ok for _, ok in results.values()), results

    with dg.DagsterInstance.from_config(home) as instance:
        intervals = {}
        for partition, (run_id, _) in results.items():
            records = [r for r in instance.all_logs(run_id) if r.dagster_event]
            # Every step ran as a Ray job (dagster-ray's step handler announces the submission id).
            submitted = {r.dagster_event.step_key for r in records if "in Ray job dagster-step-" in (r.message or "")}
            # partitions_current comes with any subset of its assets (Dagster adds an asset's checks);
            # a job run without the code location's whole graph (this reconstructable job) evaluates nothing.
            assert submitted == {"ssl_schema", "pretrained_encoder", "partitions_current"}
            assert not [r for r in records if r.dagster_event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
                        and r.dagster_event.asset_check_evaluation_data.check_name == "partitions_current"]
            times = [r.timestamp for r in records if r.dagster_event.step_key == "pretrained_encoder" and
                     r.dagster_event.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS)]
            intervals[partition] = (min(times), max(times))
    (a_start, a_end), (b_start, b_end) = intervals.values()
    assert a_start < b_end and b_start < a_end, f"the two trainings did not overlap: {intervals}"

    for partition in PARTITIONS:
        assert _pointer(ray_root, partition)["data_version"] == local[partition], partition
        ray_weights = torch.load(Path(_pointer(ray_root, partition)["run_dir"]) / "encoder.pt", weights_only=False)
        local_weights = torch.load(Path(_pointer(local_root, partition)["run_dir"]) / "encoder.pt", weights_only=False)
        assert _tensors(ray_weights).keys() == _tensors(local_weights).keys()
        assert all(torch.equal(t, _tensors(local_weights)[k]) for k, t in _tensors(ray_weights).items())


def _tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_tensors(value, f"{prefix}.{key}"))
        return out
    return {}


def _step_pids(step_key: str) -> list[int]:
    """Processes running ``dagster api execute_step`` for ``step_key`` (Ray job entrypoints)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"execute_step" in cmdline and f"DAGSTER_RUN_STEP_KEY={step_key}\0".encode() in environ:
            pids.append(int(proc.name))
    return pids


def test_a_worker_killed_mid_training_is_retried_and_resumes_from_its_checkpoint(ray_env, monkeypatch, tmp_path):
    sweep = tmp_path / "kill_sweep.yaml"
    sweep.write_text(KILL_SWEEP)
    monkeypatch.setenv("SCREENER_SSL_SWEEP", str(sweep))
    root = Path(ray_env["SCREENER_SSL_DATA_DIR"])
    monkeypatch.delenv("SCREENER_SSL_EXECUTOR")
    defs = load_defs()
    assert dg.materialize(list(defs.assets), selection=DATA_ASSETS, instance=dg.DagsterInstance.ephemeral(),
                          resources=defs.resources).success
    monkeypatch.setenv("SCREENER_SSL_EXECUTOR", "ray")

    home = ray_env["DAGSTER_HOME"]
    killed = []
    with ProcessPoolExecutor(1, mp_context=SPAWN) as pool:
        future = pool.submit(run_partition, home, "masked_recon|full")
        checkpoints = root / "checkpoints"
        deadline = time.time() + 300
        while time.time() < deadline and not killed and not future.done():
            if checkpoints.exists() and any(checkpoints.glob("*.pt")):
                for pid in _step_pids("pretrained_encoder"):
                    os.kill(pid, signal.SIGKILL)  # the Ray worker process running the training step
                    killed.append(pid)
            time.sleep(0.05)
        run_id, success = future.result(timeout=400)
    assert killed, "training finished or never checkpointed before it could be killed"
    assert success
    with dg.DagsterInstance.from_config(home) as instance:
        types = [r.dagster_event.event_type for r in instance.all_logs(run_id)
                 if r.dagster_event and r.dagster_event.step_key == "pretrained_encoder"]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY in types, types
    # The second attempt starts as STEP_RESTARTED.
    assert types.count(dg.DagsterEventType.STEP_START) == 1 and dg.DagsterEventType.STEP_RESTARTED in types, types
    meta = json.loads((Path(_pointer(root, "masked_recon|full")["run_dir"]) / "pretrain_config.json").read_text())
    resumed = _find(meta, "resumed_from_step")
    assert resumed is not None and 0 < resumed < 150, meta.get("metrics")


def _find(obj, key: str):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for value in obj.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None
