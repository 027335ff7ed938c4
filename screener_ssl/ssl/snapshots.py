"""Encoder snapshots at chosen steps of a training run: what a budget curve probes.

A trained run keeps its encoder's weights at a few fractions of its steps (``TrainConfig.curve_fracs``,
default 10 %, 30 % and 100 %). The training loop calls an :class:`EncoderSnapshots` after every
optimizer step; at a chosen step it writes the encoder's ``state_dict`` (tensors only, so it loads with
``torch.load(weights_only=True)``) atomically to ``<directory>/step_<n>.pt``. Writing reads the weights
and draws no random number, so a run with snapshots trains to the same weights as one without. The
directory sits beside the run's checkpoint while the run trains (a resumed run keeps the snapshots
written before it was killed) and moves into the run dir's ``curve/`` when the run is written.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from screener_ssl.store.artifacts import atomic_torch_save, atomic_write_json

if TYPE_CHECKING:
    from screener_ssl.ssl.encoder import Encoder

CURVE_DIR = "curve"
MANIFEST_FILE = "curve.json"
DEFAULT_CURVE_FRACS = (0.1, 0.3, 1.0)


def check_curve_fracs(fracs: Sequence[float]) -> tuple[float, ...]:
    """``fracs`` as a tuple when they are distinct ascending values in (0, 1]; empty = no snapshots."""
    fracs = tuple(float(f) for f in fracs)
    if any(not 0.0 < f <= 1.0 for f in fracs) or list(fracs) != sorted(set(fracs)):
        raise ValueError(f"curve_fracs must be distinct, ascending fractions of the steps in (0, 1], found {list(fracs)}")
    return fracs


def snapshot_steps(total_steps: int, fracs: Sequence[float]) -> tuple[int, ...]:
    """The steps (1-based, after the optimizer step) at which ``fracs`` of ``total_steps`` are done.

    Each fraction rounds to the nearest step, at least 1; fractions that land on the same step share it.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, found {total_steps}")
    return tuple(sorted({min(max(round(f * total_steps), 1), total_steps) for f in check_curve_fracs(fracs)}))


def snapshot_file(step: int) -> str:
    return f"step_{step:07d}.pt"


def encoder_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``module``'s weights that later optimizer steps cannot change."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()}


@dataclass
class EncoderSnapshots:
    """The training loop's snapshot hook: ``hook(model, done_steps)`` after every optimizer step.

    ``encoder_of(model)`` is the part of the trained model that is the run's encoder (default: its
    ``backbone``, for an objective and for a classifier alike).
    """

    directory: Path
    steps: tuple[int, ...]
    encoder_of: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model.backbone

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.steps = tuple(sorted(set(int(s) for s in self.steps)))

    def __call__(self, model: torch.nn.Module, done: int) -> None:
        if done in self.steps:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(self.directory / snapshot_file(done), encoder_state(self.encoder_of(model)))

    def clear(self) -> None:
        """Remove the snapshots of an earlier attempt (a run that starts from step 0)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def written(self) -> list[int]:
        return [s for s in self.steps if (self.directory / snapshot_file(s)).is_file()]

    def copy_into(self, run_dir: Path, batch_size: int) -> Path | None:
        """Copy the snapshots into ``run_dir/curve/`` with a manifest ``curve.json``; None when there are none.

        The manifest lists ``{step, windows_seen, file}`` per snapshot (windows seen = step x batch size).
        """
        steps = self.written()
        if not steps:
            return None
        target = Path(run_dir) / CURVE_DIR
        target.mkdir(parents=True, exist_ok=True)
        for step in steps:
            shutil.copyfile(self.directory / snapshot_file(step), target / snapshot_file(step))
        atomic_write_json(
            target / MANIFEST_FILE,
            {"snapshots": [{"step": s, "windows_seen": s * batch_size, "file": snapshot_file(s)} for s in steps]},
        )
        return target


def read_manifest(run_dir: Path) -> list[dict]:
    """The snapshots a run dir keeps (``[{step, windows_seen, file}]``, by step); empty when it keeps none."""
    path = Path(run_dir) / CURVE_DIR / MANIFEST_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["snapshots"]
        return sorted(({"step": int(e["step"]), "windows_seen": int(e["windows_seen"]), "file": str(e["file"])}
                       for e in entries), key=lambda e: e["step"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"budget-curve manifest {path} is damaged ({err}); rematerialize the run") from err


def load_snapshot(run_dir: Path, entry: dict) -> dict[str, torch.Tensor]:
    """The weights of one manifest entry, loaded with ``weights_only=True``."""
    path = Path(run_dir) / CURVE_DIR / entry["file"]
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, garbage, or a pickle with code in it
        raise ValueError(f"encoder snapshot {path} cannot be loaded safely ({type(err).__name__}); "
                         "rematerialize the run") from err


def snapshot_encoders(run_dir: Path, encoder: "Encoder") -> dict[int, "Encoder"]:
    """Each snapshot of ``run_dir`` as an :class:`Encoder` like ``encoder`` (the run's final one), by step."""
    from screener_ssl.ssl.encoder import Encoder

    out: dict[int, Encoder] = {}
    for entry in read_manifest(run_dir):
        backbone = copy.deepcopy(encoder.backbone)
        try:
            backbone.load_state_dict(load_snapshot(run_dir, entry))
        except RuntimeError as err:
            raise ValueError(
                f"encoder snapshot {Path(run_dir) / CURVE_DIR / entry['file']} does not fit the run's encoder "
                f"({str(err).splitlines()[0]}); rematerialize the run"
            ) from err
        out[entry["step"]] = Encoder(backbone, encoder.normalization, encoder.meta, pooling=encoder.pooling)
    return out
