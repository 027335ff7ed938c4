"""Probing a run's reference encoders: extra encoders a run dir holds (e.g. a distillation teacher).

The registry entry of the run's objective names them (``Objective.reference_encoders``); each is
scored by the same probe as the run's own encoder and written to ``<run dir>/<name>/``, so the
student and its reference can be read side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from screener_ssl.data.dataset import Dataset
from screener_ssl.probe.probe import ProbeConfig, run_probe, write_probe_artifacts
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.objectives.base import get_objective_class


def probe_reference_encoders(
    run_dir: Path,
    objective: str,
    dataset: Dataset,
    config: ProbeConfig,
    augment: AugmentConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Probe every reference encoder of ``run_dir``; returns ``name -> macro metrics``."""
    out: dict[str, dict] = {}
    for name, encoder in get_objective_class(objective).reference_encoders(Path(run_dir)).items():
        log(f"probing the reference encoder {name!r} of {run_dir}")
        result = run_probe(encoder, dataset, config, augment=augment, log=log)
        write_probe_artifacts(result, Path(run_dir) / name)
        out[name] = result.metrics["macro"]
    return out
