"""The frozen-encoder probe (DESIGN.md section 6): embed, fit a head on train, threshold on val, score test.

Procedure, all deterministic given ``ProbeConfig.seed``:

1. Embeddings at the decision bar of a seeded random subsample of train windows
   (natural prevalence, never rebalanced: calibration is part of the report).
2. One-vs-rest head per pattern (:func:`screener_ssl.probe.head_fit.fit_probe_head`).
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

import numpy as np
import polars as pl
import torch

from screener_ssl.data.contracts import SPLITS
from screener_ssl.data.dataset import Dataset
from screener_ssl.probe.head import HEAD_FILE, ProbeHead
from screener_ssl.probe.head_fit import fit_probe_head
from screener_ssl.probe.bootstrap import BootstrapDesign
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.metrics import threshold_at_precision
from screener_ssl.probe.metric_names import (
    AUPRC, CALIBRATION, CI_HIGH, CI_LOW, COST, EARLIEST_DETECTION, MACRO, REACHABLE, TIMINGS, VAL, VAL_AUPRC,
    VAL_MACRO_AUPRC,
)
from screener_ssl.probe.positions import EventDecisions, _subsample, eval_positions, event_prefix_decisions, train_positions
from screener_ssl.probe.report import screener_report
from screener_ssl.ssl.augment import AugmentConfig, augment_view
from screener_ssl.ssl.encoder import Encoder, embed_decisions, embed_positions, embedding_settings
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


@dataclass
class ProbeResult:
    """Everything one probe run produces; :func:`write_probe_artifacts` puts it on disk."""

    metrics: dict  # JSON-ready: config, per_pattern, macro, n_windows, timings, head, events
    predictions: pl.DataFrame  # one row per scored val/test window
    head: ProbeHead
    plots: dict[str, bytes]  # PNG bytes: "pr_curves", "earliest_detection", "reliability"
    # In memory only: the val and test embeddings ([n, D], rows of eval_positions), reused by the label budgets.
    embeddings: dict[str, np.ndarray] | None = None


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


def _metrics_document(
    *,
    config: ProbeConfig,
    augment: AugmentConfig,
    encoder: Encoder,
    dataset: Dataset,
    report: dict,
    head: ProbeHead,
    positions: dict[str, np.ndarray],
    available: dict,
    labels: dict[str, np.ndarray],
    events: EventDecisions,
    val_threshold_reports: dict[str, dict],
    timings: dict[str, float],
    cost: dict[str, float],
) -> dict:
    """``probe_metrics.json``: the report, what produced it (config, encoder, dataset), the windows and
    events it read, the head, and the time and compute it took; JSON-ready. ``positions`` and
    ``labels`` are per split (train, val, test)."""
    patterns = tuple(dataset.patterns)
    return to_jsonable(
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
                "per_pattern": {name: rep[VAL_AUPRC] for name, rep in report["per_pattern"].items()},
            },
            "bootstrap": report["config"]["bootstrap"],
            "n_windows": {split: len(pos) for split, pos in positions.items()},
            "windows_available": available,
            "prevalence": {
                split: {name: float(y[:, p].mean()) for p, name in enumerate(patterns)}
                for split, y in labels.items()
            },
            "events": {
                "candidates": events.n_candidates,
                "test": int(events.decision_row.shape[0]),
                "per_pattern": {name: int((events.pattern_id == p).sum()) for p, name in enumerate(patterns)},
                "prefix_fracs": list(events.fracs),
            },
            "head": {
                "kind": head.kind,
                "thresholds": head.thresholds,
                "target_precision": head.target_precision,
                "constant_patterns": head.fit_info.get("constant_patterns", []),
                "val_thresholds": val_threshold_reports,
                "fit_info": head.fit_info,
            },
            # Seconds per stage; "embed" sums the embedding of every split and the events (not stability).
            TIMINGS: timings | {"embed": cost.get("embed_seconds", 0.0)},
            # Compute cost beside quality (its seconds are timings.embed and timings.fit_head).
            COST: {
                "windows_embedded": int(cost.get("windows_embedded", 0)),
                "embed_dim": encoder.embed_dim,
                "encoder_parameters": encoder.describe().get("n_parameters"),
            },
        }
    )


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

    metrics = _metrics_document(
        config=config, augment=augment, encoder=encoder, dataset=dataset, report=report, head=head,
        positions={"train": train_pos, "val": val_pos, "test": test_pos}, available=available,
        labels={"train": y_train, "val": y_val, "test": y_test}, events=events,
        val_threshold_reports=val_threshold_reports, timings=timings, cost=cost,
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
