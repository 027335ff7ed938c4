"""Run pointers stay inside their data root; atomically written files get ordinary permissions."""

from __future__ import annotations

import json
import os
import shutil
import stat

import polars as pl
import pytest

from screener_ssl.store.artifacts import atomic_dir, atomic_write_json, atomic_write_parquet, atomic_write_text
from screener_ssl.tracking.latest import (
    POINTER_DIR,
    PointerOutsideRootError,
    latest_partition_run,
    record_partition_run,
)
from screener_ssl_tests.faults.conftest import tree_digest


def _root_with_run(root):
    run = root / "models" / "masked_recon" / "_pretrain" / "r1"
    run.mkdir(parents=True)
    (run / "encoder.json").write_text("{}")
    record_partition_run(root, "masked_recon", "base", run, "v1")
    return run


def test_pointer_is_stored_relative_to_the_data_root(tmp_path):
    root = tmp_path / "data"
    _root_with_run(root)
    stored = json.loads((root / POINTER_DIR / "masked_recon__base.json").read_text())
    assert stored["run_dir"] == "models/masked_recon/_pretrain/r1"


def test_a_copied_data_root_probes_its_own_copy(tmp_path):
    original = tmp_path / "data"
    _root_with_run(original)
    before = tree_digest(original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    run_dir = latest_partition_run(copy, "masked_recon", "base")
    assert run_dir == (copy / "models" / "masked_recon" / "_pretrain" / "r1").resolve()
    # What probe_metrics does with the run dir the pointer gives: write its probe files there.
    atomic_write_json(run_dir / "probe_metrics.json", {"macro": {"auprc": 0.5}})
    assert tree_digest(original) == before
    assert (copy / "models" / "masked_recon" / "_pretrain" / "r1" / "probe_metrics.json").is_file()


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_pointer_leaving_the_root_is_refused(tmp_path, how):
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    _root_with_run(root)
    elsewhere.mkdir()
    pointer = root / POINTER_DIR / "masked_recon__base.json"
    data = json.loads(pointer.read_text())
    if how == "absolute":
        data["run_dir"] = str(elsewhere)
    elif how == "dotdot":
        data["run_dir"] = "models/../../elsewhere"
    else:
        (root / "models" / "masked_recon" / "_pretrain" / "link").symlink_to(elsewhere)
        data["run_dir"] = "models/masked_recon/_pretrain/link"
    pointer.write_text(json.dumps(data))
    with pytest.raises(PointerOutsideRootError, match="outside the data root"):
        latest_partition_run(root, "masked_recon", "base")


def test_recording_a_run_dir_outside_the_root_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(PointerOutsideRootError, match="masked_recon\\|base"):
        record_partition_run(tmp_path / "data", "masked_recon", "base", tmp_path / "elsewhere", "v1")


def test_an_old_absolute_pointer_inside_the_root_still_reads(tmp_path):
    root = tmp_path / "data"
    run = _root_with_run(root)
    pointer = root / POINTER_DIR / "masked_recon__base.json"
    pointer.write_text(json.dumps({**json.loads(pointer.read_text()), "run_dir": str(run)}))
    assert latest_partition_run(root, "masked_recon", "base") == run.resolve()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_get_the_mode_of_any_other_output(tmp_path):
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        text = atomic_write_text(tmp_path / "a.txt", "x")
        js = atomic_write_json(tmp_path / "a.json", {"a": 1})
        pq = atomic_write_parquet(tmp_path / "a.parquet", pl.DataFrame({"a": [1]}))
        with atomic_dir(tmp_path / "run") as tmp:
            (tmp / "f").write_text("x")
        assert _mode(plain) == 0o644
        assert {_mode(text), _mode(js), _mode(pq)} == {0o644}
        assert _mode(tmp_path / "run") == 0o755
        os.umask(0o027)
        assert _mode(atomic_write_text(tmp_path / "b.txt", "x")) == 0o640
    finally:
        os.umask(old)
