"""The one run writer: pretraining, supervised and finetuned runs all land in the same layout.

``<data root>/models/<model_type>/_pretrain/<run_id>/``, written atomically: encoder.pt +
encoder.json, schema.json, pretrain_config.json, experiment.json, run_meta.json, and any
extra files of the run (e.g. a classifier head).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

from screener_ssl.store.fingerprint import fingerprint
from screener_ssl.ssl.encoder import Encoder
from screener_ssl.ssl.minirocket import STATE_FILE as MINIROCKET_STATE_FILE
from screener_ssl.ssl.schema import SSLSchema
from screener_ssl.store.artifacts import (
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    git_sha,
    host_info,
    new_run_id,
    run_dir,
    thread_env,
)


@dataclass(frozen=True)
class WrittenRun:
    run_dir: Path
    data_version: str  # fingerprint of the encoder weights and the schema


def write_run(
    data_root: Path,
    model_type: str,
    encoder: Encoder,
    schema: SSLSchema,
    pretrain_config: dict[str, Any],
    experiment: dict[str, Any],
    seed: int,
    started: float,
    run_context: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> WrittenRun:
    """Write one run dir atomically; ``experiment["partition"]`` is recorded in run_meta.json too.

    ``environ``: the environment whose thread settings run_meta.json records (none when None).
    """
    run_id = new_run_id()
    final_dir = run_dir(data_root, model_type, run_id)
    with atomic_dir(final_dir) as tmp:
        encoder.save(tmp)
        if write_extra is not None:
            write_extra(tmp)
        atomic_write_text(tmp / "schema.json", schema.to_json())
        atomic_write_json(tmp / "pretrain_config.json", pretrain_config)
        atomic_write_json(tmp / "experiment.json", experiment)
        finished = time.time()
        atomic_write_json(
            tmp / "run_meta.json",
            {
                "run_id": run_id,
                **(run_context or {}),
                "partition": experiment["partition"],
                "git_sha": git_sha(),
                "seed": seed,
                "threads": thread_env(environ or {}),
                "host": host_info(),
                "timings": {"started": started, "finished": finished, "seconds": finished - started},
            },
        )
        weights_file = tmp / ("encoder.pt" if (tmp / "encoder.pt").exists() else MINIROCKET_STATE_FILE)
        weights_hash = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    return WrittenRun(final_dir, fingerprint({"weights": weights_hash, "schema": schema.fingerprint}))
