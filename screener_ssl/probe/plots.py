"""Probe plots as PNG bytes: PR curves, earliest detection, reliability, AUPRC leaderboard.

Figures are built on the object API with the Agg canvas (no pyplot): no global
figure state, no display needed, safe in worker processes. Every function
returns the PNG bytes and, when ``path`` is given, also writes them atomically.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

from screener_ssl.probe.checks import same_shape
from screener_ssl.probe.metric_names import ECE
from screener_ssl.store.artifacts import atomic_write_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure(width: float = 6.4, height: float = 4.8) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig: Figure, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    # No "Software" metadata: the bytes depend on the data only, not the matplotlib build.
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def _is_nan(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _ci_arm(point: float, bound: float) -> float:
    """Length of one error-bar arm; 0 where the point or the bound is undefined."""
    if _is_nan(point) or _is_nan(bound):
        return 0.0
    return abs(float(bound) - float(point))


def pr_curves_png(
    per_pattern: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path | None = None,
    title: str = "Precision-recall on test",
) -> bytes:
    """Precision-recall curve per pattern, legend with AUPRC and prevalence.

    Args:
        per_pattern: pattern -> (labels ``[N]`` in {0, 1}, scores ``[N]``).
            A pattern without a positive is listed in the legend as undefined.
    """
    fig, ax = _figure()
    for name, (y, score) in per_pattern.items():
        y, score = same_shape(y, score, f"pr_curves_png[{name}]", ndim=1)
        if not y.any():
            ax.plot([], [], label=f"{name}: no positives")
            continue
        precision, recall, _ = precision_recall_curve(y, score)
        ap = average_precision_score(y, score)
        label = f"{name}: AP={ap:.3f} (prev {y.mean():.3f})"
        (line,) = ax.step(recall, precision, where="post", label=label)
        # Prevalence is what a random screener scores: the reference for each curve.
        ax.axhline(float(y.mean()), color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig, path)


def earliest_detection_png(
    curves: Mapping[str, Mapping[float, float]],
    path: str | Path | None = None,
    title: str = "Earliest detection: recall vs visible share of the pattern",
) -> bytes:
    """Recall at the val threshold against the prefix fraction of each pattern.

    Args:
        curves: label (pattern or model) -> {prefix fraction -> recall}.
    """
    fig, ax = _figure()
    for label, curve in curves.items():
        if not curve:
            continue
        fracs = sorted(curve, key=float)
        recalls = [float("nan") if _is_nan(curve[f]) else float(curve[f]) for f in fracs]
        ax.plot([100 * float(f) for f in fracs], recalls, marker="o", label=str(label))
    ax.set_xlim(0, 105)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("visible share of the pattern at the decision (%)")
    ax.set_ylabel("recall at the val threshold")
    ax.set_title(title)
    if curves:
        ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig, path)


def reliability_png(
    bins_by_pattern: Mapping[str, Sequence[Mapping] | Mapping],
    path: str | Path | None = None,
    title: str = "Reliability on test",
) -> bytes:
    """Reliability diagram: observed positive rate against mean predicted probability.

    Args:
        bins_by_pattern: pattern -> the ``bins`` list of
            :func:`screener_ssl.probe.metrics.calibration`, or the whole
            calibration dict (its ECE then goes into the legend).
    """
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, entry in bins_by_pattern.items():
        if entry is None:
            continue
        label = str(name)
        if isinstance(entry, Mapping):
            if not _is_nan(entry.get(ECE)):
                label = f"{name}: ECE={float(entry[ECE]):.3f}"
            entry = entry.get("bins", [])
        bins = [b for b in entry if b.get("count", 0) > 0]
        if not bins:
            continue
        ax.plot(
            [b["mean_pred"] for b in bins], [b["frac_pos"] for b in bins], marker="o", label=label
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive rate")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig, path)


def bar_order(rows: Sequence[Mapping], ranked: bool = False) -> list[Mapping]:
    """The rows as :func:`auprc_bar_png` draws them, top first: as given when ``ranked``, else by AUPRC;
    rows with NaN AUPRC last either way."""
    for i, row in enumerate(rows):
        missing = {"label", "auprc", "ci_low", "ci_high"} - set(row)
        if missing:
            raise ValueError(f"auprc_bar_png: row {i} lacks keys {sorted(missing)}")
    defined = [r for r in rows if not _is_nan(r["auprc"])]
    if not ranked:
        defined = sorted(defined, key=lambda r: -float(r["auprc"]))
    return defined + [r for r in rows if _is_nan(r["auprc"])]


def auprc_bar_png(
    rows: Sequence[Mapping],
    path: str | Path | None = None,
    title: str = "Macro AUPRC on test (95% bootstrap CI)",
    ranked: bool = False,
) -> bytes:
    """Leaderboard: one horizontal bar per row, best on top, CI as error bars.

    Args:
        rows: dicts with ``label``, ``auprc``, ``ci_low``, ``ci_high``; a row
            with NaN AUPRC is drawn last with an "undefined" note.
        ranked: the rows are already in rank order (the leaderboard's, by val): drawn top
            to bottom as given; otherwise sorted by AUPRC.
    """
    ordered = bar_order(rows, ranked)
    fig, ax = _figure(7.0, max(2.5, 0.45 * len(ordered) + 1.5))
    ypos = np.arange(len(ordered))[::-1]  # best at the top
    values = [0.0 if _is_nan(r["auprc"]) else float(r["auprc"]) for r in ordered]
    lo_err = [_ci_arm(r["auprc"], r["ci_low"]) for r in ordered]
    hi_err = [_ci_arm(r["auprc"], r["ci_high"]) for r in ordered]
    if ordered:
        ax.barh(ypos, values, xerr=[lo_err, hi_err], capsize=3, color="tab:blue", alpha=0.8)
        for y, v, hi, r in zip(ypos, values, hi_err, ordered, strict=True):
            note = "undefined" if _is_nan(r["auprc"]) else f"{v:.3f}"
            # Right of the CI whisker so the number never sits on the error bar.
            ax.text(min(v + hi, 1.0) + 0.015, y, note, va="center", fontsize="small")
    ax.set_yticks(ypos)
    ax.set_yticklabels([str(r["label"]) for r in ordered])
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("AUPRC")
    ax.set_ylabel("run")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig, path)


def label_efficiency_png(
    curves: Mapping[str, Sequence[tuple[float, float, float, float]]],
    path: str | Path | None = None,
    title: str = "Label efficiency: test macro AUPRC vs labelled train tickers",
) -> bytes:
    """One line per model: ``(labelled tickers, AUPRC, CI low, CI high)`` points, log x axis, CI bars.

    The last point of a curve is usually full labels (every train ticker).
    """
    fig, ax = _figure(7.2, 4.8)
    for name, points in curves.items():
        pts = sorted((float(x), float(a), lo, hi) for x, a, lo, hi in points if not _is_nan(a))
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[_ci_arm(p[1], p[2]) for p in pts], [_ci_arm(p[1], p[3]) for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("labelled train tickers (log)")
    ax.set_ylabel("test macro AUPRC (95% block CI)")
    ax.set_title(title, fontsize=10)
    if curves:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig, path)


def thumbnail_png(png: bytes, max_width: int = 320) -> bytes:
    """The PNG scaled down to at most ``max_width`` pixels wide, as a small palette PNG (for inline previews)."""
    from PIL import Image

    if not png.startswith(PNG_SIGNATURE):
        raise ValueError(f"thumbnail_png: bytes are not a PNG (header {png[:8]!r})")
    if max_width < 16:
        raise ValueError(f"thumbnail_png: max_width must be at least 16 pixels, found {max_width}")
    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
        # Plots have few colours: a 64-colour palette keeps lines and text legible at a fraction of the bytes.
        image = image.quantize(colors=64)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    """A markdown image with the PNG inlined as a base64 data URI (for Dagster metadata)."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError(f"png_markdown({alt!r}): bytes are not a PNG (header {png[:8]!r})")
    safe_alt = alt.replace("[", "(").replace("]", ")")
    return f"![{safe_alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
