"""The smaller faults: bad API arrays, short tickers, a corrupt run dir, leftovers of killed writers."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from screener_ssl.data import dataset as ds
from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.api import pretrain
from screener_ssl.tracking.cleanup import clean_data_root
from screener_ssl.tracking.index import build_index
from screener_ssl_tests.conftest import random_walk_bars


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(4, 40, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda x: np.full_like(x, np.nan), r"all NaN"),
        (lambda x: np.where(np.arange(3) == 1, np.nan, x), r"channel\(s\) \[1\] are NaN everywhere"),
        (lambda x: x.astype(np.float64) * np.where(np.arange(40)[:, None] == 7, 1e300, 1.0),
         r"beyond float32's range.*\[0, 7, 0\]"),
        (lambda x: np.where(np.arange(40)[:, None] == 3, np.inf, x), r"infinite.*\[0, 3, 0\]"),
        (lambda x: x[0], r"\[N, T, C\]"),
    ],
)
def test_api_refuses_input_it_cannot_learn_from(make_bad, message):
    with pytest.raises(ValueError, match=message):
        pretrain(make_bad(_x()), objective="masked_recon", steps=2, batch_size=4, threads=1)


def test_tickers_too_short_for_any_window_are_reported(tmp_path):
    bars = random_walk_bars(n_tickers=3, n_days=200)
    short = bars.filter(bars["ticker"] == "T001").head(10).with_columns(ticker=np.array(["SHORT"] * 10))
    file = tmp_path / "bars.parquet"
    bars.vstack(short).write_parquet(file)
    root = tmp_path / "root"
    spec = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
    ds.ingest_bars(root, str(file), None)
    ds.build_features(root, spec.volume_lookback)
    _, info = ds.build_windowed_dataset(root, spec)
    assert info["tickers_without_windows"] == {"count": 1, "min_history": 16, "examples": {"SHORT": 10}}
    assert json.loads((root / ds.WINDOWED_DIR / "dataset.json").read_text())["tickers_without_windows"]["count"] == 1


def _run(models, name, content):
    run = models / "ssl_tcn_x" / "_pretrain" / name
    run.mkdir(parents=True)
    (run / "run_meta.json").write_text(json.dumps({"run_id": name}))
    (run / "experiment.json").write_text(content)
    return run


def test_a_corrupt_json_in_one_run_dir_is_reported_and_skipped(tmp_path):
    models = tmp_path / "models"
    _run(models, "r1", json.dumps({"objective": "vicreg"}))
    bad = _run(models, "r2", '{"objective": "vic')  # truncated by a crash
    _run(models, "r3", json.dumps({"objective": "byol"}))
    problems: list[dict] = []
    index = build_index(models, problems)
    assert index["run_id"].to_list() == ["r1", "r3"]
    assert len(problems) == 1 and problems[0]["run_dir"] == str(bad) and problems[0]["file"] == "experiment.json"
    assert "experiment.json" in problems[0]["error"]
    with pytest.raises(ValueError, match="experiment.json"):
        build_index(models)  # without a problems list the caller asked for strictness


def test_leftovers_of_killed_writers_and_stale_checkpoints_are_cleaned(tmp_path):
    root = tmp_path / "root"
    old_tmp = root / "models" / "ssl_tcn_x" / "_pretrain" / ".tmp-r9-abc"
    fresh_tmp = root / ".tmp-bars-new"
    old_file = root / "models" / ".x.json.123.tmp"
    old_ckpt, new_ckpt = root / "checkpoints" / "a.pt", root / "checkpoints" / "b.pt"
    kept_run = root / "models" / "ssl_tcn_x" / "_pretrain" / "r1"
    for d in (old_tmp, fresh_tmp, kept_run):
        d.mkdir(parents=True)
        (d / "f").write_text("x")
    for f in (old_file, old_ckpt, new_ckpt):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    now = time.time()
    week = 8 * 24 * 3600
    for path in (old_tmp, old_file, old_ckpt):
        os.utime(path, (now - week, now - week))
    removed = clean_data_root(root, now=now)
    assert sorted(removed["tmp"]) == sorted([str(old_tmp), str(old_file)])
    assert removed["checkpoints"] == [str(old_ckpt)]
    assert fresh_tmp.exists() and new_ckpt.exists() and kept_run.exists()
    assert not old_tmp.exists() and not old_file.exists() and not old_ckpt.exists()
