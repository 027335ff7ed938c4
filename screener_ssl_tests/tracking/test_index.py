"""The experiment index: flattening, union of columns, skipped in-progress dirs, fingerprint."""

from __future__ import annotations

import json

import polars as pl
import pytest

from screener_ssl.tracking import index as ix
from screener_ssl.store.artifacts import atomic_dir, atomic_write_json, run_dir


def _write_run(data_root, model_type, run_id, files: dict) -> None:
    with atomic_dir(run_dir(data_root, model_type, run_id)) as tmp:
        for name, content in files.items():
            atomic_write_json(tmp / name, content)


def test_flatten_nested_lists_and_empty():
    flat = ix.flatten(
        {
            "macro": {"auprc": 0.4, "ci": {"low": 0.3, "high": None}},
            "fracs": [0.2, 0.4],
            "bins": [{"lo": 0.0, "count": 3}],
            "empty": {},
            "name": "vicreg",
        },
        "probe_metrics",
    )
    assert flat == {
        "probe_metrics.macro.auprc": 0.4,
        "probe_metrics.macro.ci.low": 0.3,
        "probe_metrics.macro.ci.high": None,
        "probe_metrics.fracs": "[0.2, 0.4]",
        "probe_metrics.bins": '[{"count": 3, "lo": 0.0}]',
        "probe_metrics.empty": "{}",
        "probe_metrics.name": "vicreg",
    }
    assert ix.flatten({"a": {"b": 1}}) == {"a.b": 1}


@pytest.fixture
def models_root(tmp_path):
    _write_run(
        tmp_path,
        "vicreg",
        "20240101T000000_000000Z-aaaa",
        {
            "run_meta.json": {"seed": 0, "git_sha": None, "threads": {"omp": "1"}},
            "probe_metrics.json": {
                "macro": {"auprc": 0.41},
                "per_pattern": {"double_top": {"n": 5}},
            },
            "schema.json": {"fingerprint": "abc", "feature_names": ["gap", "log_return"]},
        },
    )
    _write_run(
        tmp_path,
        "byol",
        "20240102T000000_000000Z-bbbb",
        {
            "run_meta.json": {"seed": "seven", "threads": {"omp": "2"}},
            "pretrain_config.json": {"steps": 100, "final_loss": 1.25},
        },
    )
    pretrain = tmp_path / "models" / "vicreg" / "_pretrain"
    # In-progress or abandoned runs: hidden atomic temp dir, tmp-prefixed dir, no run_meta.json.
    (pretrain / ".tmp-run3-xyz").mkdir()
    (pretrain / ".tmp-run3-xyz" / "run_meta.json").write_text('{"seed": 9}')
    (pretrain / "tmp_run4").mkdir()
    (pretrain / "tmp_run4" / "run_meta.json").write_text('{"seed": 9}')
    (pretrain / "no_meta").mkdir()
    (pretrain / "no_meta" / "probe_metrics.json").write_text("{}")
    return tmp_path / "models"


def test_scan_and_build_union_columns_and_skip_in_progress(models_root):
    rows = ix.scan_runs(models_root)
    assert [(r["model_type"], r["run_id"]) for r in rows] == [
        ("byol", "20240102T000000_000000Z-bbbb"),
        ("vicreg", "20240101T000000_000000Z-aaaa"),
    ]
    df = ix.build_index(models_root)
    assert df.height == 2
    assert df.columns[:3] == ["model_type", "run_id", "run_dir"]
    assert df.columns[3:] == sorted(df.columns[3:])
    by_type = {r["model_type"]: r for r in df.to_dicts()}
    assert by_type["vicreg"]["probe_metrics.macro.auprc"] == 0.41
    assert by_type["byol"]["probe_metrics.macro.auprc"] is None  # missing = null
    assert by_type["byol"]["pretrain_config.steps"] == 100
    assert by_type["vicreg"]["pretrain_config.steps"] is None
    assert by_type["vicreg"]["schema.feature_names"] == '["gap", "log_return"]'
    assert by_type["vicreg"]["run_meta.threads.omp"] == "1"
    assert df.schema["probe_metrics.macro.auprc"] == pl.Float64
    assert df.schema["pretrain_config.steps"] == pl.Int64
    # seed is an int in one run and a string in the other: coerced to string.
    assert df.schema["run_meta.seed"] == pl.String
    assert sorted(df["run_meta.seed"].to_list()) == ["0", "seven"]
    assert "run_meta.git_sha" in df.columns


def test_write_index_csv_and_parquet(models_root):
    df = ix.build_index(models_root)
    paths = ix.write_index(df, models_root)
    assert paths["csv"] == models_root / "_index.csv"
    assert pl.read_parquet(paths["parquet"]).equals(df)
    csv = pl.read_csv(paths["csv"])
    assert csv.height == 2 and csv.columns == df.columns
    assert sorted(p.name for p in models_root.iterdir() if p.is_file()) == [
        "_index.csv",
        "_index.parquet",
    ]
    # The written index files are not mistaken for model types on the next scan.
    assert ix.build_index(models_root).height == 2


def test_empty_root_gives_empty_index(tmp_path):
    df = ix.build_index(tmp_path / "missing")
    assert df.height == 0 and df.columns == ["model_type", "run_id", "run_dir"]
    assert ix.index_fingerprint(tmp_path / "missing") == ix.index_fingerprint(tmp_path)


def test_fingerprint_changes_with_runs_not_with_in_progress_dirs(models_root):
    base = ix.index_fingerprint(models_root)
    assert base == ix.index_fingerprint(models_root)
    pretrain = models_root / "vicreg" / "_pretrain"
    (pretrain / ".tmp-run5-abc").mkdir()
    (pretrain / ".tmp-run5-abc" / "run_meta.json").write_text("{}")
    assert ix.index_fingerprint(models_root) == base
    run = pretrain / "20240101T000000_000000Z-aaaa"
    atomic_write_json(run / "probe_metrics.json", {"macro": {"auprc": 0.42}})
    changed = ix.index_fingerprint(models_root)
    assert changed != base
    _write_run(models_root.parent, "vicreg", "20240103T000000_000000Z-cccc", {"run_meta.json": {}})
    assert ix.index_fingerprint(models_root) not in (base, changed)


def test_corrupt_json_names_the_file(models_root):
    run = models_root / "byol" / "_pretrain" / "20240102T000000_000000Z-bbbb"
    (run / "experiment.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"experiment\.json"):
        ix.build_index(models_root)
    (run / "experiment.json").write_text(json.dumps([1, 2]))
    df = ix.build_index(models_root)
    assert df.filter(pl.col("model_type") == "byol")["experiment"].to_list() == ["[1, 2]"]


def test_reference_encoder_probes_ride_on_their_runs_row(models_root):
    """A teacher probed into <run>/teacher/ is indexed on its run's row (summary sections only) and fingerprinted."""
    run = models_root / "vicreg" / "_pretrain" / "20240101T000000_000000Z-aaaa"
    base = ix.index_fingerprint(models_root)
    atomic_write_json(
        run / "teacher" / "probe_metrics.json",
        {"macro": {"auprc": 0.2}, "val": {"macro_auprc": 0.19}, "per_pattern": {"double_top": {"n": 5}}},
    )
    (run / ".tmp-half").mkdir()
    (run / ".tmp-half" / "probe_metrics.json").write_text("{not json")  # in progress: skipped
    (run / "plots").mkdir()  # a sub-directory without a probe: not a reference
    df = ix.build_index(models_root)
    vicreg = df.filter(pl.col("model_type") == "vicreg").row(0, named=True)
    assert vicreg["reference.teacher.probe_metrics.macro.auprc"] == 0.2
    assert vicreg["reference.teacher.probe_metrics.val.macro_auprc"] == 0.19
    assert vicreg["references"] == '["teacher"]'
    assert vicreg["probe_metrics.macro.auprc"] == 0.41  # the student's own metrics untouched
    assert not any(c.startswith("reference.teacher.probe_metrics.per_pattern") for c in df.columns)
    assert df.filter(pl.col("model_type") == "byol")["references"].to_list() == [None]
    changed = ix.index_fingerprint(models_root)
    assert changed != base
    atomic_write_json(run / "teacher" / "probe_metrics.json", {"macro": {"auprc": 0.3}})
    assert ix.index_fingerprint(models_root) not in (base, changed)
    (run / "teacher" / "probe_metrics.json").write_text("[1]")
    with pytest.raises(ValueError, match=r"teacher/probe_metrics\.json is not a JSON object"):
        ix.build_index(models_root)
