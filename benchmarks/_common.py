"""Helpers shared by the benchmark scripts: thread pinning, memory readings, JSON output.

Benchmarks print one JSON document on stdout (and optionally write it to a file);
progress goes to stderr so the JSON can be piped straight into ``jq``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "POLARS_MAX_THREADS")
REPO_ROOT = Path(__file__).resolve().parent.parent


def pin_threads(threads: int) -> dict[str, str]:
    """Set every thread-count variable to ``threads``; must run before numpy/polars/torch import.

    Returns the variables as set, for the benchmark record.
    """
    for name in THREAD_VARS:
        os.environ[name] = str(threads)
    return {name: os.environ[name] for name in THREAD_VARS}


def pin_torch_threads(threads: int) -> dict[str, int]:
    """Pin torch's intra-op threads (inter-op stays at torch's choice) and report both."""
    import torch

    torch.set_num_threads(threads)
    return {"torch_num_threads": torch.get_num_threads(), "torch_num_interop_threads": torch.get_num_interop_threads()}


def thread_record() -> dict[str, Any]:
    """The thread settings in force now, including what polars actually uses."""
    out: dict[str, Any] = {name: os.environ.get(name) for name in THREAD_VARS}
    if "polars" in sys.modules:
        out["polars_thread_pool_size"] = sys.modules["polars"].thread_pool_size()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_num_threads"] = torch.get_num_threads()
        out["torch_num_interop_threads"] = torch.get_num_interop_threads()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    out["cpu_affinity"] = len(affinity) if affinity is not None else None
    return out


def host_record() -> dict[str, Any]:
    out: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            out["cpu_model"] = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        out["cpu_model"] = None
    out["versions"] = package_versions()
    for module in ("numpy", "polars", "torch"):
        out[module] = out["versions"].get(module)
    out["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return out


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages the benchmarks exercise (without importing them)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in ("screener_ssl", "numpy", "polars", "pyarrow", "duckdb", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    """Resident set size now, MiB (from /proc; falls back to the peak where /proc is missing)."""
    value = _proc_status_mb("VmRSS")
    return peak_rss_mb() if value is None else value


def high_water_rss_mb() -> float:
    """Peak RSS of this process image, MiB (VmHWM).

    Unlike ``ru_maxrss``, which Linux carries over from the parent's high-water mark
    through fork + exec, VmHWM starts afresh at exec.
    """
    value = _proc_status_mb("VmHWM")
    return peak_rss_mb() if value is None else value


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(document: dict[str, Any], json_out: str | None) -> None:
    """Print the result document on stdout and, when asked, write it to ``json_out``."""
    text = json.dumps(document, indent=2, sort_keys=False, default=str)
    print(text, flush=True)
    if json_out:
        path = Path(json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
