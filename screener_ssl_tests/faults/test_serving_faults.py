"""Serving faults: crafted model artifacts run no code, and the scan deploys exactly what was probed.

- A MiniRocket run's state is arrays + JSON: a pickle in its place (the old ``minirocket.pkl``,
  a pickle renamed ``minirocket.npz``, an object array inside the archive) is refused through
  ``load_encoder``, the ``probe_metrics`` asset and the scan, and the payload never runs.
- The scan embeds through the probe's call with the settings the probe head records: for every
  encoder kind of the registry its scores equal the probe's on the same windows, and
  ``select_best_run`` passes over a model it cannot serve.
- The probe's stratified train sample does not depend on the patterns' names.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from screener_ssl.data import dataset as ds
from screener_ssl.data.recent_bars import connect_read_only
from screener_ssl.data.windows import WindowSpec
from screener_ssl.probe.head import HEAD_FILE
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.positions import stratified_subsample
from screener_ssl.probe.probe import PREDICTIONS_FILE, run_probe, write_probe_artifacts
from screener_ssl.runs.finetune import finetune_partition
from screener_ssl.runs.pretrain import pretrain_partition
from screener_ssl.runs.probe import probe_reference_encoders
from screener_ssl.runs.sweep import load_sweep
from screener_ssl.scan.scan import ScanConfig, scan_market, select_best_run, serving_problem
from screener_ssl.ssl.backbones.base import BackboneConfig
from screener_ssl.ssl.encoder import load_encoder
from screener_ssl.ssl.minirocket import (
    LEGACY_STATE_FILE,
    STATE_FILE,
    MiniRocketConfig,
    MiniRocketEncoder,
    MiniRocketStateError,
)
from screener_ssl.tracking.index import build_index
from screener_ssl_tests.markets import synthetic_dataset

PACKAGE = Path(__file__).resolve().parents[2] / "screener_ssl"
SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
SMALL_BACKBONE = BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2)
# Every test window scored, so the scan's windows on a test date are all among the probe's predictions.
PROBE = {"n_boot": 10, "stability_windows": 0, "max_test_windows": None, "max_train_windows": 2000}


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _quiet(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------- a tiny probed sweep


def _point(objective: str, variant: str, **objective_config):
    point = load_sweep().point(objective, variant)
    train = point.train.model_copy(update={"steps": 4, "batch_size": 16, "threads": 1})
    return point.model_copy(
        update={
            "backbone": SMALL_BACKBONE,
            "train": train,
            "probe": {**point.probe, **PROBE},
            "objective_config": {**point.objective_config, **objective_config},
        }
    )


def _probe(run_dir: Path, dataset, point) -> None:
    result = run_probe(load_encoder(run_dir), dataset, ProbeConfig(**point.probe), augment=point.augment, log=_quiet)
    write_probe_artifacts(result, run_dir)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 12-ticker market and one probed run per encoder kind, as the sweep's assets make them."""
    root = tmp_path_factory.mktemp("serving")
    dataset = synthetic_dataset(root, SPEC, n_tickers=12, n_days=400)
    points = {
        "minirocket": _point("minirocket", "base", n_kernels=168, fit_windows=200),
        "ts2vec_maxpool": _point("ts2vec", "maxpool"),
        "random_init": _point("random_init", "base"),
        "raw_features": _point("raw_features", "base"),
        "shape_free": _point("shape_free", "base"),
        "supervised": _point("supervised", "base-s0"),
        "chart_distill": _point("chart_distill", "base"),
    }
    runs: dict[str, Path] = {}
    for name, point in points.items():
        run_dir = pretrain_partition(dataset, point, root, log=_quiet).run_dir
        _probe(run_dir, dataset, point)
        runs[name] = run_dir
    probe_reference_encoders(
        runs["chart_distill"], "chart_distill", dataset, ProbeConfig(**points["chart_distill"].probe), log=_quiet
    )
    runs["chart_teacher"] = runs["chart_distill"] / "teacher"
    finetuned, _ = finetune_partition(dataset, points["ts2vec_maxpool"], runs["ts2vec_maxpool"], root, log=_quiet)
    _probe(finetuned, dataset, points["ts2vec_maxpool"])
    runs["finetuned_ts2vec_maxpool"] = finetuned
    return {"root": root, "dataset": dataset, "runs": runs, "points": points}


def _scan_equals_probe(model_dir: Path, root: Path, spec: WindowSpec) -> int:
    """Scan the last test date with the model in ``model_dir``; assert its scores equal the probe's there."""
    predictions = pl.read_parquet(model_dir / PREDICTIONS_FILE).filter(pl.col("split") == "test")
    as_of = predictions.get_column("date").max()
    expected = predictions.filter(pl.col("date") == as_of)
    with connect_read_only(root / ds.WAREHOUSE, 1) as con:
        result = scan_market(model_dir, con=con, spec=spec, config=ScanConfig(as_of=as_of, threads=1))
    patterns = [c.removeprefix("score_") for c in expected.columns if c.startswith("score_")]
    probe_scores = expected.unpivot(
        on=[f"score_{p}" for p in patterns], index="ticker", variable_name="pattern", value_name="expected"
    ).with_columns(pl.col("pattern").str.strip_prefix("score_"))
    joined = probe_scores.join(result.scores, on=["ticker", "pattern"], how="left")
    assert joined.get_column("score").null_count() == 0, "a window the probe scored is missing from the scan"
    np.testing.assert_array_equal(joined.get_column("score").to_numpy(), joined.get_column("expected").to_numpy())
    return joined.height


# --------------------------------------------------------------------------- nothing unpickles


def test_no_module_of_the_package_unpickles_anything():
    offenders = {}
    patterns = {
        "pickle": re.compile(r"\bimport pickle\b|\bpickle\.loads?\b|\bfrom pickle\b"),
        "cloudpickle/joblib/dill": re.compile(r"\b(cloudpickle|joblib|dill)\b"),
        "np.load(allow_pickle=True)": re.compile(r"allow_pickle\s*=\s*True"),
        "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only=True)[^)]*\)"),
        "pandas.read_pickle": re.compile(r"read_pickle"),
    }
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for what, pattern in patterns.items():
            if pattern.search(text):
                offenders.setdefault(str(path.relative_to(PACKAGE)), []).append(what)
    assert not offenders, f"modules that can unpickle: {offenders}"


def _crafted(run_dir: Path, how: str, marker: Path) -> None:
    """Replace a MiniRocket run's state with a payload that creates ``marker`` if it is ever unpickled."""
    payload = pickle.dumps(_Payload(marker))
    spec_path = run_dir / "encoder.json"
    if how == "legacy_pkl":  # the old layout: encoder.json without a state record, beside minirocket.pkl
        spec = json.loads(spec_path.read_text())
        spec.pop("state")
        spec_path.write_text(json.dumps(spec))
        (run_dir / STATE_FILE).unlink()
        (run_dir / LEGACY_STATE_FILE).write_bytes(payload)
    elif how == "pickle_as_npz":
        (run_dir / STATE_FILE).write_bytes(payload)
    elif how == "object_array_in_npz":
        with np.load(run_dir / STATE_FILE) as archive:
            arrays = {k: archive[k] for k in archive.files}
        arrays["parameters.4"] = np.array([_Payload(marker)], dtype=object)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        (run_dir / STATE_FILE).write_bytes(buffer.getvalue())
    else:
        raise AssertionError(how)


CRAFTS = ("legacy_pkl", "pickle_as_npz", "object_array_in_npz")


@pytest.mark.parametrize("how", CRAFTS)
def test_a_crafted_minirocket_state_runs_nothing_through_load_encoder_or_the_scan(sweep, tmp_path, how):
    run_dir = tmp_path / "run"
    shutil.copytree(sweep["runs"]["minirocket"], run_dir)
    marker = tmp_path / "payload_ran"
    _crafted(run_dir, how, marker)
    with pytest.raises((MiniRocketStateError, FileNotFoundError), match=r"minirocket|MiniRocket"):
        load_encoder(run_dir)
    with connect_read_only(sweep["root"] / ds.WAREHOUSE, 1) as con, pytest.raises(ValueError, match="(?i)minirocket"):
        scan_market(run_dir, con=con, spec=sweep["dataset"].spec, config=ScanConfig(threads=1))
    assert serving_problem(run_dir) is not None
    index = pl.DataFrame({"run_id": ["x"], "run_dir": [str(run_dir)], "probe_metrics.val.macro_auprc": [0.9]})
    with pytest.raises(FileNotFoundError, match="can be served"):
        select_best_run(index)
    assert not marker.exists(), "the crafted payload ran"


def test_a_crafted_minirocket_state_runs_nothing_through_the_probe_asset(tmp_path, monkeypatch):
    import dagster as dg

    from screener_ssl_tests.defs.project import load_defs
    from screener_ssl.tracking.latest import latest_partition_run

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        "dataset:\n"
        "  synthetic: {n_tickers: 8, n_days: 300, seed: 1, difficulty: 0.2}\n"
        "  window: {window_max: 32, crop_lengths: [16, 32], min_history: 16, label_horizon: 5}\n"
        "defaults:\n"
        "  backbone: {kind: tcn, embed_dim: 16, hidden_dim: 16, n_layers: 2}\n"
        "  train: {steps: 2, batch_size: 16, seed: 0, threads: 1}\n"
        "  probe: {n_boot: 5, stability_windows: 0, max_train_windows: 500}\n"
        "objectives:\n"
        "  minirocket:\n"
        "    variants: {base: {objective: {n_kernels: 168, fit_windows: 100}}}\n"
    )
    for key, value in {
        "SCREENER_SSL_DATA_DIR": str(tmp_path / "data"), "SCREENER_SSL_SWEEP": str(sweep_file),
        "SCREENER_SSL_BARS": "synthetic", "SCREENER_SSL_LABELS": "synthetic",
    }.items():
        monkeypatch.setenv(key, value)
    defs = load_defs()
    instance = dg.DagsterInstance.ephemeral()

    def materialize(selection, partition=None):
        return dg.materialize(
            list(defs.assets), selection=selection, partition_key=partition, instance=instance,
            resources=defs.resources, raise_on_error=False,
        )

    assert materialize(["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]).success
    assert materialize(["ssl_schema", "pretrained_encoder"], "minirocket|base").success
    run_dir = latest_partition_run(tmp_path / "data", "minirocket", "base")
    for how in ("legacy_pkl", "pickle_as_npz"):
        if how == "pickle_as_npz":  # back to a fitted run, then its state swapped for a pickle
            assert materialize(["ssl_schema", "pretrained_encoder"], "minirocket|base").success
            run_dir = latest_partition_run(tmp_path / "data", "minirocket", "base")
        marker = tmp_path / f"payload_ran_{how}"
        _crafted(run_dir, how, marker)
        result = materialize(["probe_metrics"], "minirocket|base")
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "minirocket" in str(failure.event_specific_data.error).lower()
        assert not marker.exists(), f"the crafted payload ({how}) ran in the probe"
        assert not (run_dir / "probe_metrics.json").exists()


@pytest.mark.parametrize("field, value, message", [
    ("parameters.1", lambda a: a + 1000, "channel indices"),
    ("parameters.2", lambda a: a * 7, "dilations"),
    ("parameters.4", lambda a: a[:-1], "biases"),
    ("parameters.4", lambda a: np.where(np.arange(a.size) == 0, np.nan, a).astype(np.float32), "biases"),
])
def test_tampered_minirocket_arrays_are_refused_naming_the_file(sweep, tmp_path, field, value, message):
    run_dir = tmp_path / "run"
    shutil.copytree(sweep["runs"]["minirocket"], run_dir)
    with np.load(run_dir / STATE_FILE) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays[field] = value(arrays[field]).astype(arrays[field].dtype)
    np.savez(run_dir / STATE_FILE, **arrays)
    with pytest.raises(MiniRocketStateError, match=rf"minirocket\.npz.*{message}"):
        load_encoder(run_dir)


@pytest.mark.parametrize("transform", ["minirocket", "multirocket"])
@pytest.mark.parametrize("channels, include_mask", [(3, True), (1, False)])
def test_minirocket_round_trip_rebuilds_the_transform_from_arrays(tmp_path, transform, channels, include_mask):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 24, channels)).astype(np.float32)
    observed = rng.random(x.shape) > 0.1
    config = MiniRocketConfig(transform=transform, n_kernels=168, include_mask=include_mask, seed=3)
    fitted = MiniRocketEncoder(config, channels).fit_prepared(x, observed)
    fitted.save(tmp_path)
    assert not (tmp_path / LEGACY_STATE_FILE).exists()
    with np.load(tmp_path / STATE_FILE, allow_pickle=False) as archive:  # plain arrays only
        assert all(archive[k].dtype != object for k in archive.files)
    loaded = load_encoder(tmp_path)
    assert loaded.n_parameters == fitted.n_parameters > 0
    np.testing.assert_array_equal(loaded.encode_prepared(x, observed), fitted.encode_prepared(x, observed))


# --------------------------------------------------------------------------- the scan serves what was probed


KINDS = ["minirocket", "ts2vec_maxpool", "random_init", "raw_features", "shape_free", "supervised",
         "chart_distill", "chart_teacher", "finetuned_ts2vec_maxpool"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_scan_scores_exactly_what_the_probe_scored(sweep, kind):
    assert _scan_equals_probe(sweep["runs"][kind], sweep["root"], sweep["dataset"].spec) > 0


@pytest.mark.parametrize("best", ["minirocket", "ts2vec_maxpool"])
def test_the_scan_after_a_sweep_serves_the_best_servable_run_as_probed(sweep, tmp_path, best):
    models = sweep["root"] / "models"
    # A decoy with a higher val AUPRC that the scan cannot serve (a pickled MiniRocket state).
    decoy = models / "ssl_tcn_minirocket" / "_pretrain" / f"zz-decoy-{best}"
    shutil.copytree(sweep["runs"]["minirocket"], decoy)
    metrics = json.loads((decoy / "probe_metrics.json").read_text())
    metrics["val"]["macro_auprc"] = 0.99
    (decoy / "probe_metrics.json").write_text(json.dumps(metrics))
    (decoy / "run_meta.json").write_text(json.dumps({**json.loads((decoy / "run_meta.json").read_text()),
                                                     "run_id": decoy.name}))
    marker = tmp_path / "payload_ran"
    _crafted(decoy, "legacy_pkl", marker)
    try:
        index = build_index(models)
        chosen = index.filter(pl.col("run_dir").is_in([str(sweep["runs"][best]), str(decoy)]))
        assert chosen.height == 2
        skipped: list[dict] = []
        assert select_best_run(chosen, skipped) == sweep["runs"][best]
        assert [s["model_dir"] for s in skipped] == [str(decoy)] and "minirocket.pkl" in skipped[0]["reason"]
        assert _scan_equals_probe(select_best_run(chosen), sweep["root"], sweep["dataset"].spec) > 0
    finally:
        shutil.rmtree(decoy)
    assert not marker.exists()


def test_a_reference_encoder_better_by_val_is_selected_and_served(sweep):
    run_dir = sweep["runs"]["chart_distill"]
    index = build_index(sweep["root"] / "models").filter(pl.col("run_dir") == str(run_dir))
    column = "reference.teacher.probe_metrics.val.macro_auprc"
    assert index.height == 1 and column in index.columns
    own, teacher = index.get_column("probe_metrics.val.macro_auprc")[0], index.get_column(column)[0]
    # Whichever of the student and its teacher is better by val is the one served.
    assert select_best_run(index) == (run_dir / "teacher" if teacher > own else run_dir)
    student_worse = index.with_columns(pl.lit(min(own, teacher) / 2).alias("probe_metrics.val.macro_auprc"))
    assert select_best_run(student_worse) == run_dir / "teacher"
    assert _scan_equals_probe(select_best_run(student_worse), sweep["root"], sweep["dataset"].spec) > 0


def test_maxpool_runs_record_the_pooling_their_probe_used(sweep):
    for kind in ("ts2vec_maxpool", "finetuned_ts2vec_maxpool"):
        run_dir = sweep["runs"][kind]
        assert json.loads((run_dir / "encoder.json").read_text())["pooling"] == "max"
        head = json.loads((run_dir / HEAD_FILE).read_text())
        assert head["embedding"]["pooling"] == "max" and head["embedding"]["encoder"]["pooling"] == "max"
        assert load_encoder(run_dir).pooling == "max"


def test_the_scan_refuses_a_head_whose_embedding_record_disagrees_or_is_missing(sweep, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(sweep["runs"]["ts2vec_maxpool"], run_dir)
    head_path = run_dir / HEAD_FILE
    original = json.loads(head_path.read_text())
    spec = sweep["dataset"].spec
    for edit, message in (
        (lambda h: h["embedding"].update(normalization="expanding_zscore"), "normalization"),
        (lambda h: h["embedding"].update(pooling="last"), "pooling"),  # max-pool head on last-step embeddings
        (lambda h: h.pop("embedding"), "records no embedding settings"),
    ):
        doc = json.loads(json.dumps(original))
        edit(doc)
        head_path.write_text(json.dumps(doc))
        with connect_read_only(sweep["root"] / ds.WAREHOUSE, 1) as con, pytest.raises(ValueError, match=message):
            scan_market(run_dir, con=con, spec=spec, config=ScanConfig(threads=1))
        assert serving_problem(run_dir) is not None


# --------------------------------------------------------------------------- names do not move strata


def test_stratified_sample_is_the_same_whatever_the_pattern_order():
    rng = np.random.default_rng(1)
    labels = (rng.random((4000, 4)) < [0.01, 0.03, 0.002, 0.05]).astype(np.uint8)
    positions = np.arange(4000) * 3 + 7
    base = stratified_subsample(positions, labels, 600, np.random.default_rng(0))
    assert base.shape == (600,) and (labels[(base - 7) // 3].sum(axis=0) > 0).all()
    for order in ([2, 0, 3, 1], [3, 2, 1, 0]):
        np.testing.assert_array_equal(
            stratified_subsample(positions, labels[:, order], 600, np.random.default_rng(0)), base
        )


def _renamed(dataset, old: str, new: str):
    """``dataset`` with pattern ``old`` called ``new``: same labels, columns in sorted-name order."""
    names = [new if p == old else p for p in dataset.patterns]
    order = np.argsort(names, kind="stable")
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    events = dataset.events.events.with_columns(
        pl.col("pattern").replace(old, new),
        pl.Series("pattern_id", remap[dataset.events.events.get_column("pattern_id").to_numpy()]).cast(
            dataset.events.events.schema["pattern_id"]
        ),
    )
    patterns = tuple(names[i] for i in order)
    return replace(
        dataset,
        labels=dataset.labels[:, order],
        patterns=patterns,
        events=replace(dataset.events, events=events, patterns=patterns),
    )


def test_renaming_a_pattern_leaves_every_other_patterns_probe_result(sweep):
    dataset = sweep["dataset"]
    encoder = load_encoder(sweep["runs"]["random_init"])
    # A train sample smaller than the split, so the stratified subsample decides which windows are fitted.
    config = ProbeConfig(max_train_windows=300, train_windows_per_dim=0, n_boot=10, stability_windows=0)
    old = dataset.patterns[0]
    renamed = _renamed(dataset, old, "zz_renamed")
    assert renamed.patterns[-1] == "zz_renamed" and renamed.patterns != dataset.patterns
    a = run_probe(encoder, dataset, config, log=_quiet).metrics
    b = run_probe(encoder, renamed, config, log=_quiet).metrics
    for name in dataset.patterns:
        other = "zz_renamed" if name == old else name
        assert a["per_pattern"][name]["auprc"] == b["per_pattern"][other]["auprc"], name
        assert a["val"]["per_pattern"][name] == b["val"]["per_pattern"][other], name


# --------------------------------------------------------------------------- the array API


def test_pretrain_api_names_what_to_use_for_minirocket():
    from screener_ssl.ssl.api import pretrain

    x = np.random.default_rng(0).normal(size=(4, 40, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'minirocket'.*MiniRocketEncoder.*fit_prepared"):
        pretrain(x, objective="minirocket")
