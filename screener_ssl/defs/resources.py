"""Configuration, carried by one resource, read from the environment's ``SCREENER_SSL_*`` variables.

:meth:`ScreenerSettings.from_env` is the one place the project's settings come from the process
environment (through :mod:`screener_ssl.store.environment`, the only module that touches it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from screener_ssl.data.dataset import WAREHOUSE
from screener_ssl.data.warehouse import connect_with_retry
from screener_ssl.runs.sweep import DEFAULT_SWEEP, Sweep, SweepError, load_sweep
from screener_ssl.store.environment import project_variables

NIGHTLY_CRON = "0 2 * * *"


@functools.lru_cache(maxsize=8)
def _parsed_sweep(path: str, mtime_ns: int, size: int) -> Sweep:
    return load_sweep(path)


class ScreenerSettings(dg.ConfigurableResource):
    """Where data lives, which bars and labels to use, and which sweep file to run."""

    data_dir: str = "data"
    bars: str = "synthetic"  # 'synthetic' or a Parquet/CSV file or folder
    bars_date_format: str = ""  # strftime layout of non-ISO CSV dates, e.g. '%m/%d/%Y'; empty = ISO only
    labels: str = "synthetic"  # 'synthetic', 'talib', 'chart' / 'chart:<pattern>,...' or a label file
    sweep: str = ""  # sweep file; empty = the bundled sweeps/default.yaml
    nightly_cron: str = NIGHTLY_CRON  # cron of the nightly sweep schedule
    nightly_variants: str = "full"  # comma-separated variants the nightly sweep runs; empty = every variant

    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def nightly_variant_list(self) -> list[str] | None:
        """The nightly sweep's variants; None = every variant of the sweep."""
        return [v for v in self.nightly_variants.split(",") if v] or None

    def load_sweep(self) -> Sweep:
        """The sweep file, parsed once per file version (every asset of a run reads the same one)."""
        path = Path(self.sweep) if self.sweep else DEFAULT_SWEEP
        try:
            stat = path.stat()
        except OSError as exc:
            raise SweepError(f"sweep file {path} does not exist (SCREENER_SSL_SWEEP)") from exc
        return _parsed_sweep(str(path), stat.st_mtime_ns, stat.st_size)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ScreenerSettings":
        """The settings of the ``SCREENER_SSL_*`` variables in ``environ`` (default: this process's)."""
        env = project_variables() if environ is None else environ
        return cls(
            data_dir=env.get("SCREENER_SSL_DATA_DIR", "data"),
            bars=env.get("SCREENER_SSL_BARS", "synthetic"),
            bars_date_format=env.get("SCREENER_SSL_BARS_DATE_FORMAT", ""),
            labels=env.get("SCREENER_SSL_LABELS", "synthetic"),
            sweep=env.get("SCREENER_SSL_SWEEP", ""),
            nightly_cron=env.get("SCREENER_SSL_NIGHTLY_CRON", NIGHTLY_CRON),
            nightly_variants=env.get("SCREENER_SSL_NIGHTLY_VARIANTS", "full"),
        )


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse every asset reads and writes its tables through.

    Connections wait out another process's lock the way the library's writers do
    (``LockRetry``: about 15 s, then ``WarehouseLockedError`` naming the file) rather than
    with DuckDBResource's own backoff, and carry only ``connection_config``: DuckDB refuses a
    second connection to a file in one process whose options differ from the first's.
    """

    @contextmanager
    def get_connection(self) -> Iterator:
        con = connect_with_retry(Path(self.database), config=self.connection_config)
        try:
            yield con
        finally:
            con.close()


def warehouse_resource(settings: ScreenerSettings) -> WarehouseResource:
    """The warehouse of ``settings``' data directory."""
    return WarehouseResource(database=str(settings.root / WAREHOUSE))


def source_version(*module_names: str) -> str:
    """Code version from the source text of modules (packages: every module file inside)."""
    digest = hashlib.sha256()
    for name in module_names:
        module = importlib.import_module(name)
        path = Path(inspect.getfile(module))
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for file in files:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
