"""Label budgets: seeded draws of labelled tickers, heads that read only their draw's labels, and one
draw shared by the frozen probe, the finetune, supervised-from-scratch and MiniRocket."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from screener_ssl.data import dataset as ds
from screener_ssl.data.label_budget import (
    draw_labelled_tickers,
    label_draws,
    labelled_rows,
    restrict_to_labelled,
    train_tickers,
)
from screener_ssl.data.windows import WindowSpec
from screener_ssl.probe.label_budgets import RetrainPerDraw, draw_train_positions, run_label_budgets
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.positions import eval_positions
from screener_ssl.probe.probe import run_probe
from screener_ssl.runs import label_budgets as runs_budgets
from screener_ssl.runs.pretrain import pretrain_partition
from screener_ssl.runs.sweep import SweepPoint
from screener_ssl.ssl import finetune as ssl_finetune
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones import BackboneConfig, build_backbone
from screener_ssl.ssl.encoder import Encoder
from screener_ssl.ssl.finetune import FinetuneConfig, scratch_backbone, train_classifier
from screener_ssl.ssl.trainer import TrainConfig
from screener_ssl_tests.markets import synthetic_dataset

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
SMALL = BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2)
FAST = dict(n_boot=20, stability_windows=0, max_val_windows=600, max_test_windows=800, max_train_windows=400,
            train_windows_per_dim=0)
BUDGETS = dict(label_budgets=(3, 6), label_draws=3)
QUIET = lambda _m: None  # noqa: E731


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> ds.Dataset:
    root = tmp_path_factory.mktemp("budget_market")
    return synthetic_dataset(root, SPEC, n_tickers=16, n_days=400)


def raw_encoder() -> Encoder:
    return Encoder(build_backbone(BackboneConfig(kind="raw_window", patch_len=4), SPEC.n_features), normalization="none")


def poisoned(dataset: ds.Dataset, keep: np.ndarray, seed: int = 1) -> ds.Dataset:
    """The dataset with the labels of every train window outside ``keep`` replaced by noise."""
    labels = dataset.labels.copy()
    train = dataset.index.rows_of("train")
    outside = train[~np.isin(train, keep)]
    labels[outside] = np.random.default_rng(seed).integers(0, 2, size=labels[outside].shape, dtype=labels.dtype)
    assert not np.array_equal(labels, dataset.labels)
    return dataclasses.replace(dataset, labels=labels)


# --------------------------------------------------------------------------- the draws


def test_the_same_seed_gives_the_same_draw_and_draws_differ(dataset):
    names = train_tickers(dataset)
    assert draw_labelled_tickers(names, 5, 0, 0) == draw_labelled_tickers(list(reversed(names)), 5, 0, 0)
    assert len(set(draw_labelled_tickers(names, 5, 0, 0))) == 5
    picks = {draw_labelled_tickers(names, 5, d, 0) for d in range(3)} | {draw_labelled_tickers(names, 5, 0, 1)}
    assert len(picks) == 4  # other draw numbers and another seed give other tickers
    first = label_draws(dataset, (3, 6), 3, seed=0)
    again = label_draws(dataset, (3, 6), 3, seed=0)
    assert [(d.budget, d.draw, d.tickers) for d in first] == [(d.budget, d.draw, d.tickers) for d in again]
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(first, again))


def test_a_draw_is_every_train_window_of_its_tickers_and_nothing_else(dataset):
    draw = label_draws(dataset, (4,), 1, seed=0)[0]
    names = np.asarray(dataset.store.tickers, dtype=object)[dataset.index.ticker_id[draw.rows]]
    assert set(names) == set(draw.tickers)
    assert (dataset.index.split[draw.rows] == 0).all()
    train = dataset.index.rows_of("train")
    in_tickers = np.isin(np.asarray(dataset.store.tickers, dtype=object)[dataset.index.ticker_id[train]], draw.tickers)
    assert np.array_equal(np.sort(train[in_tickers]), draw.rows)


def test_draws_do_not_depend_on_pattern_names_or_labels(dataset):
    reversed_patterns = dataclasses.replace(
        dataset, patterns=tuple(f"renamed_{p}" for p in reversed(dataset.patterns)), labels=dataset.labels[:, ::-1].copy()
    )
    a = label_draws(dataset, (3, 6), 2, seed=0)
    b = label_draws(reversed_patterns, (3, 6), 2, seed=0)
    assert [d.tickers for d in a] == [d.tickers for d in b]
    assert all(np.array_equal(x.rows, y.rows) for x, y in zip(a, b))


def test_bad_budgets_are_refused_clearly(dataset):
    with pytest.raises(ValueError, match="exceeds the 16 tickers"):
        label_draws(dataset, (17,), 1, seed=0)
    with pytest.raises(ValueError, match="ascending"):
        ProbeConfig(label_budgets=(20, 5))
    with pytest.raises(ValueError, match="not tickers of the dataset"):
        labelled_rows(dataset, ["NOPE"])


# --------------------------------------------------------------------------- no head reads a label outside its draw


def test_the_frozen_probe_at_a_budget_reads_only_its_draws_labels(dataset):
    config = ProbeConfig(**FAST, **BUDGETS)
    clean = run_label_budgets(raw_encoder(), dataset, config, log=QUIET)
    union = np.unique(np.concatenate([d.rows for d in label_draws(dataset, (3, 6), 3, seed=0)]))
    dirty = run_label_budgets(raw_encoder(), poisoned(dataset, union), config, log=QUIET)
    assert clean.predictions.equals(dirty.predictions)
    assert clean.metrics["per_budget"] == dirty.metrics["per_budget"]
    # ... and the head rows of each draw lie inside its labelled rows.
    for draw in label_draws(dataset, (3, 6), 3, seed=0):
        assert np.isin(draw_train_positions(dataset, config, draw, 32), draw.rows).all()
    # Six (budget, draw) prediction sets on the same test rows, and a pooled CI per budget.
    assert clean.predictions.group_by(["budget", "draw"]).len().height == 6
    assert set(clean.predictions.get_column("split").unique()) == {"test"}
    for rep in clean.metrics["per_budget"].values():
        assert rep["ci_low"] <= rep["auprc"] <= rep["ci_high"] and rep["n_draws"] == 3
    assert clean.metrics["label_efficiency"] == clean.metrics["per_budget"]["3"]["auprc"]


def test_reusing_the_full_probes_val_and_test_embeddings_changes_nothing(dataset):
    config = ProbeConfig(**FAST, **BUDGETS)
    full = run_probe(raw_encoder(), dataset, config, log=QUIET)
    logs: list[str] = []
    reused = run_label_budgets(raw_encoder(), dataset, config, log=logs.append, embedded=full.embeddings)
    fresh = run_label_budgets(raw_encoder(), dataset, config, log=QUIET)
    assert any("reused from the full-label probe" in line for line in logs)
    assert reused.predictions.equals(fresh.predictions)
    # The full probe's test rows are the budget probe's test rows.
    test = full.predictions.filter(pl.col("split") == "test").select("ticker", "decision_row")
    assert test.equals(reused.predictions.filter((pl.col("budget") == 3) & (pl.col("draw") == 0)).select(
        "ticker", "decision_row"))


def test_a_union_of_draws_over_the_matrix_budget_is_never_embedded_whole(dataset, monkeypatch):
    """A wide embedding: each draw's rows fit the train-matrix budget, the union of all draws
    does not, so the union is not embedded at once; the heads and their scores do not change."""
    from screener_ssl.probe import label_budgets as lb

    dim = raw_encoder().embed_dim
    draws = label_draws(dataset, (3, 6), 3, seed=0)
    loose = ProbeConfig(**FAST, **BUDGETS)
    heads = {d.key: draw_train_positions(dataset, loose, d, dim) for d in draws}
    largest = max(len(p) for p in heads.values())
    union = len(np.unique(np.concatenate(list(heads.values()))))
    assert union > largest  # the draws differ, so the union is wider than any one head
    tight = ProbeConfig(**{**FAST, **BUDGETS, "train_matrix_budget_gib": largest * 4 * dim / 2**30})
    # Each draw's head rows fit the tight budget as they are.
    assert all(len(draw_train_positions(dataset, tight, d, dim)) == len(heads[d.key]) for d in draws)

    sizes: list[int] = []
    real = lb.embed_positions

    def counting(encoder, data, positions, batch_size):
        sizes.append(len(positions))
        return real(encoder, data, positions, batch_size)

    monkeypatch.setattr(lb, "embed_positions", counting)
    logs: list[str] = []
    bounded = run_label_budgets(raw_encoder(), dataset, tight, log=logs.append)
    train_calls = [n for n in sizes if n not in {len(p) for p in eval_positions(dataset, tight)}]
    assert train_calls and max(train_calls) <= largest
    assert any("exceed train_matrix_budget_gib" in line for line in logs)
    sizes.clear()
    whole = run_label_budgets(raw_encoder(), dataset, loose, log=QUIET)
    assert union in sizes  # with room, the union is embedded once
    assert bounded.predictions.equals(whole.predictions)
    assert bounded.metrics["per_budget"] == whole.metrics["per_budget"]


def test_run_probe_with_labelled_rows_reads_only_those_labels(dataset):
    draw = label_draws(dataset, (4,), 1, seed=0)[0]
    config = ProbeConfig(**FAST)
    clean = run_probe(raw_encoder(), dataset, config, log=QUIET, labelled_rows=draw.rows)
    dirty = run_probe(raw_encoder(), poisoned(dataset, draw.rows), config, log=QUIET, labelled_rows=draw.rows)
    assert clean.predictions.equals(dirty.predictions)
    full = run_probe(raw_encoder(), poisoned(dataset, draw.rows), config, log=QUIET)
    assert not full.predictions.equals(clean.predictions)  # without the argument the poison is read


def test_train_classifier_with_labelled_rows_reads_only_those_labels(dataset):
    draw = label_draws(dataset, (4,), 1, seed=0)[0]
    config = FinetuneConfig(steps=6, batch_size=16, seed=0, threads=1, log_every=3, checkpoint_every=3)

    def weights(data):
        fitted = train_classifier(scratch_backbone(SMALL, SPEC.n_features, 0), data, config, log=QUIET,
                                  labelled_rows=draw.rows)
        return torch.cat([p.detach().flatten() for p in fitted.classifier.parameters()]), fitted

    clean, fitted = weights(dataset)
    dirty, _ = weights(poisoned(dataset, draw.rows))
    assert torch.equal(clean, dirty)
    assert fitted.train_windows == len(draw.rows)
    assert [s for s, _ in fitted.selection_history] == [3, 6] and fitted.selected_step in (3, 6)


# --------------------------------------------------------------------------- one draw for every head


@pytest.fixture(scope="module")
def pretrained(dataset, tmp_path_factory):
    point = SweepPoint(
        objective="masked_recon", variant="tiny", backbone=SMALL,
        train=TrainConfig(steps=3, batch_size=16, threads=1, log_every=10), augment=AugmentConfig(),
        objective_config={}, probe={},
    )
    return point, pretrain_partition(dataset, point, tmp_path_factory.mktemp("models"), log=QUIET)


def test_probe_finetune_supervised_and_minirocket_see_the_same_labelled_rows(dataset, pretrained, monkeypatch):
    point, run = pretrained
    config = ProbeConfig(**FAST, **BUDGETS)
    expected = [d.rows for d in label_draws(dataset, (3, 6), 3, seed=0)]
    seen: dict[str, list[np.ndarray]] = {}

    def recording(name, real):
        def wrapper(*args, labelled_rows=None, **kwargs):
            seen.setdefault(name, []).append(np.asarray(labelled_rows))
            return real(*args, labelled_rows=labelled_rows, **kwargs)
        return wrapper

    short = {"steps": 2, "batch_size": 8, "log_every": 1, "checkpoint_every": 1}
    tiny_train = point.train.model_copy(update=short)
    # The finetune (runs.label_budgets) and supervised (its registry entry, via ssl.finetune) both train here.
    monkeypatch.setattr(runs_budgets, "train_classifier", recording("finetune", train_classifier))
    monkeypatch.setattr(ssl_finetune, "train_classifier", recording("supervised", ssl_finetune.train_classifier))
    finetune_point = point.model_copy(update={"train": tiny_train})
    runs_budgets.probe_label_budgets(finetune_point, dataset, run.run_dir, config, finetune_source=run.run_dir,
                                     log=QUIET)
    supervised = point.model_copy(update={"objective": "supervised", "train": tiny_train})
    runs_budgets.probe_label_budgets(supervised, dataset, run.run_dir, config, log=QUIET)
    for name in ("finetune", "supervised"):
        assert len(seen[name]) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(seen[name], expected)), name

    # Frozen encoders (an SSL run, MiniRocket) fit their heads on subsets of the same rows: the draw
    # is made from (seed, budget, draw) alone, never from the encoder.
    minirocket = point.model_copy(update={"objective": "minirocket"})
    assert not isinstance(runs_budgets.budget_encoder(minirocket, dataset, run.run_dir), RetrainPerDraw)
    frozen = run_label_budgets(raw_encoder(), dataset, config, log=QUIET)
    per_draw = frozen.metrics["per_draw"]
    assert [tuple(r["tickers"]) for r in per_draw] == [d.tickers for d in label_draws(dataset, (3, 6), 3, seed=0)]


def test_restrict_to_labelled_keeps_everything_without_a_budget():
    positions = np.arange(10)
    assert np.array_equal(restrict_to_labelled(positions, None), positions)
    assert np.array_equal(restrict_to_labelled(positions, np.array([2, 5, 20])), np.array([2, 5]))


def test_supervised_and_the_finetune_at_a_budget_read_only_their_draws_labels(dataset, pretrained):
    point, run = pretrained
    config = ProbeConfig(**FAST, label_budgets=(3,), label_draws=2)
    tiny = point.train.model_copy(update={"steps": 2, "batch_size": 8, "log_every": 1, "checkpoint_every": 1})
    union = np.unique(np.concatenate([d.rows for d in label_draws(dataset, (3,), 2, seed=0)]))
    dirty_data = poisoned(dataset, union)
    for objective, source in (("supervised", None), ("masked_recon", run.run_dir)):
        this = point.model_copy(update={"objective": objective, "train": tiny})
        clean = runs_budgets.probe_label_budgets(this, dataset, run.run_dir, config, finetune_source=source, log=QUIET)
        dirty = runs_budgets.probe_label_budgets(this, dirty_data, run.run_dir, config, finetune_source=source,
                                                 log=QUIET)
        assert clean.predictions.equals(dirty.predictions), objective
