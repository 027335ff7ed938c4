"""Which run dir holds the latest materialization of each (objective, variant) partition."""

from __future__ import annotations

import json
from pathlib import Path

from screener_ssl.tracking.artifacts import atomic_write_json
from screener_ssl.tracking.names import check_name

POINTER_DIR = Path("models") / "_partitions"


def _pointer(data_root: Path, objective: str, variant: str) -> Path:
    return data_root / POINTER_DIR / f"{check_name(objective, 'objective')}__{check_name(variant, 'variant')}.json"


def record_partition_run(data_root: Path, objective: str, variant: str, run_dir: Path, data_version: str) -> None:
    atomic_write_json(
        _pointer(data_root, objective, variant),
        {"objective": objective, "variant": variant, "run_dir": str(run_dir), "data_version": data_version},
    )


def latest_partition_run(data_root: Path, objective: str, variant: str) -> Path:
    path = _pointer(data_root, objective, variant)
    if not path.exists():
        raise FileNotFoundError(
            f"no pretrained encoder for partition {objective}|{variant} under {data_root}; "
            f"pretrain that partition first"
        )
    run_dir = Path(json.loads(path.read_text())["run_dir"])
    if not run_dir.exists():
        raise FileNotFoundError(f"partition {objective}|{variant} points at {run_dir}, which no longer exists")
    return run_dir
