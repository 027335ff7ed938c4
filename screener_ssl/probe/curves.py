"""Budget curves: a trained run's encoder probed at a few points of its training.

A trained run keeps its encoder at a few fractions of its steps (:mod:`screener_ssl.ssl.snapshots`,
``<run dir>/curve/``). Each snapshot gets a light probe: the same head as the main probe
(:func:`screener_ssl.probe.head_fit.fit_probe_head` with the run's :class:`ProbeConfig`), fitted on the
same train rows, scored on the same val and test rows, reporting val and test macro AUPRC only (no
bootstrap, thresholds, events or stability: those belong to the final encoder). The curve,
``[{step, windows_seen, val_macro_auprc, test_macro_auprc, source}]``, says whether a ranking read
at the run's budget has converged. A snapshot whose weights equal the probed encoder's (the 100 %
point) takes the main probe's numbers (``source: "probe"``) instead of probing the same weights twice.

:func:`last_rise` / :func:`still_rising` are the leaderboard's rule: val macro AUPRC of the last
snapshot minus the one before, and whether that rise exceeds :data:`STILL_RISING_TOLERANCE`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from screener_ssl.data.dataset import Dataset
from screener_ssl.probe.head_fit import fit_probe_head
from screener_ssl.probe.metric_names import AUPRC, MACRO, VAL, VAL_MACRO_AUPRC
from screener_ssl.probe.plots import _figure, _png
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.positions import eval_positions, train_positions
from screener_ssl.ssl.encoder import Encoder, embed_positions
from screener_ssl.ssl.snapshots import encoder_state, read_manifest, snapshot_encoders

CURVE_KEY = "budget_curve"  # under this key in probe_metrics.json (the index flattens it to one JSON column)
PLOT_FILE = "probe_budget_curve.png"
# Val macro AUPRC must rise by more than this (half a point) between the last two snapshots for
# "still rising": a fixed floor, so rounding-level wiggles of a converged run read as flat.
STILL_RISING_TOLERANCE = 0.005


@dataclass(frozen=True)
class ProbeRows:
    """The dataset positions the main probe uses (same seeds, same sizes): train, val, test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def probe_rows(dataset: Dataset, config: ProbeConfig, embed_dim: int) -> ProbeRows:
    """The train/val/test positions :func:`screener_ssl.probe.probe.run_probe` draws for ``config``.

    The same functions and seeded streams, so a light probe scores the main probe's rows.
    """
    val, test = eval_positions(dataset, config)
    return ProbeRows(train=train_positions(dataset, config, embed_dim, log=lambda _message: None), val=val, test=test)


def macro_auprc(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean average precision over the patterns (columns of ``y [N, P]``) with a positive; NaN with none.

    The main probe's macro AUPRC (val and test point estimates) on the same rows.
    """
    values = [float(average_precision_score(y[:, p], scores[:, p])) for p in range(y.shape[1]) if y[:, p].any()]
    return float(np.mean(values)) if values else float("nan")


def light_probe(encoder: Encoder, dataset: Dataset, config: ProbeConfig, rows: ProbeRows) -> dict[str, float]:
    """Val and test macro AUPRC of ``encoder`` with the main probe's head on ``rows``; plus its seconds."""
    started = time.perf_counter()
    if config.pooling != getattr(encoder, "pooling", "last"):
        encoder = encoder.with_pooling(config.pooling)
    labels = dataset.labels
    emb_train = embed_positions(encoder, dataset, rows.train, config.batch_size)
    emb_val = embed_positions(encoder, dataset, rows.val, config.batch_size)
    emb_test = embed_positions(encoder, dataset, rows.test, config.batch_size)
    embedded = time.perf_counter()
    head = fit_probe_head(
        emb_train, labels[rows.train], tuple(dataset.patterns), kind=config.head, C=config.C_grid,
        mlp_hidden=config.mlp_hidden, seed=config.seed, class_weight=config.class_weight,
        emb_val=emb_val, y_val=labels[rows.val],
    )
    fitted = time.perf_counter()
    return {
        "val_macro_auprc": macro_auprc(labels[rows.val], head.predict_proba(emb_val)),
        "test_macro_auprc": macro_auprc(labels[rows.test], head.predict_proba(emb_test)),
        "seconds": time.perf_counter() - started,
        "embed_seconds": embedded - started,
        "head_seconds": fitted - embedded,
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _same_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def budget_curve(
    run_dir: Path,
    encoder: Encoder,
    dataset: Dataset,
    config: ProbeConfig,
    final_metrics: Mapping | None = None,
    log: Callable[[str], None] = print,
) -> list[dict] | None:
    """Probe every encoder snapshot of ``run_dir``; None when the run keeps none (a fixed encoder).

    ``encoder``: the run's final encoder (its architecture, normalization and pooling are the
    snapshots'). ``final_metrics``: the main probe's metrics of ``encoder``; a snapshot with the
    same weights takes its val/test macro AUPRC. Points are ordered by step.
    """
    entries = read_manifest(run_dir)
    if not entries:
        return None
    if dataset.labels is None or not dataset.patterns:
        raise ValueError("budget_curve needs a dataset with labels; load it with labels (build_labels)")
    final_state = encoder_state(encoder.backbone)
    snapshots = snapshot_encoders(run_dir, encoder)
    rows: ProbeRows | None = None
    points = []
    for entry in entries:
        snapshot = snapshots[entry["step"]]
        point = {"step": entry["step"], "windows_seen": entry["windows_seen"]}
        if final_metrics is not None and _same_weights(encoder_state(snapshot.backbone), final_state):
            point |= {
                "val_macro_auprc": final_metrics[VAL][VAL_MACRO_AUPRC],
                "test_macro_auprc": final_metrics[MACRO][AUPRC],
                "source": "probe",
                "seconds": 0.0,
            }
        else:
            rows = rows or probe_rows(dataset, config, encoder.embed_dim)
            point |= light_probe(snapshot, dataset, config, rows) | {"source": "light_probe"}
        log(
            f"budget curve: step {point['step']} ({point['windows_seen']} windows seen): val macro AUPRC "
            f"{_fmt(point['val_macro_auprc'])}, test {_fmt(point['test_macro_auprc'])} ({point['source']}, "
            f"{point['seconds']:.1f}s)"
        )
        points.append(point)
    return points


# --------------------------------------------------------------------------- the leaderboard's rule


def parse_curve(value: str | Sequence[Mapping] | None) -> list[dict]:
    """A curve from the index (its JSON text) or from probe_metrics.json; empty when absent."""
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value)
    return sorted((dict(p) for p in value), key=lambda p: p["step"])


def last_rise(curve: str | Sequence[Mapping] | None) -> float | None:
    """Val macro AUPRC of the last snapshot minus the one before it; None with fewer than two defined points."""
    values = [p.get("val_macro_auprc") for p in parse_curve(curve)]
    if len(values) < 2 or any(v is None or math.isnan(v) for v in values[-2:]):
        return None
    return float(values[-1]) - float(values[-2])


def still_rising(rise: float | None, tolerance: float = STILL_RISING_TOLERANCE) -> str | None:
    """"yes" when ``rise`` exceeds ``tolerance``, "no" when it does not, None without a curve."""
    if rise is None or math.isnan(rise):
        return None
    return "yes" if rise > tolerance else "no"


def mean_curve(curves: Sequence[str | Sequence[Mapping] | None]) -> list[dict]:
    """The seed-mean of runs' curves, point by point over the steps every curve has."""
    parsed = [c for c in (parse_curve(v) for v in curves) if c]
    if not parsed:
        return []
    steps = sorted(set.intersection(*({p["step"] for p in c} for c in parsed)))
    out = []
    for step in steps:
        at = [next(p for p in c if p["step"] == step) for c in parsed]
        out.append({
            "step": step,
            "windows_seen": at[0]["windows_seen"],
            **{key: float(np.nanmean([np.nan if p.get(key) is None else p[key] for p in at]))
               for key in ("val_macro_auprc", "test_macro_auprc")},
        })
    return out


# --------------------------------------------------------------------------- plots


def budget_curve_png(
    curves: Mapping[str, Sequence[Mapping]],
    path: str | Path | None = None,
    title: str = "Budget curve: macro AUPRC vs windows seen",
    splits: Sequence[str] = ("val", "test"),
) -> bytes:
    """Macro AUPRC against windows seen in training (log x), one line per label and split.

    ``curves``: label (a run, or an objective|variant) -> points ``{windows_seen, val_macro_auprc,
    test_macro_auprc}``. Val lines are solid, test lines dashed in the same colour.
    """
    fig, ax = _figure(7.2, 4.8)
    for label, curve in curves.items():
        points = sorted(curve, key=lambda p: p["windows_seen"])
        if not points:
            continue
        x = [max(int(p["windows_seen"]), 1) for p in points]
        color = None
        for split, style in zip(splits, ("-", "--")):
            y = [float("nan") if p.get(f"{split}_macro_auprc") is None else p[f"{split}_macro_auprc"] for p in points]
            (line,) = ax.plot(x, y, linestyle=style, marker="o", color=color,
                              label=f"{label} ({split})" if len(splits) > 1 else str(label))
            color = line.get_color()
    ax.set_xscale("log")
    ax.set_xlabel("windows seen in training (log scale)")
    ax.set_ylabel("macro AUPRC")
    ax.set_title(title)
    if curves:
        ax.legend(loc="best", fontsize="x-small", ncol=2 if len(curves) > 6 else 1)
    ax.grid(alpha=0.3, which="both")
    return _png(fig, path)


def budget_curves_by_row(board) -> dict[str, list[dict]]:
    """``objective|variant`` -> the seed-mean curve of every leaderboard row that has one."""
    if board is None or board.height == 0 or CURVE_KEY not in board.columns:
        return {}
    return {
        f"{row['objective']}|{row['variant']}": parse_curve(row[CURVE_KEY])
        for row in board.iter_rows(named=True)
        if row[CURVE_KEY]
    }


# --------------------------------------------------------------------------- the probe step


def record_budget_curve(
    result,
    run_dir: Path,
    encoder: Encoder,
    dataset: Dataset,
    config: ProbeConfig,
    log: Callable[[str], None] = print,
) -> bytes | None:
    """Probe ``run_dir``'s snapshots, put the curve into ``result.metrics`` and its PNG into the run dir.

    ``result``: the main probe's :class:`~screener_ssl.probe.probe.ProbeResult` of ``encoder``
    (written afterwards with :func:`~screener_ssl.probe.probe.write_probe_artifacts`). Returns
    the PNG bytes, or None when the run keeps no snapshots.
    """
    curve = budget_curve(run_dir, encoder, dataset, config, final_metrics=result.metrics, log=log)
    if curve is None:
        return None
    result.metrics[CURVE_KEY] = curve
    return budget_curve_png({Path(run_dir).name: curve}, path=Path(run_dir) / PLOT_FILE)
