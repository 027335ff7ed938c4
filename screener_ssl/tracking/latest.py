"""Which run dir holds the latest materialization of each (objective, variant) partition.

A pointer (``models/_partitions/<objective>__<variant>.json``) stores its run dir relative
to the data root, so a copied data root works on its own copy. A pointer whose run dir
resolves outside the data root (an absolute path elsewhere, ``..``, a symlink leaving the
root) is refused: a pointer file never directs reads or writes outside its own root.
Pointers written with an absolute path inside the root are still read.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from screener_ssl.store.artifacts import atomic_write_json
from screener_ssl.tracking.names import check_name

POINTER_DIR = Path("models") / "_partitions"


class PointerOutsideRootError(ValueError):
    """A run pointer names a run dir outside its data root."""


def _pointer(data_root: Path, objective: str, variant: str) -> Path:
    return data_root / POINTER_DIR / f"{check_name(objective, 'objective')}__{check_name(variant, 'variant')}.json"


def _inside(data_root: Path, run_dir: Path, what: str) -> Path:
    """``run_dir`` with symlinks resolved, when it stays under ``data_root``; else a clear error."""
    root = Path(data_root).resolve()
    resolved = (root / run_dir).resolve()  # an absolute run_dir replaces root here
    if resolved == root or not resolved.is_relative_to(root):
        raise PointerOutsideRootError(
            f"{what}: run dir {str(run_dir)!r} resolves to {resolved}, outside the data root {root}; "
            f"a run pointer must name a run dir under its own data root"
        )
    return resolved


def record_partition_run(data_root: Path, objective: str, variant: str, run_dir: Path, data_version: str) -> None:
    """Point ``objective|variant`` at ``run_dir`` (which must lie under ``data_root``), stored relative to it."""
    pointer = _pointer(data_root, objective, variant)
    resolved = _inside(data_root, Path(run_dir), f"partition {objective}|{variant}")
    relative = resolved.relative_to(Path(data_root).resolve()).as_posix()
    atomic_write_json(
        pointer, {"objective": objective, "variant": variant, "run_dir": relative, "data_version": data_version}
    )


def latest_partition_run(data_root: Path, objective: str, variant: str) -> Path:
    """The run dir the partition's pointer names (under ``data_root``, symlinks resolved)."""
    path = _pointer(data_root, objective, variant)
    if not path.exists():
        raise FileNotFoundError(
            f"no pretrained encoder for partition {objective}|{variant} under {data_root}; "
            f"pretrain that partition first"
        )
    try:
        stored = json.loads(path.read_text())["run_dir"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a run pointer (expected JSON with a 'run_dir' key): {exc}") from exc
    if not isinstance(stored, str) or not stored or "\0" in stored:
        raise ValueError(f"{path}: 'run_dir' must be a non-empty path string, found {str(stored)[:80]!r}")
    run_dir = _inside(data_root, Path(PurePosixPath(stored)), str(path))
    if not run_dir.exists():
        raise FileNotFoundError(f"partition {objective}|{variant} points at {run_dir}, which no longer exists")
    return run_dir
