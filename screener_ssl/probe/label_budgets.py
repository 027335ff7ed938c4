"""The probe at label budgets: every head fitted on the labelled rows of a few train tickers only.

At each ``(budget, draw)`` of :func:`screener_ssl.data.label_budget.label_draws` the head
(the same one-vs-rest head as :func:`screener_ssl.probe.probe.run_probe`, C chosen on val)
is fitted on the draw's labelled train windows; val and test rows are the full probe's.
The encoder is either fixed (a frozen encoder: its val, test and train embeddings are
computed once and reused by every draw) or built per draw by ``encoder_for(draw)`` (a
model trained on the draw's labels: ``supervised`` from scratch, a finetune).

Per budget: macro test AUPRC pooled over the draws (their mean) with a block-bootstrap CI
whose resamples are shared by every draw (:func:`pooled_macro_comparison`), and the test
predictions of every draw, so the leaderboard pairs models draw by draw on identical rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from screener_ssl.data.dataset import Dataset
from screener_ssl.data.label_budget import LabelDraw, label_draws, train_tickers
from screener_ssl.probe.head_fit import fit_probe_head
from screener_ssl.probe.bootstrap import pooled_macro_comparison
from screener_ssl.probe.plots import label_efficiency_png
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.positions import eval_positions, stratified_subsample, train_matrix_rows, train_window_count
from screener_ssl.probe.probe import _predictions_frame, bootstrap_design
from screener_ssl.ssl.encoder import Encoder, embed_positions
from screener_ssl.store.artifacts import atomic_write_bytes, atomic_write_parquet

BUDGET_PREDICTIONS_FILE = "probe_budget_predictions.parquet"
BUDGET_PLOT_FILE = "probe_label_efficiency.png"
METRICS_KEY = "label_budgets"

@dataclass(frozen=True)
class RetrainPerDraw:
    """An encoder trained on each draw's labelled rows: ``build(draw)`` returns it (e.g. supervised, a finetune)."""

    build: Callable[[LabelDraw], Encoder]


@dataclass
class LabelBudgetResult:
    metrics: dict  # JSON-ready, stored under probe_metrics.json's "label_budgets"
    predictions: pl.DataFrame  # test rows of every (budget, draw): budget, draw, ticker, date, ..., score_<p>
    plot: bytes  # PNG: AUPRC vs labelled tickers, full labels as the last point


def _macro(y: np.ndarray, prob: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    used = [p for p in range(y.shape[1]) if y[:, p].any()]
    return float(np.mean([average_precision_score(y[:, p], prob[:, p]) for p in used])) if used else float("nan")


def draw_train_positions(dataset: Dataset, config: ProbeConfig, draw: LabelDraw, embed_dim: int) -> np.ndarray:
    """The labelled train windows one draw's head is fitted on (a stratified, seeded subsample of its rows)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, draw.budget, draw.draw]))
    return stratified_subsample(draw.rows, dataset.labels[draw.rows], train_window_count(config, embed_dim, log=lambda _message: None), rng)


def run_label_budgets(
    encoder: Encoder | RetrainPerDraw,
    dataset: Dataset,
    config: ProbeConfig,
    full: dict | None = None,
    log: Callable[[str], None] = print,
    draws: list[LabelDraw] | None = None,
    embedded: dict[str, np.ndarray] | None = None,
) -> LabelBudgetResult:
    """Probe at every label budget of ``config``; ``full`` is the full-label probe's macro (for the curve).

    ``encoder`` is a frozen encoder (anything with ``embed_dim`` that :func:`embed_positions`
    embeds: an :class:`Encoder`, MiniRocket's) or a :class:`RetrainPerDraw` building one per draw
    from that draw's labelled rows. ``draws`` defaults to :func:`label_draws` of ``config``.
    ``embedded`` (a frozen encoder's ``{"val", "test"}`` embeddings from the full-label probe of
    the same config, :attr:`ProbeResult.embeddings`) saves embedding those rows again.
    """
    if dataset.labels is None or not dataset.patterns:
        raise ValueError("run_label_budgets needs a dataset with labels; load it with labels (build_labels)")
    if not config.label_budgets:
        raise ValueError("the probe config names no label_budgets")
    patterns = tuple(dataset.patterns)
    draws = draws if draws is not None else label_draws(
        dataset, config.label_budgets, config.label_draws, config.label_seed
    )
    val_pos, test_pos = eval_positions(dataset, config)
    y_val, y_test = dataset.labels[val_pos], dataset.labels[test_pos]
    frozen = not isinstance(encoder, RetrainPerDraw)
    if frozen and config.pooling != getattr(encoder, "pooling", "last"):
        encoder = encoder.with_pooling(config.pooling)
    started = time.perf_counter()
    cache: dict[str, np.ndarray] = {}

    union_fits = False
    if frozen:
        # Every draw's train rows embedded once and looked up per draw, when the union of the
        # draws fits the train-matrix budget; otherwise each draw's rows (each within the budget)
        # are embedded for its own head, so a wide embedding never holds the union.
        train_sets = {d.key: draw_train_positions(dataset, config, d, encoder.embed_dim) for d in draws}
        union = np.unique(np.concatenate(list(train_sets.values())))
        union_fits = len(union) <= train_matrix_rows(config, encoder.embed_dim)
        reuse = embedded is not None and all(
            embedded.get(split) is not None and embedded[split].shape[0] == len(pos)
            for split, pos in (("val", val_pos), ("test", test_pos))
        )
        cache = {
            "val": embedded["val"] if reuse else embed_positions(encoder, dataset, val_pos, config.batch_size),
            "test": embedded["test"] if reuse else embed_positions(encoder, dataset, test_pos, config.batch_size),
        }
        if union_fits:
            cache["train"] = embed_positions(encoder, dataset, union, config.batch_size)
        log(
            (f"label budgets: embedded {len(union)} labelled train windows once" if union_fits else
             f"label budgets: the {len(union)} labelled train windows of all draws exceed "
             f"train_matrix_budget_gib={config.train_matrix_budget_gib} at D={encoder.embed_dim}; "
             "each draw's are embedded for its own head")
            + (", val and test reused from the full-label probe" if reuse else f", {len(val_pos)} val, {len(test_pos)} test")
        )

    per_draw: list[dict] = []
    probs: dict[int, list[np.ndarray]] = {}
    frames = []
    for draw in draws:
        t0 = time.perf_counter()
        if frozen:
            model = encoder
            train_pos = train_sets[draw.key]
            emb_train = (cache["train"][np.searchsorted(union, train_pos)] if union_fits
                         else embed_positions(encoder, dataset, train_pos, config.batch_size))
            emb_val, emb_test = cache["val"], cache["test"]
        else:
            model = encoder.build(draw)
            if config.pooling != getattr(model, "pooling", "last"):
                model = model.with_pooling(config.pooling)
            train_pos = draw_train_positions(dataset, config, draw, model.embed_dim)
            emb_train = embed_positions(model, dataset, train_pos, config.batch_size)
            emb_val = embed_positions(model, dataset, val_pos, config.batch_size)
            emb_test = embed_positions(model, dataset, test_pos, config.batch_size)
        y_train = dataset.labels[train_pos]
        head = fit_probe_head(
            emb_train, y_train, patterns, kind=config.head, C=config.C_grid, mlp_hidden=config.mlp_hidden,
            seed=config.seed, class_weight=config.class_weight, emb_val=emb_val, y_val=y_val,
        )
        prob_val, prob_test = head.predict_proba(emb_val), head.predict_proba(emb_test)
        probs.setdefault(draw.budget, []).append(prob_test)
        record = {
            "budget": draw.budget,
            "draw": draw.draw,
            "tickers": list(draw.tickers),
            "labelled_windows": int(len(draw.rows)),
            "head_windows": int(len(train_pos)),
            "positive_windows": {name: int(y_train[:, p].sum()) for p, name in enumerate(patterns)},
            "constant_patterns": head.fit_info.get("constant_patterns", []),
            "val_auprc": _macro(y_val, prob_val),
            "auprc": _macro(y_test, prob_test),
            "seconds": time.perf_counter() - t0,
        }
        per_draw.append(record)
        frames.append(
            _predictions_frame(dataset, test_pos, prob_test, patterns).with_columns(
                pl.lit(draw.budget, dtype=pl.Int64).alias("budget"), pl.lit(draw.draw, dtype=pl.Int64).alias("draw")
            )
        )
        log(
            f"label budget {draw.budget} draw {draw.draw}: {len(draw.rows)} labelled windows of "
            f"{len(draw.tickers)} tickers, test macro AUPRC {record['auprc']:.4f} (val {record['val_auprc']:.4f}) "
            f"in {record['seconds']:.1f}s"
        )

    design = bootstrap_design(dataset, test_pos, config)
    per_budget: dict[str, dict] = {}
    for budget, group in probs.items():
        pooled = pooled_macro_comparison(y_test, group, design=design, n_boot=config.n_boot, seed=config.seed)
        mine = [r for r in per_draw if r["budget"] == budget]
        per_budget[str(budget)] = {
            "auprc": pooled["auprc_a"],
            "ci_low": pooled["ci_low"],
            "ci_high": pooled["ci_high"],
            "val_auprc": float(np.mean([r["val_auprc"] for r in mine])),
            "draw_sd": float(np.std([r["auprc"] for r in mine], ddof=1)) if len(mine) > 1 else float("nan"),
            "n_draws": len(mine),
            "n_boot_used": pooled["n_boot_used"],
        }
        log(
            f"label budget {budget}: macro AUPRC {pooled['auprc_a']:.4f} [{pooled['ci_low']:.4f}, "
            f"{pooled['ci_high']:.4f}] pooled over {len(mine)} draws"
        )
    n_tickers = len(train_tickers(dataset))
    smallest = str(min(probs))
    metrics = {
        "unit": "labelled train tickers",
        "budgets": sorted(probs),
        "draws": int(max(r["draw"] for r in per_draw) + 1),
        "seed": int(draws[0].seed),
        "train_tickers": n_tickers,
        "per_budget": per_budget,
        "per_draw": per_draw,
        # The summary: AUPRC at the smallest budget, the regime where pretraining is meant to pay.
        "label_efficiency": per_budget[smallest]["auprc"],
        "label_efficiency_budget": int(smallest),
        "seconds": time.perf_counter() - started,
    }
    curve = [(float(b), v["auprc"], v["ci_low"], v["ci_high"]) for b, v in per_budget.items()]
    if full is not None:
        curve.append((float(n_tickers), full.get("auprc"), full.get("ci_low"), full.get("ci_high")))
    plot = label_efficiency_png({"this run": curve})
    return LabelBudgetResult(metrics=metrics, predictions=pl.concat(frames, how="vertical"), plot=plot)


def write_label_budget_artifacts(result: LabelBudgetResult, run_dir: Path) -> dict[str, Path]:
    """Write the budget predictions and the label-efficiency plot into ``run_dir`` (each atomically)."""
    run_dir = Path(run_dir)
    return {
        BUDGET_PREDICTIONS_FILE: atomic_write_parquet(run_dir / BUDGET_PREDICTIONS_FILE, result.predictions),
        BUDGET_PLOT_FILE: atomic_write_bytes(run_dir / BUDGET_PLOT_FILE, result.plot),
    }


__all__ = [
    "BUDGET_PLOT_FILE",
    "BUDGET_PREDICTIONS_FILE",
    "METRICS_KEY",
    "LabelBudgetResult",
    "RetrainPerDraw",
    "draw_train_positions",
    "run_label_budgets",
    "write_label_budget_artifacts",
]
