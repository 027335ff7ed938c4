"""The experiment index: one row per run, JSON artifacts flattened to dotted columns.

Layout read: ``<models_root>/<model_type>/_pretrain/<run_id>/`` with at least
``run_meta.json``. Directories whose names start with ``.`` or ``tmp`` are
in-progress atomic writes (see :func:`screener_ssl.store.artifacts.atomic_dir`)
and are skipped. Written: ``<models_root>/_index.csv`` and ``_index.parquet``, with the
DuckDB table ``experiment_index``, as one unit (:func:`publish_index`): the files live in
``<models_root>/_index/``, swapped in whole beside the table's transaction, and the two
top-level names are relative links into it, so a reader sees the old set or the new one.

A run's reference encoders (e.g. a distillation teacher, probed into
``<run_dir>/<name>/``, see :mod:`screener_ssl.runs.probe`) stay on their run's
row: the sections of their ``probe_metrics.json`` that the leaderboard reads
(:data:`REFERENCE_SECTIONS`) are flattened under ``reference.<name>.probe_metrics``
and ``references`` lists their names.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from screener_ssl.probe.metric_names import COST, MACRO, METRICS_STEM, TIMINGS, VAL
from screener_ssl.store.artifacts import (
    RUN_SUBDIR,
    atomic_dir,
    to_jsonable,
)

# Files flattened into the index, each under its stem ("probe_metrics.macro.auprc").
RUN_JSON_FILES: tuple[str, ...] = (
    "run_meta.json",
    "experiment.json",
    "schema.json",
    "pretrain_config.json",
    "probe_metrics.json",
)
ID_COLUMNS: tuple[str, ...] = ("model_type", "run_id", "run_dir")
REFERENCE_FILE = "probe_metrics.json"
# The parts of a reference encoder's probe metrics its run's row carries (per-pattern detail stays in its dir).
REFERENCE_SECTIONS: tuple[str, ...] = (MACRO, VAL, TIMINGS, COST)
REFERENCE_PREFIX = "reference"
INDEX_CSV = "_index.csv"
INDEX_PARQUET = "_index.parquet"
INDEX_DIR = "_index"  # holds the current index files; INDEX_CSV and INDEX_PARQUET link into it
INDEX_TABLE = "experiment_index"


def _scalar(value: Any) -> Any:
    """A JSON-scalar value as the index stores it: numpy unwrapped, NaN/inf as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def flatten(obj: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level with dotted keys.

    Scalars stay scalars; lists (of scalars or of dicts) become a JSON string in
    one column; an empty dict becomes the string ``"{}"`` so its key stays visible.
    """
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            if value:
                flat.update(flatten(value, name))
            else:
                flat[name] = "{}"
        elif isinstance(value, (list, tuple, np.ndarray)):
            flat[name] = json.dumps(to_jsonable(value), sort_keys=True, allow_nan=False)
        else:
            flat[name] = _scalar(value)
    return flat


def _is_in_progress(name: str) -> bool:
    return name.startswith(".") or name.lower().startswith("tmp")


def iter_run_dirs(models_root: str | Path) -> Iterator[tuple[str, str, Path]]:
    """(model_type, run_id, run_dir) of every complete run, in sorted order."""
    root = Path(models_root)
    if not root.is_dir():
        return
    for type_dir in sorted(root.iterdir()):
        if not type_dir.is_dir() or _is_in_progress(type_dir.name):
            continue
        pretrain = type_dir / RUN_SUBDIR
        if not pretrain.is_dir():
            continue
        for run in sorted(pretrain.iterdir()):
            if run.is_dir() and not _is_in_progress(run.name) and (run / "run_meta.json").is_file():
                yield type_dir.name, run.name, run


def reference_dirs(run: Path) -> list[Path]:
    """Sub-directories of a run dir holding a probed reference encoder, in sorted order."""
    return [
        d for d in sorted(run.iterdir())
        if d.is_dir() and not _is_in_progress(d.name) and (d / REFERENCE_FILE).is_file()
    ]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"index: cannot read run artifact {path}: {err}") from err


def scan_runs(models_root: str | Path, problems: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """One flat dict per complete run under ``models_root``.

    Columns: model_type, run_id, run_dir, then ``<file stem>.<dotted key>`` for
    each JSON of :data:`RUN_JSON_FILES` present in the run dir. A JSON whose
    top level is not an object is stored whole as a JSON string under its stem.

    A run with an unreadable JSON (corrupt, truncated, not UTF-8) is left out and
    described in ``problems`` (run_dir, file, error) when a list is given; without
    one it raises, naming the file.
    """
    rows = []
    for model_type, run_id, path in iter_run_dirs(models_root):
        row: dict[str, Any] = {"model_type": model_type, "run_id": run_id, "run_dir": str(path)}
        try:
            for file_name in RUN_JSON_FILES:
                file = path / file_name
                if not file.is_file():
                    continue
                stem = file_name.removesuffix(".json")
                content = _read_json(file)
                if isinstance(content, Mapping):
                    row.update(flatten(content, stem))
                else:
                    row[stem] = json.dumps(content, sort_keys=True)
            references = reference_dirs(path)
            for ref in references:
                file_name = f"{ref.name}/{REFERENCE_FILE}"
                content = _read_json(ref / REFERENCE_FILE)
                if not isinstance(content, Mapping):
                    raise ValueError(f"index: reference probe {ref / REFERENCE_FILE} is not a JSON object")
                sections = {k: content[k] for k in REFERENCE_SECTIONS if k in content}
                row.update(flatten(sections, f"{REFERENCE_PREFIX}.{ref.name}.{METRICS_STEM}"))
            if references:
                row["references"] = json.dumps([ref.name for ref in references])
        except ValueError as err:
            if problems is None:
                raise
            problems.append({"run_dir": str(path), "file": file_name, "error": str(err)})
            continue
        rows.append(row)
    return rows


def _column(name: str, values: list[Any]) -> pl.Series:
    """One typed column; mixed types (other than int with float) become strings."""
    present = [v for v in values if v is not None]
    kinds = {type(v) for v in present}
    if not present or kinds == {str}:
        return pl.Series(name, values, dtype=pl.String)
    if kinds == {bool}:
        return pl.Series(name, values, dtype=pl.Boolean)
    if kinds == {int}:
        return pl.Series(name, values, dtype=pl.Int64)
    if kinds <= {int, float}:
        return pl.Series(name, [None if v is None else float(v) for v in values], dtype=pl.Float64)
    as_text = [
        None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values
    ]
    return pl.Series(name, as_text, dtype=pl.String)


def build_index(models_root: str | Path, problems: list[dict[str, str]] | None = None) -> pl.DataFrame:
    """The index table: one row per run, the union of all runs' columns (missing = null).

    Column order: model_type, run_id, run_dir, then the rest sorted. Rows are
    sorted by (model_type, run_id); run ids sort by creation time. With a
    ``problems`` list, unreadable runs are skipped and reported there (see
    :func:`scan_runs`).
    """
    rows = scan_runs(models_root, problems)
    keys = sorted({k for row in rows for k in row} - set(ID_COLUMNS))
    columns = list(ID_COLUMNS) + keys
    return pl.DataFrame([_column(c, [row.get(c) for row in rows]) for c in columns])


def _write_index_files(df: pl.DataFrame, directory: Path) -> None:
    (directory / INDEX_CSV).write_text(df.write_csv(), encoding="utf-8")
    df.write_parquet(directory / INDEX_PARQUET)


def _link_into_index_dir(root: Path) -> dict[str, Path]:
    """``<root>/_index.csv`` and ``_index.parquet`` as relative links into ``<root>/_index/``.

    A link is made once (an older regular file there is replaced atomically) and then keeps
    pointing at whichever ``_index/`` was swapped in last.
    """
    paths = {}
    for kind, name in (("csv", INDEX_CSV), ("parquet", INDEX_PARQUET)):
        link, target = root / name, Path(INDEX_DIR) / name
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            tmp = root / f".{name}.{secrets.token_hex(4)}.tmp"
            os.symlink(target, tmp)
            os.replace(tmp, link)
        paths[kind] = link
    return paths


def publish_index(
    df: pl.DataFrame, models_root: str | Path, warehouse: Any = None, retry: Any = None
) -> dict[str, Path]:
    """Write ``_index.csv``, ``_index.parquet`` and (with a ``warehouse``) DuckDB table ``experiment_index`` as one unit.

    ``warehouse``: the DuckDB file or a connection factory (see
    :func:`screener_ssl.data.warehouse.publish_dir_and_tables`); None writes the files only.
    The files are staged in a hidden directory, the table is replaced inside an open
    transaction (dropped when the index is empty), the directory is swapped in and the
    transaction committed: a failure or a kill anywhere before that leaves the old files and
    the old table. Returns the paths readers use (``csv``, ``parquet``).
    """
    root = Path(models_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / INDEX_DIR
    if warehouse is None:
        with atomic_dir(final, overwrite=True) as tmp:
            _write_index_files(df, tmp)
    else:
        from screener_ssl.data.warehouse import publish_dir_and_tables

        publish_dir_and_tables(
            final, lambda tmp: _write_index_files(df, tmp), warehouse, {INDEX_TABLE: df if df.height else None}, retry
        )
    return _link_into_index_dir(root)


def write_index(df: pl.DataFrame, models_root: str | Path) -> dict[str, Path]:
    """Write ``_index.csv`` and ``_index.parquet`` under ``models_root`` as one unit (no DuckDB table)."""
    return publish_index(df, models_root)


def index_fingerprint(models_root: str | Path) -> str:
    """sha256 over the runs the index covers and the content of their JSON files.

    Changes when a run is added or removed, or any of its indexed JSON files
    changes; in-progress dirs do not count. Usable as the index's data version.
    """
    digest = hashlib.sha256()
    for model_type, run_id, path in iter_run_dirs(models_root):
        digest.update(f"run\0{model_type}\0{run_id}\n".encode())
        files = [(name, path / name) for name in RUN_JSON_FILES]
        files += [(f"{ref.name}/{REFERENCE_FILE}", ref / REFERENCE_FILE) for ref in reference_dirs(path)]
        for file_name, file in files:
            if file.is_file():
                content = hashlib.sha256(file.read_bytes()).hexdigest()
                digest.update(f"file\0{file_name}\0{content}\n".encode())
    return digest.hexdigest()
