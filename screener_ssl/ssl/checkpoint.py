"""Training checkpoints that load with ``torch.load(weights_only=True)``: tensors plus JSON.

A checkpoint is one file (written atomically) holding a flat ``{name: tensor}`` dict and
the rest of the training state as JSON text: step, losses, scheduler, sampler RNG states,
optimizer hyperparameters. Loading never unpickles arbitrary objects, so a file planted
in ``<data root>/checkpoints/`` cannot run code; a corrupt or foreign file stops with
:class:`CorruptCheckpointError` naming it.

JSON keeps what plain JSON would lose: dicts with non-string keys (the optimizer's
per-parameter state is keyed by int), tuples and numpy arrays are tagged, and floats
round-trip exactly (``repr``), so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from screener_ssl.store.artifacts import atomic_torch_save

FORMAT = "screener_ssl.checkpoint/1"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file cannot be read back; the message names it and says what to do."""


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().clone() if obj.device.type != "cpu" else obj
        return {"__tensor__": name}
    if obj is None or isinstance(obj, (bool, str, int, float)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}.{k}")] for k, v in obj.items()]}
    raise TypeError(f"checkpoint state at {where}: {type(obj).__name__} is neither a tensor nor JSON-able")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts/lists of tensors and plain values) atomically to ``path``."""
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, "$")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_torch_save(path, {"format": FORMAT, "tensors": tensors, "state": json.dumps(encoded)})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`, loaded with ``weights_only=True``."""
    path = Path(path)
    hint = "delete it to train from the start"
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, garbage, or a pickle with code in it
        raise CorruptCheckpointError(f"checkpoint {path} cannot be loaded safely ({type(err).__name__}: "
                                     f"{str(err).splitlines()[0] if str(err) else ''}); {hint}") from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CorruptCheckpointError(f"checkpoint {path} is not a {FORMAT} file; {hint}")
    try:
        return _decode(json.loads(raw["state"]), raw["tensors"])
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptCheckpointError(f"checkpoint {path} has a damaged state ({err}); {hint}") from err
