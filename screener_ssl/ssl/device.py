"""Where tensors live: resolving a device name, moving batches there, and optional bf16 autocast.

``resolve_device`` is the one place a device string becomes a ``torch.device``:
``"auto"`` picks CUDA when torch sees a GPU and the CPU otherwise; ``"cuda"`` (or
``"cuda:N"``) on a machine without one stops with an error that says so, rather than
failing later inside a kernel.
"""

from __future__ import annotations

import contextlib
import re

import torch

from screener_ssl.ssl.batch import SSLBatch, View

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class DeviceUnavailableError(RuntimeError):
    """A CUDA device was asked for where torch sees none (or fewer than the index asked for)."""


def resolve_device(name: str) -> torch.device:
    """``"auto" | "cpu" | "cuda" | "cuda:N"`` -> ``torch.device``; raises when CUDA is asked for but absent."""
    if not isinstance(name, str) or not re.match(DEVICE_PATTERN, name):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA device "
                f"(built with CUDA {torch.version.cuda}); use device='cpu' or 'auto'"
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on ``device`` when ``bf16``; otherwise a no-op context (full float32)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _move(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if tensor.device.type == device.type and device.index in (None, tensor.device.index):
        return tensor  # born there (the device-resident sampler)
    if device.type != "cuda":
        return tensor.to(device)
    # Page-locked host memory lets the copy run asynchronously beside the previous step's kernels.
    return tensor.pin_memory().to(device, non_blocking=True)


def batch_to_device(batch: SSLBatch, device: torch.device) -> SSLBatch:
    """The same batch with every tensor on ``device`` (returned unchanged on the CPU)."""
    if device == torch.device("cpu"):
        return batch
    return SSLBatch(
        views=[View(_move(v.x, device), _move(v.observed, device)) for v in batch.views],
        clean=View(_move(batch.clean.x, device), _move(batch.clean.observed, device)),
        ticker_id=_move(batch.ticker_id, device),
        decision_row=_move(batch.decision_row, device),
        extras={k: _move(t, device) for k, t in batch.extras.items()},
    )
