"""Catch host/device mixing on a CPU-only machine: a virtual accelerator for tests.

Inside :func:`track_devices`, every tensor is either on the *host* or on the *virtual device*
``VIRTUAL`` (``torch.device("cpu", 0)``; the data really stays on the CPU). Tensors that exist
before the block (model parameters, inputs the test prepared) count as device tensors, as on a
GPU after ``.to(device)``. Inside the block a tensor is a host tensor when it comes from a factory
without ``device=`` (``torch.arange(n)``, ``torch.zeros(...)``, ``torch.from_numpy``), from
``.cpu()`` / ``.to("cpu")``, or from an op over host tensors only; ``device=VIRTUAL``,
``.to(VIRTUAL)``, ``*_like`` / ``new_*`` of a device tensor and ops over device tensors give
device tensors, and a device tensor reports ``VIRTUAL`` as its ``.device`` (so code that writes
``torch.arange(n, device=x.device)`` follows it). An op that takes a host tensor with at least one
element-dimension together with a device tensor raises :class:`DeviceMixError`, as CUDA's
"Expected all tensors to be on the same device" would; 0-dim host tensors mix freely, as they do
on CUDA. Copies between the two (``copy_``, ``.to``) are allowed.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode

VIRTUAL = torch.device("cpu", 0)
_HOST_ATTR = "_tracked_on_host"
_MOVES = {"to", "cpu", "cuda", "copy_", "pin_memory", "__get__", "__set__", "numpy", "tolist", "item",
          "__repr__", "__format__", "__str__", "__bool__", "__len__", "__iter__", "dim", "size", "numel",
          "_has_compatible_shallow_copy_type", "__deepcopy__", "__reduce_ex__", "__setstate__", "is_floating_point", "is_complex", "requires_grad_", "detach"}
_FACTORY_KEYS = ("device",)


class DeviceMixError(RuntimeError):
    """A host tensor met a device tensor in one op: on a GPU this op would fail."""


def is_host(t: torch.Tensor) -> bool:
    return bool(getattr(t, _HOST_ATTR, False))


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _is_host_device(device: Any) -> bool:
    """A ``device=`` / ``.to(...)`` argument naming the host (plain CPU, no index)."""
    if isinstance(device, str):
        device = torch.device(device)
    return isinstance(device, torch.device) and device.type == "cpu" and device.index is None


def _device_arg(args: tuple, kwargs: dict) -> tuple[bool, Any]:
    """(found, device) for a ``.to(...)`` call: a device or a tensor among its arguments."""
    if "device" in kwargs and kwargs["device"] is not None:
        return True, kwargs["device"]
    if "other" in kwargs:
        return True, VIRTUAL if not is_host(kwargs["other"]) else torch.device("cpu")
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            return True, a
        if isinstance(a, torch.Tensor):
            return True, torch.device("cpu") if is_host(a) else VIRTUAL
    return False, None


class _Tracker(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if getattr(func, "__self__", None) is torch.Tensor.device:
            return torch.device("cpu") if is_host(args[0]) else VIRTUAL
        inputs = list(_tensors(args)) + list(_tensors(kwargs))
        if name not in _MOVES:
            host = [t for t in inputs if is_host(t) and t.dim() > 0]
            device = [t for t in inputs if not is_host(t)]
            if host and device:
                raise DeviceMixError(
                    f"{name}: host tensor(s) {[tuple(t.shape) for t in host]} mixed with device tensor(s) "
                    f"{[tuple(t.shape) for t in device]}; on a GPU this fails with 'Expected all tensors to be "
                    f"on the same device' (create the tensor with device=... or move it)"
                )
        result = func(*args, **kwargs)
        if name == "__set__" and getattr(func, "__self__", None) is torch.Tensor.data:
            _tag(args[0], is_host(args[1]))  # module.to(...) swaps a parameter's data in place
            return result
        if name in ("__get__", "__set__", "numpy", "tolist", "item"):
            return result
        # Where the result lives.
        if name == "cpu":
            on_host = True
        elif name == "cuda":
            on_host = False
        elif name == "to":
            found, target = _device_arg(args, kwargs)
            on_host = _is_host_device(target) if found else is_host(args[0])
        elif "device" in kwargs and kwargs["device"] is not None:
            on_host = _is_host_device(kwargs["device"])
        elif inputs:
            on_host = all(is_host(t) for t in inputs) if name not in ("copy_",) else is_host(args[0])
        else:
            on_host = True  # a factory without device=: the default device, the host
        inputs_ids = {id(t) for t in inputs}
        for out in _tensors(result):
            if id(out) in inputs_ids:
                if name in ("to", "cpu", "cuda") and is_host(out) != on_host:
                    # A real move returns a new tensor; the no-op on the CPU returns the input itself.
                    alias = out.view_as(out)
                    _tag(alias, on_host)
                    return alias
                continue
            _tag(out, on_host)
        return result


def _tag(t: torch.Tensor, on_host: bool) -> None:
    if on_host:
        setattr(t, _HOST_ATTR, True)
    elif is_host(t):
        setattr(t, _HOST_ATTR, False)


@contextlib.contextmanager
def track_devices():
    """Run the block with host/device mixing errors (see the module docstring); yields ``VIRTUAL``."""
    from_numpy = torch.from_numpy

    def host_from_numpy(array):  # not routed through torch-function modes
        t = from_numpy(array)
        _tag(t, True)
        return t

    torch.from_numpy = host_from_numpy
    try:
        with _Tracker():
            yield VIRTUAL
    finally:
        torch.from_numpy = from_numpy
