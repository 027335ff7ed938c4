"""Atomic artifact writes, atomic run dirs, run ids and run metadata."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from screener_ssl.store import artifacts as a


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_json_converts_numpy_path_date_and_writes_nan_as_null(tmp_path):
    obj = {
        "b": np.float32(1.5),
        "a": {"n": np.int64(3), "flag": np.bool_(True), 0.2: "float key"},
        "arr": np.array([[1.0, np.nan], [np.inf, 2.0]]),
        "path": Path("/x/y"),
        "day": dt.date(2024, 1, 2),
        "nan": float("nan"),
        "tuple": (1, 2),
    }
    path = a.atomic_write_json(tmp_path / "m.json", obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back == {
        "a": {"0.2": "float key", "flag": True, "n": 3},
        "arr": [[1.0, None], [None, 2.0]],
        "b": 1.5,
        "day": "2024-01-02",
        "nan": None,
        "path": "/x/y",
        "tuple": [1, 2],
    }
    assert list(back) == sorted(back)  # sorted keys
    assert text.startswith('{\n  "a"')  # indent 2


def test_failed_json_write_leaves_target_untouched_and_no_temp_files(tmp_path):
    target = tmp_path / "probe_metrics.json"
    a.atomic_write_json(target, {"ok": 1})
    before = target.read_bytes()
    with pytest.raises(TypeError, match=r"probe_metrics.json.*\$\.macro\.bad.*object"):
        a.atomic_write_json(target, {"macro": {"bad": object()}})
    assert target.read_bytes() == before
    assert _leftovers(tmp_path, {"probe_metrics.json"}) == []


@pytest.mark.parametrize("writer", ["bytes", "parquet", "torch"])
def test_writer_raising_midway_leaves_target_untouched(tmp_path, writer, monkeypatch):
    target = tmp_path / "artifact"
    target.write_bytes(b"old complete artifact")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    if writer == "bytes":
        monkeypatch.setattr(a.os, "fsync", boom)
        call = lambda: a.atomic_write_bytes(target, b"new")  # noqa: E731
    elif writer == "parquet":
        monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
        call = lambda: a.atomic_write_parquet(target, pl.DataFrame({"x": [1]}))  # noqa: E731
    else:
        monkeypatch.setattr(torch, "save", boom)
        call = lambda: a.atomic_torch_save(target, {"w": torch.zeros(2)})  # noqa: E731
    with pytest.raises(RuntimeError, match="disk full"):
        call()
    assert target.read_bytes() == b"old complete artifact"
    assert _leftovers(tmp_path, {"artifact"}) == []


def test_atomic_writes_round_trip(tmp_path):
    df = pl.DataFrame({"ticker": ["AAA", "BBB"], "score": [0.1, 0.9]})
    a.atomic_write_parquet(tmp_path / "sub" / "p.parquet", df)
    assert pl.read_parquet(tmp_path / "sub" / "p.parquet").equals(df)
    a.atomic_torch_save(tmp_path / "encoder.pt", {"w": torch.arange(3.0)})
    loaded = torch.load(tmp_path / "encoder.pt")
    assert torch.equal(loaded["w"], torch.arange(3.0))
    a.atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    with pytest.raises(TypeError, match="expected a polars DataFrame"):
        a.atomic_write_parquet(tmp_path / "x.parquet", {"x": [1]})


def test_atomic_dir_appears_complete_only_on_success(tmp_path):
    final = tmp_path / "models" / "vicreg" / "_pretrain" / "run1"
    with a.atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".tmp-run1-")
        (tmp / "run_meta.json").write_text("{}")
        assert not final.exists()  # nothing visible while the run is being written
    assert (final / "run_meta.json").read_text() == "{}"
    assert _leftovers(final.parent, {"run1"}) == []


def test_atomic_dir_failure_removes_temp_and_keeps_existing(tmp_path):
    final = tmp_path / "run2"
    with pytest.raises(RuntimeError, match="training diverged"):
        with a.atomic_dir(final) as tmp:
            (tmp / "encoder.pt").write_bytes(b"half")
            raise RuntimeError("training diverged")
    assert list(tmp_path.iterdir()) == []
    final.mkdir()
    (final / "old.json").write_text("1")
    with pytest.raises(FileExistsError, match="run2 already exists"):
        with a.atomic_dir(final):
            pass
    with a.atomic_dir(final, overwrite=True) as tmp:
        (tmp / "new.json").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["new.json"]
    assert _leftovers(tmp_path, {"run2"}) == []


def test_run_ids_are_unique_sortable_and_valid_dir_names(tmp_path):
    ids = [a.new_run_id() for _ in range(20)]
    assert len(set(ids)) == 20
    assert ids == sorted(ids)  # creation order is sort order (timestamp first)
    assert a.new_run_id("vicreg").startswith("vicreg-")
    with pytest.raises(ValueError, match="tmp"):
        a.new_run_id("tmpfoo")
    path = a.run_dir(tmp_path, "vicreg", ids[0])
    assert path == tmp_path / "models" / "vicreg" / "_pretrain" / ids[0]
    with pytest.raises(ValueError, match="model_type '../x'"):
        a.run_dir(tmp_path, "../x", ids[0])
    with pytest.raises(ValueError, match="run_id '.hidden'"):
        a.run_dir(tmp_path, "vicreg", ".hidden")


def test_thread_env_reads_duckdb_threads(monkeypatch):
    monkeypatch.setenv("SCREENER_SSL_DUCKDB_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    env = a.thread_env(os.environ)
    assert env["duckdb_threads"] == 3
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["torch_num_threads"] == torch.get_num_threads()
    monkeypatch.delenv("SCREENER_SSL_DUCKDB_THREADS")
    assert a.thread_env(os.environ)["duckdb_threads"] is None


def test_git_sha_and_host_info_never_raise(monkeypatch):
    sha = a.git_sha()
    assert sha is None or (len(sha) == 40 and int(sha, 16) >= 0)

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(a.subprocess, "run", no_git)
    assert a.git_sha() is None
    info = a.host_info()
    assert info["python"].count(".") == 2 and info["cpu_count"] >= 1
    json.dumps(info)
    assert not any(isinstance(v, float) and math.isnan(v) for v in info.values())
