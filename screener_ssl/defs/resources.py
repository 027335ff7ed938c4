"""Configuration, carried by one resource; environment variables are read here and nowhere deeper."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from screener_ssl.sweep import Sweep, load_sweep


class ScreenerSettings(dg.ConfigurableResource):
    """Where data lives, which bars and labels to use, and which sweep file to run."""

    data_dir: str = "data"
    bars: str = "synthetic"  # 'synthetic' or a Parquet/CSV file or folder
    labels: str = "synthetic"  # 'synthetic', 'talib', 'chart' / 'chart:<pattern>,...' or a label file
    sweep: str = ""  # sweep file; empty = the bundled sweeps/default.yaml

    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()

    def load_sweep(self) -> Sweep:
        return load_sweep(self.sweep or None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ScreenerSettings":
        env = os.environ if environ is None else environ
        return cls(
            data_dir=env.get("SCREENER_SSL_DATA_DIR", "data"),
            bars=env.get("SCREENER_SSL_BARS", "synthetic"),
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
