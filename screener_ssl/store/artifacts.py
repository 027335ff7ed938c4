"""Atomic artifact writes, run directories and run metadata (DESIGN.md section 5).

Every write goes to a temp file in the target's directory, is fsynced, then
``os.replace``-d over the target: a reader (the index) sees the old file or the
new one, never half of one. A failing writer leaves the target untouched and
no temp file behind. A whole run directory is built the same way with
:func:`atomic_dir`.

Temp names start with ``.`` so :mod:`screener_ssl.tracking.index` skips them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

RUN_SUBDIR = "_pretrain"
DUCKDB_THREADS_ENV = "SCREENER_SSL_DUCKDB_THREADS"
# Run ids and model types become directory names: keep them portable.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


# --------------------------------------------------------------------------- atomic files


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (directory entry); not supported everywhere."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, and put it straight back
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file (0644 under the usual umask 022); ``mkstemp`` would give 0600."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory (0755 under umask 022); ``mkdtemp`` would give 0700."""
    return 0o777 & ~current_umask()


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Run ``write(file)`` on a temp sibling of ``path``, then rename it over ``path``.

    The file gets the mode any other output file gets (``0666`` less the umask), not ``mkstemp``'s 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes({path}): expected bytes, found {type(data).__name__}")
    return _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text({path}): expected str, found {type(text).__name__}")
    return _atomic_write(path, lambda fh: fh.write(text.encode(encoding)))


def to_jsonable(obj: Any, where: str = "$") -> Any:
    """Plain-JSON copy of ``obj``: numpy scalars/arrays, Path, date, tuples, sets converted.

    NaN and +-inf become None (strict JSON has neither); dict keys become strings.
    Anything else raises TypeError naming the key path (``where``) of the value.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v, f"{where}[]") for v in sorted(obj, key=repr)]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), where)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (dt.date, dt.datetime, dt.time)):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):  # pydantic models: configs go into JSON as plain dicts
        return to_jsonable(obj.model_dump(mode="json"), where)
    raise TypeError(f"value at {where} of type {type(obj).__name__} is not JSON-serializable")


def json_dumps(obj: Any) -> str:
    """Sorted, indented, strict JSON text of ``obj`` (see :func:`to_jsonable`)."""
    return json.dumps(to_jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON (sorted keys, indent 2, NaN as null) atomically."""
    try:
        text = json_dumps(obj)
    except TypeError as err:
        raise TypeError(f"atomic_write_json({path}): {err}") from err
    return atomic_write_text(path, text)


def atomic_write_parquet(path: str | Path, df: Any) -> Path:
    """Write a polars DataFrame to Parquet atomically."""
    import polars as pl

    if not isinstance(df, pl.DataFrame):
        raise TypeError(
            f"atomic_write_parquet({path}): expected a polars DataFrame, found {type(df).__name__}"
        )
    return _atomic_write(path, lambda fh: df.write_parquet(fh))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return _atomic_write(path, lambda fh: torch.save(obj, fh))


@contextmanager
def atomic_dir(final_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temp name; it appears at ``final_dir`` only on success.

    Yields a temp sibling (``.tmp-<name>-<random>``) to write into. On normal
    exit it is renamed to ``final_dir``; on an exception it is deleted and
    ``final_dir`` is left as it was. A killed process leaves only the hidden
    temp dir, which the index skips. An existing ``final_dir`` is an error
    unless ``overwrite`` (then the old one is swapped out and removed).
    """
    final = Path(final_dir)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"atomic_dir: {final} already exists (pass overwrite=True to replace it)"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as fh:
                    os.fsync(fh.fileno())
        os.chmod(tmp, dir_mode())  # mkdtemp makes 0700; a run dir should be as readable as any dir
        if final.exists():
            old = final.parent / f".old-{final.name}-{secrets.token_hex(4)}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- run ids and dirs


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value.lower().startswith("tmp"):
        raise ValueError(
            f"{what} {value!r} is not a valid directory name: use letters, digits and _.=+- ,"
            f" not starting with '.', '-' or 'tmp'"
        )
    return value


def new_run_id(prefix: str = "") -> str:
    """A unique run id that sorts by creation time: ``[prefix-]YYYYmmddTHHMMSS_ffffffZ-<hex>``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S_%fZ")
    run_id = f"{stamp}-{secrets.token_hex(4)}"
    return _check_name(f"{prefix}-{run_id}", "run id prefix") if prefix else run_id


def run_dir(data_root: str | Path, model_type: str, run_id: str) -> Path:
    """``<data_root>/models/<model_type>/_pretrain/<run_id>`` (not created)."""
    _check_name(model_type, "model_type")
    _check_name(run_id, "run_id")
    return Path(data_root) / "models" / model_type / RUN_SUBDIR / run_id


# --------------------------------------------------------------------------- run metadata


def thread_env(environ: Mapping[str, str]) -> dict:
    """Thread settings that change numerics and speed, recorded in run_meta.json.

    ``environ``: the process environment as the caller sees it (the library reads none itself).
    """
    out: dict[str, Any] = {
        "OMP_NUM_THREADS": environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": environ.get("MKL_NUM_THREADS"),
        "torch_num_threads": None,
        "torch_num_interop_threads": None,
        "duckdb_threads": None,
    }
    try:
        import torch

        out["torch_num_threads"] = int(torch.get_num_threads())
        out["torch_num_interop_threads"] = int(torch.get_num_interop_threads())
    except Exception:  # torch missing or broken: the record still gets written
        pass
    raw = environ.get(DUCKDB_THREADS_ENV)
    if raw is not None and raw.strip():
        out["duckdb_threads"] = int(raw) if raw.strip().isdigit() else raw
    return out


def git_sha() -> str | None:
    """HEAD commit of the repository holding this package; None when unavailable."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except Exception:
        return None
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def host_info() -> dict:
    """Machine and library versions, recorded in run_meta.json."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
        "torch": None,
        "cuda_available": None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = bool(torch.cuda.is_available())
    except Exception:
        pass
    return info
