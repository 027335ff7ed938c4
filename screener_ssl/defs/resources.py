"""Configuration, carried by one resource; environment variables are read here and nowhere deeper."""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from screener_ssl.runs.sweep import DEFAULT_SWEEP, Sweep, SweepError, load_sweep


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

    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()

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
        env = os.environ if environ is None else environ
        return cls(
            data_dir=env.get("SCREENER_SSL_DATA_DIR", "data"),
            bars=env.get("SCREENER_SSL_BARS", "synthetic"),
            bars_date_format=env.get("SCREENER_SSL_BARS_DATE_FORMAT", ""),
            labels=env.get("SCREENER_SSL_LABELS", "synthetic"),
            sweep=env.get("SCREENER_SSL_SWEEP", ""),
        )


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
