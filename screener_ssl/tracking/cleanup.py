"""Housekeeping under the data root: what killed writers and abandoned runs leave behind.

* In-progress atomic writes of a killed process: hidden ``.tmp-*`` directories and
  ``.<name>.<random>.tmp`` files (:mod:`screener_ssl.store.artifacts`), and ``.old-*`` /
  ``.failed-*`` directories of an interrupted swap. Readers skip them; this removes them once
  they are older than ``tmp_max_age_s`` (so a write in progress is never touched).
* Stale checkpoints in ``<data root>/checkpoints/``: a finished run deletes its own; one left
  ``checkpoint_max_age_s`` after its last write belongs to a run nobody resumed. So do a run's
  encoder snapshots (``<checkpoint stem>.curve/``) once its checkpoint is gone.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

TMP_MAX_AGE_S = 6 * 3600.0
CHECKPOINT_MAX_AGE_S = 7 * 24 * 3600.0
_TMP_DIR_PREFIXES = (".tmp-", ".old-", ".failed-")


def _is_leftover(path: Path) -> bool:
    name = path.name
    if path.is_dir():
        return name.startswith(_TMP_DIR_PREFIXES)
    return name.startswith(".") and name.endswith(".tmp")


def _age_s(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return -1.0


def clean_data_root(
    data_root: Path,
    tmp_max_age_s: float = TMP_MAX_AGE_S,
    checkpoint_max_age_s: float = CHECKPOINT_MAX_AGE_S,
    now: float | None = None,
) -> dict[str, list[str]]:
    """Remove old temp leftovers and stale checkpoints; return what was removed (paths)."""
    now = time.time() if now is None else now
    root = Path(data_root)
    removed: dict[str, list[str]] = {"tmp": [], "checkpoints": []}
    if not root.is_dir():
        return removed
    stack = [root]
    while stack:  # walk by hand: never descend into a leftover being removed
        directory = stack.pop()
        for entry in sorted(directory.iterdir()):
            if _is_leftover(entry):
                if _age_s(entry, now) > tmp_max_age_s:
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed["tmp"].append(str(entry))
            elif entry.is_dir() and not entry.is_symlink():
                stack.append(entry)
    checkpoints = root / "checkpoints"
    if checkpoints.is_dir():
        for file in sorted(checkpoints.glob("*.pt")):
            if _age_s(file, now) > checkpoint_max_age_s:
                file.unlink(missing_ok=True)
                removed["checkpoints"].append(str(file))
        # A run's encoder snapshots (<checkpoint stem>.curve/) go once its checkpoint is gone and they are old.
        for folder in sorted(checkpoints.glob("*.curve")):
            stem = folder.name[: -len(".curve")]
            if folder.is_dir() and not (checkpoints / f"{stem}.pt").exists() and _age_s(folder, now) > checkpoint_max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed["checkpoints"].append(str(folder))
    return removed
