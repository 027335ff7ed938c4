"""Real PostgreSQL and Ray servers for the scale-out tests, on loopback, torn down after.

Each fixture skips with the reason when its server binary is missing; with
SCREENER_SSL_REQUIRE_POSTGRES=1 / SCREENER_SSL_REQUIRE_RAY=1 (set by .ci/run) it fails instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _unavailable(name: str, reason: str) -> None:
    if os.environ.get(f"SCREENER_SSL_REQUIRE_{name}") == "1":
        pytest.fail(f"SCREENER_SSL_REQUIRE_{name}=1 but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root (CI runs as root): drop to the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _fresh_database(server_url: str) -> str:
    import psycopg2

    name = f"screener_test_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL with an empty database: CI's server (SCREENER_SSL_TEST_PG_URL) or one started here."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("POSTGRES", "psycopg2 is not installed (dagster-postgres brings it)")
    server = os.environ.get("SCREENER_SSL_TEST_PG_URL")
    if server:
        yield _fresh_database(server)
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        _unavailable("POSTGRES", "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        _unavailable("POSTGRES", "running as root and there is no postgres user to run the server as")
    tmp = Path(tempfile.mkdtemp(prefix="screener_pg_", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    data, port = tmp / "data", free_port()
    subprocess.run(_as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "screener", "-E", "UTF8",
                                      "--no-sync"]), check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off -c max_connections=100"
    subprocess.run(_as_postgres_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(tmp / "server.log"),
                                      "-w", "-t", "60", "start"]), check=True, capture_output=True)
    try:
        yield _fresh_database(f"postgresql://screener@127.0.0.1:{port}/postgres")
    finally:
        subprocess.run(_as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


class RayHead:
    """A one-node Ray cluster on 127.0.0.1 (2 CPUs, small object store), stopped by process group."""

    def __init__(self, num_cpus: int = 2, object_store_bytes: int = 80 * 1024**2) -> None:
        ray_bin = Path(sys.executable).with_name("ray")
        if not ray_bin.exists():
            _unavailable("RAY", f"the ray CLI is not installed beside {sys.executable} (pip install 'ray[default]')")
        self.tmp = Path(tempfile.mkdtemp(prefix="screener_ray_", dir="/tmp"))
        gcs_port, self.dashboard_port, client_port = free_port(), free_port(), free_port()
        # Loopback only: without this Ray swaps 127.0.0.1 for the machine's routable address.
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
               # Jobs run `dagster api execute_step`: the head is started from the venv, as on a real node.
               "PATH": os.pathsep.join([str(ray_bin.parent), os.environ.get("PATH", "")])}
        self.log = open(self.tmp / "head.log", "w")
        self.proc = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", f"--port={gcs_port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
             f"--ray-client-server-port={client_port}",
             f"--num-cpus={num_cpus}", "--num-gpus=0", f"--object-store-memory={object_store_bytes}",
             "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={self.tmp}"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self._wait_ready(timeout=150)

    def _wait_ready(self, timeout: float) -> None:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"ray head exited early: {(self.tmp / 'head.log').read_text()[-3000:]}")
            try:
                JobSubmissionClient(self.address).list_jobs()
                return
            except Exception:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"ray head not ready after {timeout}s at {self.address}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # Every Ray process was started in the head's session: end whatever is left of it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
