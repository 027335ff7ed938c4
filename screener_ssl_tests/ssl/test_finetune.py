"""Supervised classifier: learning, calibration, determinism, resume, train-only sampling, causality,
pretrained-encoder loading with schema locking, and the run directory it writes."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from screener_ssl.data import dataset as ds
from screener_ssl.data.synthetic import SyntheticMarketConfig
from screener_ssl.data.windows import WindowSpec
from screener_ssl.store.fingerprint import fingerprint
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig
from screener_ssl.ssl.encoder import load_encoder
from screener_ssl.ssl.classifier_sampler import ClassifierBatchSampler
from screener_ssl.ssl.finetune import FinetuneConfig, predict_positions, scratch_backbone, train_classifier
from screener_ssl.runs.finetune import write_classifier_run
from screener_ssl.runs.run_dirs import HEAD_FILE, load_classifier, load_pretrained_backbone
from screener_ssl.runs.pretrain import pretrain_partition
from screener_ssl.ssl.schema import SchemaMismatchError, SSLSchema
from screener_ssl.ssl.trainer import NonFiniteLossError, TrainConfig
from screener_ssl.runs.sweep import SweepPoint

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
SMALL = BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2)
RUN_FILES = (
    "encoder.pt",
    "encoder.json",
    HEAD_FILE,
    "schema.json",
    "pretrain_config.json",
    "experiment.json",
    "run_meta.json",
)
QUIET = lambda _m: None  # noqa: E731


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_data")
    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=12, n_days=400, seed=0, difficulty=0.2))
    ds.build_features(root, SPEC.volume_lookback)
    ds.build_windowed_dataset(root, SPEC)
    ds.build_labels(root, "synthetic", SPEC)
    return ds.load_dataset(root)


def _short(seed: int = 0, **overrides) -> FinetuneConfig:
    return FinetuneConfig(
        **{"steps": 12, "batch_size": 16, "lr": 3e-3, "seed": seed, "threads": 1, "log_every": 4, **overrides}
    )


def _train(dataset, config: FinetuneConfig, **kwargs):
    backbone = scratch_backbone(SMALL, dataset.spec.n_features, config.seed)
    return train_classifier(backbone, dataset, config, log=QUIET, **kwargs)


def _weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.fixture(scope="module")
def scratch(dataset):
    # Sized so the from-scratch classifier beats the prevalence baseline for every seed tried (0-4).
    config = FinetuneConfig(steps=300, batch_size=32, lr=3e-3, seed=0, threads=1, log_every=100)
    return config, _train(dataset, config)


def test_training_lowers_bce_and_beats_the_constant_predictor_on_val(dataset, scratch):
    _, result = scratch
    assert result.final_loss < 0.5 * result.first_loss
    # Constant predictor at the train prevalence, computed here independently of the module.
    train_pos = dataset.index.rows_of("train")
    n = len(train_pos)
    prevalence = np.clip(dataset.labels[train_pos].mean(axis=0), 0.5 / n, 1 - 0.5 / n)
    y = dataset.labels[result.val_positions].astype(np.float64)
    constant = float(np.mean(-(y * np.log(prevalence) + (1 - y) * np.log1p(-prevalence))))
    assert result.val_baseline_loss == pytest.approx(constant, rel=1e-9)
    assert result.val_loss < 0.95 * constant  # seeds 0-4 all land at 0.72-0.92
    # Only val windows were scored.
    assert (dataset.index.split[result.val_positions] == 1).all()


def test_prior_correction_calibrates_the_enriched_batches_back_to_train_prevalence(dataset, scratch):
    _, result = scratch
    shift = np.asarray(result.prior_shift)
    # Positives are over-sampled, so the correction lowers every pattern's bias that has train positives.
    has_positives = dataset.labels[dataset.index.rows_of("train")].any(axis=0)
    assert (shift[has_positives] > 1.0).all() and (shift[~has_positives] == 0).all()
    logits = predict_positions(result.classifier, dataset, result.val_positions).astype(np.float64)
    y = torch.from_numpy(dataset.labels[result.val_positions].astype(np.float64))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    corrected = float(bce(torch.from_numpy(logits), y))
    uncorrected = float(bce(torch.from_numpy(logits + shift), y))
    assert corrected == pytest.approx(result.val_loss, rel=1e-5)
    assert corrected < 0.7 * uncorrected


def test_same_seed_gives_bit_identical_weights_and_another_seed_differs(dataset):
    a = _train(dataset, _short(seed=3)).classifier
    b = _train(dataset, _short(seed=3)).classifier
    c = _train(dataset, _short(seed=4)).classifier
    assert torch.equal(_weights(a), _weights(b))
    assert not torch.equal(_weights(a), _weights(c))


def test_a_killed_run_resumes_to_the_same_weights(dataset, tmp_path):
    config = _short(seed=5, checkpoint_every=4, jitter_sigma=0.05)
    full = _train(dataset, config)
    checkpoint = tmp_path / "clf.pt"

    class Killed(Exception):
        pass

    def kill_at_step_8(message: str) -> None:
        if message.startswith("step 8/"):
            raise Killed

    with pytest.raises(Killed):
        backbone = scratch_backbone(SMALL, dataset.spec.n_features, config.seed)
        train_classifier(backbone, dataset, config, log=kill_at_step_8, checkpoint_path=checkpoint)
    assert checkpoint.exists()
    other = config.model_copy(update={"lr": 1e-3})
    with pytest.raises(ValueError, match="lr: expected"):
        train_classifier(
            scratch_backbone(SMALL, dataset.spec.n_features, 0), dataset, other, log=QUIET, checkpoint_path=checkpoint
        )
    # The checkpoint is from step 4 (the log at step 8 killed the run before its own checkpoint).
    messages: list[str] = []
    resumed = train_classifier(
        scratch_backbone(SMALL, dataset.spec.n_features, config.seed),
        dataset,
        config,
        log=messages.append,
        checkpoint_path=checkpoint,
    )
    assert resumed.resumed_from_step == 4
    assert any("resumed" in m for m in messages)
    assert torch.equal(_weights(full.classifier), _weights(resumed.classifier))
    assert resumed.losses == full.losses
    assert not checkpoint.exists()  # a finished run cleans up


def test_batches_come_from_the_train_split_only_with_the_positive_share(dataset):
    sampler = ClassifierBatchSampler(dataset, batch_size=40, positive_fraction=0.25, seed=0)
    last_train_day = np.datetime64(dataset.index.split_bounds["train"][1])
    drawn = []
    for _ in range(50):
        positions = sampler.sample()
        assert positions.shape == (40,)
        assert (dataset.index.split[positions] == 0).all()
        decision_dates = dataset.store.dates[dataset.index.decision_row[positions]]
        assert (decision_dates <= last_train_day).all()
        # The first round(0.25 * 40) = 10 are positives; the rest are drawn uniformly.
        assert dataset.labels[positions[:10]].any(axis=1).all()
        drawn.append(positions)
    drawn = np.concatenate(drawn)
    # Seeded and long enough that the batch label rate sits near its stated expectation.
    observed = dataset.labels[drawn].mean(axis=0)
    expected = sampler.sampled_prevalence(dataset.labels)
    assert np.abs(observed - expected).max() < 0.02
    assert observed.sum() > 3 * dataset.labels[dataset.index.rows_of("train")].mean(axis=0).sum()


def test_no_positive_train_windows_is_refused(dataset):
    unlabeled = dataclasses.replace(dataset, labels=np.zeros_like(dataset.labels))
    with pytest.raises(ValueError, match="no window with a positive label"):
        ClassifierBatchSampler(unlabeled, batch_size=16, positive_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="no pattern labels"):
        ClassifierBatchSampler(dataclasses.replace(dataset, labels=None), 16, 0.5, 0)


def test_config_ranges_are_checked():
    with pytest.raises(ValueError):
        FinetuneConfig(positive_fraction=1.5)
    with pytest.raises(ValueError):
        FinetuneConfig(encoder_lr_scale=-0.1)
    with pytest.raises(ValueError):
        FinetuneConfig(step=10)  # typo of steps: extra fields are refused


def test_non_finite_loss_stops_training(dataset):
    backbone = scratch_backbone(SMALL, dataset.spec.n_features, 0)
    with torch.no_grad():
        next(backbone.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 0"):
        train_classifier(backbone, dataset, _short(), log=QUIET)


def test_logits_ignore_future_bars_and_the_censored_fields_of_the_decision_bar(dataset, scratch):
    classifier = scratch[1].classifier
    positions = dataset.index.rows_of("test")[[5, 200, -1]]
    # One window per call throughout: a different batch shape may round the last bit differently.
    base = np.concatenate([predict_positions(classifier, dataset, positions[k : k + 1]) for k in range(3)])
    names = dataset.spec.feature_names
    censored = [i for i, name in enumerate(names) if name not in dataset.spec.open_known_features]
    assert censored and len(censored) < len(names)
    rng = np.random.default_rng(0)
    for k, position in enumerate(positions):
        d = int(dataset.index.decision_row[position])
        future = dataset.store.values.copy()
        future[d + 1 :] = rng.normal(0, 50, size=future[d + 1 :].shape)
        future[d, censored] = rng.normal(0, 50, size=len(censored))
        after = predict_positions(classifier, dataset, positions[k : k + 1], values=future)
        assert np.array_equal(after, base[k : k + 1])
        # A visible bar does move the logits, so the equality above is not vacuous.
        past = dataset.store.values.copy()
        past[d - 1] += 3.0
        moved = predict_positions(classifier, dataset, positions[k : k + 1], values=past)
        assert not np.allclose(moved, base[k : k + 1])


@pytest.fixture(scope="module")
def pretrained_run(dataset, tmp_path_factory):
    point = SweepPoint(
        objective="masked_recon",
        variant="tiny",
        backbone=SMALL,
        train=TrainConfig(steps=3, batch_size=16, threads=1, log_every=10),
        augment=AugmentConfig(),
        objective_config={},
        probe={},
    )
    return pretrain_partition(dataset, point, tmp_path_factory.mktemp("models_root"), log=QUIET)


def test_finetune_loads_a_pretrained_encoder_and_trains_it_end_to_end(dataset, pretrained_run, tmp_path):
    backbone, schema = load_pretrained_backbone(pretrained_run.run_dir, dataset.spec)
    assert schema == pretrained_run.schema and schema.objective == "masked_recon"
    source_weights = _weights(backbone).clone()
    assert torch.equal(source_weights, _weights(load_encoder(pretrained_run.run_dir).backbone))

    tuned = train_classifier(backbone, dataset, _short(encoder_lr_scale=0.1), log=QUIET)
    assert torch.equal(_weights(backbone), source_weights)  # the caller's backbone is untouched
    assert not torch.equal(_weights(tuned.classifier.backbone), source_weights)
    # encoder_lr_scale=0 freezes the encoder (separate param groups); the head still learns.
    frozen = train_classifier(backbone, dataset, _short(encoder_lr_scale=0.0), log=QUIET)
    assert torch.equal(_weights(frozen.classifier.backbone), source_weights)
    assert not torch.equal(_weights(frozen.classifier.head), _weights(tuned.classifier.head))

    source = {"kind": "finetune", "from_run_dir": str(pretrained_run.run_dir)}
    out_dir, _ = write_classifier_run(
        tuned, dataset, tmp_path, "ssl_tcn_classifier", "base", source, _short(encoder_lr_scale=0.1), SMALL, schema
    )
    assert SSLSchema.from_json((out_dir / "schema.json").read_text()) == schema
    config = json.loads((out_dir / "pretrain_config.json").read_text())
    assert config["source"] == source
    assert json.loads((out_dir / "experiment.json").read_text())["objective"] == "masked_recon"


@pytest.mark.parametrize("field,value", [("window_max", 48), ("label_horizon", 10)])
def test_a_pretrained_run_for_another_window_spec_is_refused_naming_the_field(
    dataset, pretrained_run, field, value
):
    other = WindowSpec.model_validate({**dataset.spec.model_dump(), field: value, "embargo": None})
    with pytest.raises(SchemaMismatchError, match=field):
        load_pretrained_backbone(pretrained_run.run_dir, other)


def test_write_classifier_run_from_scratch_round_trips(dataset, scratch, tmp_path):
    config, result = scratch
    out_dir, data_version = write_classifier_run(
        result,
        dataset,
        tmp_path,
        "supervised_tcn",
        "base",
        {"kind": "from_scratch"},
        config,
        SMALL,
        None,
        run_context={"dagster_run_id": "abc"},
    )
    assert out_dir.parent == tmp_path / "models" / "supervised_tcn" / "_pretrain"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(RUN_FILES)
    assert [p.name for p in out_dir.parent.iterdir()] == [out_dir.name]  # no temp dir left behind

    schema = SSLSchema.from_json((out_dir / "schema.json").read_text())
    assert schema.objective == "supervised" and schema.window_spec == dataset.spec and schema.encoder == SMALL
    weights_hash = hashlib.sha256((out_dir / "encoder.pt").read_bytes()).hexdigest()
    assert data_version == fingerprint({"weights": weights_hash, "schema": schema.fingerprint})

    positions = dataset.index.rows_of("val")[:64]
    x, observed = dataset.windows(positions)
    with torch.inference_mode():
        expected = result.classifier.backbone.pooled(torch.from_numpy(x), torch.from_numpy(observed)).numpy()
    assert np.array_equal(load_encoder(out_dir).encode_prepared(x, observed), expected)
    assert np.array_equal(
        predict_positions(load_classifier(out_dir), dataset, positions),
        predict_positions(result.classifier, dataset, positions),
    )

    metrics = json.loads((out_dir / "pretrain_config.json").read_text())["metrics"]
    assert metrics["val_loss"] == pytest.approx(result.val_loss)
    assert metrics["steps"] == 300 and metrics["final_loss"] < metrics["first_loss"]
    meta = json.loads((out_dir / "run_meta.json").read_text())
    assert meta["dagster_run_id"] == "abc" and meta["seed"] == 0 and meta["partition"] == "supervised|base"
    experiment = json.loads((out_dir / "experiment.json").read_text())
    assert experiment["schema_fingerprint"] == schema.fingerprint and experiment["training"] == "from_scratch"


def test_a_failed_write_leaves_no_run_dir(dataset, scratch, tmp_path, monkeypatch):
    config, result = scratch

    def broken_git_sha():
        raise RuntimeError("disk full")

    monkeypatch.setattr("screener_ssl.runs.writer.git_sha", broken_git_sha)
    with pytest.raises(RuntimeError, match="disk full"):
        write_classifier_run(
            result, dataset, tmp_path, "supervised_tcn", "base", {"kind": "from_scratch"}, config, SMALL, None
        )
    parent = tmp_path / "models" / "supervised_tcn" / "_pretrain"
    assert not parent.exists() or list(parent.iterdir()) == []


def test_backbone_config_must_match_the_trained_backbone(dataset, scratch, tmp_path):
    config, result = scratch
    with pytest.raises(ValueError, match="embed_dim"):
        write_classifier_run(
            result, dataset, tmp_path, "supervised_tcn", "base", {"kind": "from_scratch"}, config,
            SMALL.model_copy(update={"embed_dim": 32}), None,
        )


def test_model_selection_on_val_keeps_the_best_checked_step(dataset, monkeypatch):
    import screener_ssl.ssl.finetune as finetune

    config = _short(checkpoint_every=4)  # checks at steps 4, 8 and 12
    last = _train(dataset, config.model_copy(update={"select_on_val": False}))
    assert last.selection_history == [] and last.selected_step == 12
    real = _train(dataset, config)
    assert [s for s, _ in real.selection_history] == [4, 8, 12]
    best = max(real.selection_history, key=lambda sv: sv[1])
    assert real.selected_step == best[0]
    # A val score that only falls: the weights of step 4 are kept, not the last step's.
    scores = iter([0.9, 0.5, 0.1])
    monkeypatch.setattr(finetune, "val_macro_auprc", lambda logits, labels: next(scores))
    early = _train(dataset, config)
    assert early.selected_step == 4
    assert not torch.equal(_weights(early.classifier.backbone), _weights(last.classifier.backbone))
