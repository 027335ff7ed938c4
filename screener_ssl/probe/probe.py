"""The frozen-encoder probe (DESIGN.md section 6): embed, fit a head on train, threshold on val, score test.

Procedure, all deterministic given ``ProbeConfig.seed``:

1. Embeddings at the decision bar of a seeded random subsample of train windows
   (natural prevalence, never rebalanced: calibration is part of the report).
2. One-vs-rest head per pattern (:func:`screener_ssl.probe.head.fit_probe_head`).
3. Probabilities on (a subsample of) val; per pattern, the lowest val threshold
   reaching ``target_precision`` (NaN in the head where none does: no alerts).
4. Probabilities on every (or ``max_test_windows``) test window, plus
   - earliest detection: each test event scored at the decisions where 20/40/
     60/80/100 % of its span is complete (only events whose prefix decisions all
     fall on test-split days of the event's own ticker);
   - stability: ``stability_windows`` test windows, each scored under
     ``stability_augs`` seeded augmentations.
5. :func:`screener_ssl.probe.report.screener_report` turns these into AUPRC
   with bootstrap CIs, alerts/day/ticker, earliest-detection curves, stability
   and calibration, per pattern and macro.

Every window is gathered with :meth:`Dataset.windows` (decision bar open-only,
nothing after it), so the probe sees exactly what a screener would at the open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from screener_ssl.data.contracts import SPLITS
from screener_ssl.data.dataset import Dataset
from screener_ssl.data.label_budget import restrict_to_labelled
from screener_ssl.data.windows import split_calendar_positions
from screener_ssl.probe.head import HEAD_FILE, ProbeHead, fit_probe_head
from screener_ssl.probe.bootstrap import BLOCK_DAYS, BootstrapDesign
from screener_ssl.probe.metrics import PREFIX_FRACS, prefix_decision_rows, threshold_at_precision
from screener_ssl.probe.metric_names import (
    AUPRC,
    CALIBRATION,
    CI_HIGH,
    CI_LOW,
    EARLIEST_DETECTION,
    MACRO,
    REACHABLE,
    VAL,
    VAL_AUPRC,
    VAL_MACRO_AUPRC,
)
from screener_ssl.probe.report import screener_report
from screener_ssl.ssl.augment import AugmentConfig, augment_view
from screener_ssl.ssl.encoder import Encoder, Pooling, embed_decisions, embed_positions, embedding_settings
from screener_ssl.store.artifacts import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    to_jsonable,
)

METRICS_FILE = "probe_metrics.json"
PREDICTIONS_FILE = "probe_predictions.parquet"
PLOT_FILES = {
    "pr_curves": "probe_pr_curves.png",
    "earliest_detection": "probe_earliest_detection.png",
    "reliability": "probe_reliability.png",
}
TEST_SPLIT = SPLITS.index("test")


class ProbeConfig(BaseModel):
    """How the probe samples, fits and scores; recorded verbatim in ``probe_metrics.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    head: Literal["logistic", "mlp"] = "logistic"
    # Inverse L2 strengths of the logistic head; each pattern keeps the one of best val AUPRC.
    C_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    class_weight: Literal["none", "balanced"] = "none"
    mlp_hidden: int = Field(64, ge=1, le=4096)
    max_train_windows: int = Field(40_000, ge=10)
    # A wide embedding needs more rows than a narrow one: train windows >= this x D (when available).
    train_windows_per_dim: int = Field(20, ge=0, le=10_000)
    # Memory budget of the train feature matrix (windows x D float32): no rule lifts the train count past it.
    train_matrix_budget_gib: float = Field(2.0, gt=0.0, le=1024.0)
    max_val_windows: int = Field(40_000, ge=10)
    max_test_windows: int | None = Field(None, ge=1)  # None = every test window
    target_precision: float = Field(0.8, gt=0.0, le=1.0)
    # Earliest detection is recall at this alert volume (threshold chosen on val), the same for every model.
    alert_budget_per_1000: float = Field(5.0, gt=0.0, le=1000.0)  # alerts per 1,000 ticker-days, per pattern
    n_boot: int = Field(200, ge=0, le=100_000)
    # Resampling of the CIs: whole tickers x contiguous calendar blocks (overlapping windows are not independent).
    bootstrap: Literal["ticker_time_block", "window"] = "ticker_time_block"
    block_days: int = Field(BLOCK_DAYS, ge=1, le=2520)
    stability_windows: int = Field(256, ge=0)  # 0 = no stability measurement
    stability_augs: int = Field(8, ge=2, le=256)
    prefix_fracs: tuple[float, ...] = PREFIX_FRACS
    batch_size: int = Field(1024, ge=1, le=65_536)
    # Embedding at the decision bar ("last") or a running max/mean over every visible bar up to it.
    pooling: Pooling = "last"
    seed: int = Field(0, ge=0)
    # Label budgets (numbers of labelled train tickers) at which every head is also fitted, each with
    # ``label_draws`` seeded draws of the labelled tickers (see screener_ssl.data.label_budget);
    # full labels are always reported. ``label_seed`` seeds the draws, the same for every model.
    label_budgets: tuple[int, ...] = ()
    label_draws: int = Field(3, ge=1, le=100)
    label_seed: int = Field(0, ge=0)

    @field_validator("C_grid")
    @classmethod
    def _check_grid(cls, grid: tuple[float, ...]) -> tuple[float, ...]:
        if not grid or any(not c > 0 for c in grid):
            raise ValueError(f"C_grid must be non-empty positive values, found {list(grid)}")
        return tuple(sorted(set(grid)))

    @field_validator("label_budgets")
    @classmethod
    def _check_budgets(cls, budgets: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in budgets) or list(budgets) != sorted(set(budgets)):
            raise ValueError(
                f"label_budgets must be distinct, ascending numbers of labelled train tickers (>= 1), found {list(budgets)}"
            )
        return budgets

    @field_validator("prefix_fracs")
    @classmethod
    def _check_fracs(cls, fracs: tuple[float, ...]) -> tuple[float, ...]:
        if not fracs or any(not 0.0 < f <= 1.0 for f in fracs) or list(fracs) != sorted(set(fracs)):
            raise ValueError(f"prefix_fracs must be distinct, ascending values in (0, 1], found {list(fracs)}")
        return fracs


@dataclass
class ProbeResult:
    """Everything one probe run produces; :func:`write_probe_artifacts` puts it on disk."""

    metrics: dict  # JSON-ready: config, per_pattern, macro, n_windows, timings, head, events
    predictions: pl.DataFrame  # one row per scored val/test window
    head: ProbeHead
    plots: dict[str, bytes]  # PNG bytes: "pr_curves", "earliest_detection", "reliability"
    # In memory only: the val and test embeddings ([n, D], rows of eval_positions), reused by the label budgets.
    embeddings: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class EventDecisions:
    """Test events and the decision rows at which each prefix of them is scored."""

    ticker_id: np.ndarray  # int64 [E]
    pattern_id: np.ndarray  # int64 [E]
    start_row: np.ndarray  # int64 [E], global row of the event's first bar
    end_row: np.ndarray  # int64 [E], global row of the event's last bar
    decision_row: np.ndarray  # int64 [E, F], global decision row per prefix fraction
    fracs: tuple[float, ...]
    n_candidates: int  # events before the test-split filter


# --------------------------------------------------------------------------- window selection and embedding


def _subsample(positions: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted seeded subsample of ``positions`` of size ``<= limit`` (all when limit is None)."""
    if limit is None or positions.shape[0] <= limit:
        return positions
    return np.sort(rng.choice(positions, size=limit, replace=False))


def stratified_subsample(
    positions: np.ndarray, labels: np.ndarray, limit: int | None, rng: np.random.Generator
) -> np.ndarray:
    """Sorted seeded subsample of ``positions [n]`` of size about ``limit``, stratified by label.

    Strata: the windows sharing one label row (``labels [n, P]``): no positive, each
    pattern alone, each combination that occurs. Each stratum keeps its share (at least
    one window), so rare patterns keep their positives and the sample's prevalence stays
    the natural one (never rebalanced). Nothing depends on the patterns' names or column
    order: every window draws one random key, a stratum keeps its smallest keys, and
    quota ties go to the stratum holding the earliest window; so renaming or reordering
    patterns leaves the sample as it was.
    """
    if limit is None or positions.shape[0] <= limit:
        return positions
    n = positions.shape[0]
    keys = rng.random(n)  # one draw per window, in window order
    _, stratum = np.unique(np.asarray(labels, dtype=bool).reshape(n, -1), axis=0, return_inverse=True)
    stratum = stratum.reshape(-1)
    counts = np.bincount(stratum)
    first = np.full(counts.shape[0], n, dtype=np.int64)
    np.minimum.at(first, stratum, np.arange(n))  # a stratum's earliest window: a name-free tie-break
    # Largest-remainder quotas: exactly ``limit`` windows, every stratum at least one.
    quota = limit * counts / n
    take = np.minimum(np.maximum(np.floor(quota).astype(np.int64), 1), counts)
    for i in np.lexsort((first, -(quota - np.floor(quota)))):
        if take.sum() >= limit:
            break
        take[i] += take[i] < counts[i]
    grouped = np.lexsort((keys, stratum))  # by stratum, smallest key first
    group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[grouped] = np.arange(n) - group_start[stratum[grouped]]
    return np.sort(positions[rank < take[stratum]])


def gather_decisions(
    dataset: Dataset, decision_row: np.ndarray, ticker_start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Censored windows ``x, observed [n, window_max, C]`` ending at global ``decision_row [n]``."""
    return dataset.windows_at(decision_row, ticker_start)


def event_prefix_decisions(dataset: Dataset, fracs: tuple[float, ...] = PREFIX_FRACS) -> EventDecisions:
    """Test events with their prefix decision rows (see :func:`prefix_decision_rows`).

    An event is kept when every prefix decision row lies inside its own ticker
    (``end_row + 1`` must exist), has ``min_history`` bars behind it, and falls
    on a test-split calendar day; so the train/val embargo also guards these.
    """
    if dataset.events is None:
        raise ValueError("the dataset has no label events; load it with labels (build_labels)")
    ev = dataset.events.events
    store, spec, index = dataset.store, dataset.spec, dataset.index
    tid = ev.get_column("ticker_id").to_numpy().astype(np.int64)
    pid = ev.get_column("pattern_id").to_numpy().astype(np.int64)
    start = ev.get_column("start_row").to_numpy().astype(np.int64)
    end = ev.get_column("end_row").to_numpy().astype(np.int64)
    rows = prefix_decision_rows(start, end, fracs)  # [E, F]
    lo = store.offsets[:-1][tid][:, None]  # [E, 1] first row of the event's ticker
    hi = store.offsets[1:][tid][:, None]  # [E, 1] one past its last row
    inside = (rows < hi) & (rows - lo >= spec.min_history - 1)
    day_split = split_calendar_positions(index.calendar.shape[0], spec)
    safe_rows = np.where(inside, rows, lo)  # index dates only where the row exists
    on_test = day_split[np.searchsorted(index.calendar, store.dates[safe_rows])] == TEST_SPLIT
    keep = (inside & on_test).all(axis=1)
    return EventDecisions(
        ticker_id=tid[keep],
        pattern_id=pid[keep],
        start_row=start[keep],
        end_row=end[keep],
        decision_row=rows[keep],
        fracs=tuple(float(f) for f in fracs),
        n_candidates=int(tid.shape[0]),
    )


# --------------------------------------------------------------------------- the probe


def _thresholds(
    patterns: tuple[str, ...], y_val: np.ndarray, prob_val: np.ndarray, target_precision: float
) -> tuple[dict[str, float], dict[str, dict]]:
    """Head thresholds (NaN where the target is unreachable on val) and the full val threshold reports."""
    head_thr, reports = {}, {}
    for p, name in enumerate(patterns):
        rep = threshold_at_precision(y_val[:, p], prob_val[:, p], target_precision)
        reports[name] = rep
        head_thr[name] = rep["threshold"] if rep["achievable"] else float("nan")
    return head_thr, reports


def bootstrap_design(dataset: Dataset, positions: np.ndarray, config: ProbeConfig) -> BootstrapDesign:
    """The resampling design of the windows at ``positions`` (their tickers and calendar days)."""
    if config.bootstrap == "window":
        return BootstrapDesign.window(positions.shape[0])
    index = dataset.index
    day = np.searchsorted(index.calendar, dataset.store.dates[index.decision_row[positions]])
    return BootstrapDesign(index.ticker_id[positions], day, scheme=config.bootstrap, block_days=config.block_days)


def _predictions_frame(
    dataset: Dataset, positions: np.ndarray, probs: np.ndarray, patterns: tuple[str, ...]
) -> pl.DataFrame:
    index, store = dataset.index, dataset.store
    rows = index.decision_row[positions]
    columns: dict[str, pl.Series] = {
        "ticker": pl.Series(
            "ticker", np.asarray(store.tickers, dtype=object)[index.ticker_id[positions]], dtype=pl.String
        ),
        "date": pl.Series("date", store.dates[rows].astype("datetime64[D]")).cast(pl.Date),
        "split": pl.Series("split", np.asarray(SPLITS, dtype=object)[index.split[positions]], dtype=pl.String),
        "decision_row": pl.Series("decision_row", rows.astype(np.int64)),
    }
    labels = dataset.labels[positions]
    for p, name in enumerate(patterns):
        columns[f"label_{name}"] = pl.Series(f"label_{name}", labels[:, p].astype(np.uint8))
        columns[f"score_{name}"] = pl.Series(f"score_{name}", probs[:, p].astype(np.float64))
    return pl.DataFrame(list(columns.values()))


def _stability_scores(
    encoder: Encoder,
    head: ProbeHead,
    dataset: Dataset,
    positions: np.ndarray,
    augment: AugmentConfig,
    n_augs: int,
    seed: int,
    batch_size: int,
) -> np.ndarray:
    """Probabilities ``[M, K, P]`` of M windows under K seeded augmentations each."""
    x, observed = dataset.windows(positions)
    gen = torch.Generator().manual_seed(seed)
    xt, ot = torch.from_numpy(x), torch.from_numpy(observed)
    out = np.empty((positions.shape[0], n_augs, len(head.patterns)), dtype=np.float64)
    for k in range(n_augs):
        xa, oa = augment_view(xt, ot, augment, gen)
        emb = encoder.encode_prepared(xa.numpy(), oa.numpy(), batch_size=batch_size)
        out[:, k] = head.predict_proba(emb)
    return out


def eval_positions(dataset: Dataset, config: ProbeConfig) -> tuple[np.ndarray, np.ndarray]:
    """The val and test positions every probe of ``config`` scores (seeded subsamples, label-free)."""
    _, rng_val, rng_test, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(4))
    index = dataset.index
    return (
        _subsample(index.rows_of("val"), config.max_val_windows, rng_val),
        _subsample(index.rows_of("test"), config.max_test_windows, rng_test),
    )


def train_positions(
    dataset: Dataset,
    config: ProbeConfig,
    embed_dim: int,
    labelled_rows: np.ndarray | None = None,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """The train positions the head of ``config`` is fitted on: a seeded, label-stratified subsample of the
    (labelled) train windows, as many as :func:`train_window_count` allows for width ``embed_dim``."""
    rng_train = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(4)[0])
    train_rows = restrict_to_labelled(dataset.index.rows_of("train"), labelled_rows)
    n_train = train_window_count(config, embed_dim, log)
    return stratified_subsample(train_rows, dataset.labels[train_rows], n_train, rng_train)


MIN_TRAIN_WINDOWS = 10


def train_window_count(config: ProbeConfig, embed_dim: int, log: Callable[[str], None] = print) -> int:
    """Train windows to embed: ``max(max_train_windows, train_windows_per_dim x D)``, capped by the
    matrix budget (``train_matrix_budget_gib`` of float32 ``[windows, D]``); logs when the budget binds.

    Raises when the budget cannot hold even ``MIN_TRAIN_WINDOWS`` rows of this width.
    """
    wanted = max(config.max_train_windows, config.train_windows_per_dim * embed_dim)
    row_bytes = 4 * max(int(embed_dim), 1)
    fits = int(config.train_matrix_budget_gib * 2**30) // row_bytes
    if fits < MIN_TRAIN_WINDOWS:
        raise ValueError(
            f"probe: a train matrix of {MIN_TRAIN_WINDOWS} windows x D={embed_dim} float32 exceeds "
            f"train_matrix_budget_gib={config.train_matrix_budget_gib}; raise the budget or narrow the embedding"
        )
    if wanted > fits:
        log(
            f"probe: train windows capped at {fits} (wanted {wanted} = max(max_train_windows, "
            f"{config.train_windows_per_dim} x D={embed_dim})) by train_matrix_budget_gib="
            f"{config.train_matrix_budget_gib} ({wanted * row_bytes / 2**30:.1f} GiB asked)"
        )
        return fits
    return wanted


def run_probe(
    encoder: Encoder,
    dataset: Dataset,
    config: ProbeConfig,
    augment: AugmentConfig | None = None,
    log: Callable[[str], None] = print,
    labelled_rows: np.ndarray | None = None,
) -> ProbeResult:
    """Fit the probe head on train, threshold on val, report every screener metric on test.

    ``labelled_rows`` (positions into the window index) limits the head to those train windows,
    a label budget: no other train window's label is read. Val and test are unchanged.
    """
    if dataset.labels is None or not dataset.patterns:
        raise ValueError("run_probe needs a dataset with labels; load it with labels (build_labels)")
    if encoder.input_channels != dataset.spec.n_features:
        raise ValueError(
            f"encoder expects {encoder.input_channels} input channels, the dataset has "
            f"{dataset.spec.n_features} features {dataset.spec.feature_names}"
        )
    augment = augment or AugmentConfig()
    if config.pooling != getattr(encoder, "pooling", "last"):
        encoder = encoder.with_pooling(config.pooling)
    patterns = tuple(dataset.patterns)
    timings: dict[str, float] = {}
    cost: dict[str, float] = {}  # embedding seconds / windows, accumulated by embed_decisions
    started = clock = time.perf_counter()

    def lap(stage: str) -> float:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now
        return timings[stage]

    # Independent streams: changing one sample size leaves the other samples as they were.
    rng_stab = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(4)[3])
    index = dataset.index
    available = index.counts()
    train_pos = train_positions(dataset, config, encoder.embed_dim, labelled_rows, log)
    val_pos, test_pos = eval_positions(dataset, config)
    for split, pos in (("train", train_pos), ("val", val_pos), ("test", test_pos)):
        if pos.shape[0] == 0:
            raise ValueError(f"the {split} split has no windows; the probe needs train, val and test windows")
    y_train, y_val, y_test = dataset.labels[train_pos], dataset.labels[val_pos], dataset.labels[test_pos]

    emb_train = embed_positions(encoder, dataset, train_pos, config.batch_size, clock=cost)
    log(
        f"probe: embedded {len(train_pos)} of {available['train']} train windows "
        f"(D={encoder.embed_dim}) in {lap('embed_train'):.1f}s"
    )
    emb_val = embed_positions(encoder, dataset, val_pos, config.batch_size, clock=cost)
    lap("embed_val")
    head = fit_probe_head(
        emb_train,
        y_train,
        patterns,
        kind=config.head,
        C=config.C_grid,
        mlp_hidden=config.mlp_hidden,
        seed=config.seed,
        class_weight=config.class_weight,
        emb_val=emb_val,
        y_val=y_val,
    )
    head.embedding = embedding_settings(encoder)  # the scan embeds exactly this way
    constant = head.fit_info.get("constant_patterns", [])
    log(
        f"probe: fitted {config.head} head on {len(patterns)} patterns in {lap('fit_head'):.1f}s"
        + (f", C per pattern {head.fit_info['C']}" if "C" in head.fit_info else "")
        + (f"; constant (no train positive): {constant}" if constant else "")
    )

    prob_val = head.predict_proba(emb_val)
    head_thresholds, val_threshold_reports = _thresholds(patterns, y_val, prob_val, config.target_precision)
    head.set_thresholds(head_thresholds, config.target_precision)
    unreachable = [p for p in patterns if np.isnan(head_thresholds[p])]
    log(
        f"probe: scored {len(val_pos)} val windows, thresholds at precision {config.target_precision} "
        f"in {lap('val'):.1f}s" + (f"; unreachable for {unreachable}" if unreachable else "")
    )

    emb_test = embed_positions(encoder, dataset, test_pos, config.batch_size, clock=cost)
    prob_test = head.predict_proba(emb_test)
    log(f"probe: scored {len(test_pos)} of {available['test']} test windows in {lap('test'):.1f}s")

    events = event_prefix_decisions(dataset, config.prefix_fracs)
    n_events, n_fracs = events.decision_row.shape
    event_probs = head.predict_proba(
        embed_decisions(
            encoder,
            dataset,
            events.decision_row.reshape(-1),
            np.repeat(dataset.store.offsets[:-1][events.ticker_id], n_fracs),
            config.batch_size,
            cost,
        )
    ).reshape(n_events, n_fracs, len(patterns))  # [E, F, P]
    event_scores = {
        name: {frac: event_probs[events.pattern_id == p, f, p] for f, frac in enumerate(events.fracs)}
        for p, name in enumerate(patterns)
    }
    events_per_pattern = {name: int((events.pattern_id == p).sum()) for p, name in enumerate(patterns)}
    log(f"probe: scored {n_events} test events x {n_fracs} prefixes in {lap('events'):.1f}s")

    scores_aug = None
    if config.stability_windows > 0:
        stab_pos = _subsample(test_pos, config.stability_windows, rng_stab)
        aug_probs = _stability_scores(
            encoder, head, dataset, stab_pos, augment, config.stability_augs, config.seed, config.batch_size
        )  # [M, K, P]
        scores_aug = {name: aug_probs[:, :, p] for p, name in enumerate(patterns)}
        log(
            f"probe: stability of {len(stab_pos)} test windows x {config.stability_augs} augmentations "
            f"in {lap('stability'):.1f}s"
        )

    report = screener_report(
        patterns=patterns,
        y_val=y_val,
        score_val=prob_val,
        y_test=y_test,
        score_test=prob_test,
        n_ticker_days=int(len(test_pos)),
        target_precision=config.target_precision,
        prob_test=prob_test,
        event_scores=event_scores,
        scores_aug=scores_aug,
        n_boot=config.n_boot,
        seed=config.seed,
        alert_budget_per_1000=config.alert_budget_per_1000,
        design=bootstrap_design(dataset, test_pos, config),
    )
    log(
        f"probe: metrics with {config.n_boot} {report['config']['bootstrap']['scheme']} bootstrap resamples "
        f"in {lap('report'):.1f}s"
    )

    # Imported here, not with the module: settings and metrics load without the plotting library.
    from screener_ssl.probe.plots import earliest_detection_png, pr_curves_png, reliability_png

    plots = {
        "pr_curves": pr_curves_png({name: (y_test[:, p], prob_test[:, p]) for p, name in enumerate(patterns)}),
        "earliest_detection": earliest_detection_png(
            {name: rep["earliest_detection"] for name, rep in report["per_pattern"].items()}
            | ({MACRO: report[MACRO][EARLIEST_DETECTION]} if report[MACRO][EARLIEST_DETECTION] else {})
        ),
        "reliability": reliability_png({name: rep[CALIBRATION] for name, rep in report["per_pattern"].items()}),
    }
    val_pred = _predictions_frame(dataset, val_pos, prob_val, patterns)
    test_pred = _predictions_frame(dataset, test_pos, prob_test, patterns)
    predictions = pl.concat([val_pred, test_pred], how="vertical")
    lap("plots")
    timings["total"] = time.perf_counter() - started

    metrics = to_jsonable(
        {
            "config": {
                "probe": config.model_dump(mode="json"),
                "report": report["config"],
                "augment": augment.model_dump(mode="json"),
                "encoder": {
                    "embed_dim": encoder.embed_dim,
                    "input_channels": encoder.input_channels,
                    "normalization": encoder.normalization,
                    **encoder.describe(),
                    "meta": encoder.meta,
                },
                "spec_fingerprint": dataset.spec.fingerprint(),
                "dataset_fingerprint": dataset.info.get("dataset_fingerprint"),
            },
            "patterns": list(patterns),
            "per_pattern": report["per_pattern"],
            MACRO: report[MACRO],
            # Selection (of models, variants, the scan's default) reads these; test is only reported.
            VAL: {
                VAL_MACRO_AUPRC: report[MACRO][VAL_AUPRC],
                "per_pattern": {name: rep["val_auprc"] for name, rep in report["per_pattern"].items()},
            },
            "bootstrap": report["config"]["bootstrap"],
            "n_windows": {"train": len(train_pos), "val": len(val_pos), "test": len(test_pos)},
            "windows_available": available,
            "prevalence": {
                split: {name: float(y[:, p].mean()) for p, name in enumerate(patterns)}
                for split, y in (("train", y_train), ("val", y_val), ("test", y_test))
            },
            "events": {
                "candidates": events.n_candidates,
                "test": n_events,
                "per_pattern": events_per_pattern,
                "prefix_fracs": list(events.fracs),
            },
            "head": {
                "kind": head.kind,
                "thresholds": head.thresholds,
                "target_precision": head.target_precision,
                "constant_patterns": constant,
                "val_thresholds": val_threshold_reports,
                "fit_info": head.fit_info,
            },
            # Seconds per stage; "embed" sums the embedding of every split and the events (not stability).
            "timings": timings | {"embed": cost.get("embed_seconds", 0.0)},
            # Compute cost beside quality (its seconds are timings.embed and timings.fit_head).
            "cost": {
                "windows_embedded": int(cost.get("windows_embedded", 0)),
                "embed_dim": encoder.embed_dim,
                "encoder_parameters": encoder.describe().get("n_parameters"),
            },
        }
    )
    macro = report[MACRO]
    log(
        f"probe: macro AUPRC {macro[AUPRC]:.4f} [{macro[CI_LOW]:.4f}, {macro[CI_HIGH]:.4f}] "
        f"on {len(test_pos)} test windows (val {macro[VAL_AUPRC]:.4f}); {macro[REACHABLE]}; "
        f"total {timings['total']:.1f}s"
    )
    return ProbeResult(
        metrics=metrics, predictions=predictions, head=head, plots=plots, embeddings={"val": emb_val, "test": emb_test}
    )


def write_probe_artifacts(result: ProbeResult, run_dir: Path) -> dict[str, Path]:
    """Write the probe's files into ``run_dir``, each atomically; returns file name -> path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        METRICS_FILE: atomic_write_json(run_dir / METRICS_FILE, result.metrics),
        PREDICTIONS_FILE: atomic_write_parquet(run_dir / PREDICTIONS_FILE, result.predictions),
        HEAD_FILE: result.head.save(run_dir),
    }
    for key, name in PLOT_FILES.items():
        if key not in result.plots:
            raise KeyError(f"write_probe_artifacts: the result has no {key!r} plot (plots: {sorted(result.plots)})")
        paths[name] = atomic_write_bytes(run_dir / name, result.plots[key])
    return paths
