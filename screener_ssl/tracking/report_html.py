"""The experiment report: one self-contained HTML page a researcher opens in a browser.

Written by the index beside ``_leaderboard.parquet`` as ``_report.html``: the leaderboard
(first its decisive columns as the printed board shows them, then every column of
:mod:`screener_ssl.tracking.board` in its order, every row of the board),
the plots of the index directory (the AUPRC bar chart, label-efficiency or budget curves when
they exist), then one section per row: its run's per-pattern table and every plot its run dir
holds (PR curves, earliest detection, reliability first; any other PNG there, e.g. a budget
curve, after them). Images are embedded as base64 PNGs, so the file is the whole report and
can be copied or mailed alone.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from screener_ssl.probe.metric_names import (
    ALERTS_PER_DAY, AUPRC, CALIBRATION, CI_HIGH, CI_LOW, ECE, MACRO, PRECISION, PREVALENCE, REACHABLE, RECALL,
)
from screener_ssl.store.artifacts import atomic_write_text
from screener_ssl.tracking.board import Column, leaderboard_records, table_columns, verdict_table

REPORT_FILE = "_report.html"
METRICS_FILE = "probe_metrics.json"
# The probe's plots, shown first in this order (file names of screener_ssl.probe.probe.PLOT_FILES).
PROBE_PLOTS = ("probe_pr_curves.png", "probe_earliest_detection.png", "probe_reliability.png")
PER_PATTERN_COLUMNS = [
    ("pattern", "string", "Pattern"),
    (AUPRC, "float", "Test AUPRC"),
    (CI_LOW, "float", "Lower end of the 95% block-bootstrap CI"),
    (CI_HIGH, "float", "Upper end of the 95% block-bootstrap CI"),
    (PREVALENCE, "float", "Share of positive test windows (a random screener's AUPRC)"),
    (ALERTS_PER_DAY, "float", "Alerts per ticker-day at the val threshold"),
    (PRECISION, "float", "Precision at the val threshold"),
    (RECALL, "float", "Recall at the val threshold"),
    (ECE, "float", "Expected calibration error on test"),
]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; position: sticky; top: 0; }
td.string, th.string { text-align: left; }
.board { overflow-x: auto; max-width: 100%; }
.board td:nth-child(-n+2), .board th:nth-child(-n+2) { position: sticky; left: 0; background: #fff; }
.board th:nth-child(-n+2) { background: #f2f2f2; z-index: 1; }
tr.stale td { color: #a00; }
.better { color: #06702a; font-weight: 600; } .worse { color: #a00; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #ddd; }
figcaption { font-size: 12px; color: #555; }
"""


def _cell(value, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(columns: list[tuple[str, str, str]], records: list[Mapping], table_id: str, row_attrs=None) -> str:
    head = "".join(f'<th class="{k}" title="{html.escape(d)}">{html.escape(n)}</th>' for n, k, d in columns)
    body = []
    for i, record in enumerate(records):
        attrs = row_attrs(i, record) if row_attrs else ""
        cells = []
        for name, kind, _ in columns:
            text = _cell(record.get(name), kind)
            word = text.split(" ")[0]
            verdict = f" {word}" if word in ("better", "worse") else ""
            shown = html.escape(text)
            if name == "objective" and row_attrs:  # a board's row: to its run's section below
                shown = f'<a href="#row-{i + 1}">{shown}</a>'
            cells.append(f'<td class="{kind}{verdict}">{shown}</td>')
        body.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(path.stem.lstrip("_").replace("_", " "))
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def _plots(directory: Path) -> list[Path]:
    """The PNGs of a directory: the probe's three first, the rest by name."""
    if not directory.is_dir():
        return []
    found = sorted(p for p in directory.glob("*.png") if p.is_file())
    first = [p for name in PROBE_PLOTS for p in found if p.name == name]
    return first + [p for p in found if p not in first]


def per_pattern_rows(metrics: Mapping) -> list[dict]:
    """One row per pattern of a run's probe metrics (``per_pattern``), keyed by :data:`PER_PATTERN_COLUMNS`."""
    return [
        {
            "pattern": name,
            **{k: rep[AUPRC][k] for k in (AUPRC, CI_LOW, CI_HIGH, PREVALENCE)},
            **{k: rep["alerts"][k] for k in (ALERTS_PER_DAY, PRECISION, RECALL)},
            ECE: rep[CALIBRATION][ECE] if rep.get(CALIBRATION) else None,
        }
        for name, rep in (metrics.get("per_pattern") or {}).items()
    ]


def _row_section(position: int, rank: int, row: Mapping) -> str:
    title = f"{rank}. {row.get('objective')}|{row.get('variant')}"
    facts = ", ".join(str(row[k]) for k in ("kind", "backbone", "model_type", "run_id") if row.get(k) is not None)
    run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
    parts = [f'<section id="row-{position}"><h3>{html.escape(title)}</h3><p>{html.escape(facts)}</p>']
    if run_dir is None:
        parts.append("<p>no run dir recorded</p></section>")
        return "".join(parts)
    metrics_file = run_dir / METRICS_FILE
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        macro = metrics.get(MACRO) or {}
        if macro.get(REACHABLE):
            parts.append(f"<p>{html.escape(str(macro[REACHABLE]))} at the precision target</p>")
        rows = per_pattern_rows(metrics)
        parts.append(_table(PER_PATTERN_COLUMNS, rows, f"per-pattern-{position}"))
    else:
        parts.append(f"<p>no {METRICS_FILE} in {html.escape(str(run_dir))}</p>")
    parts += [_image(p) for p in _plots(run_dir)]
    parts.append("</section>")
    return "".join(parts)


def render_report(board: pl.DataFrame, index_dir: str | Path, title: str = "screener_ssl experiment report") -> str:
    """The report's HTML for ``board`` (rows in rank order, with ``run_dir``), plots of ``index_dir`` embedded."""
    columns: list[Column] = table_columns(board)
    records = leaderboard_records(board)
    schema = [(c.name, c.type, c.description) for c in columns]
    verdict_schema, verdict_records = verdict_table(board)  # the decisive columns as printed (CI, diffs in cells)
    raw = list(board.iter_rows(named=True))

    def attrs(i: int, record: Mapping) -> str:
        stale = ' class="stale"' if record.get("current") is False else ""
        return f' data-run-id="{html.escape(str(raw[i].get("run_id") or ""))}"{stale}'

    stale = sum(1 for r in records if r.get("current") is False)
    note = (f"<p><strong>{stale} of {len(records)} rows are out of date</strong> (computed on another windowed "
            "dataset or sweep point than the current ones; column current).</p>") if stale else ""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Leaderboard</h2>",
        "<p>Ranked by val macro AUPRC (test never chooses); test AUPRC with its 95% block-bootstrap CI over the "
        "seed-mean; verdicts are paired differences on shared test rows. Hover a header for its meaning.</p>",
        note,
        f'<div class="board">{_table(verdict_schema, verdict_records, "verdict", attrs)}</div>',
        "<p>Each row's run, plots and per-pattern table follow the whole board.</p>",
        "<h2>The whole board</h2>",
        f'<div class="board">{_table(schema, records, "leaderboard", attrs)}</div>',
    ]
    index_plots = _plots(Path(index_dir))
    if index_plots:
        parts += ["<h2>Across runs</h2>", *[_image(p) for p in index_plots]]
    parts.append("<h2>Each row's run</h2>")
    parts += [_row_section(i, record["rank"], row) for i, (record, row) in enumerate(zip(records, raw, strict=True), 1)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(board: pl.DataFrame, index_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write :func:`render_report` to ``path`` (default ``<index_dir>/_report.html``) atomically."""
    target = Path(path) if path is not None else Path(index_dir) / REPORT_FILE
    return atomic_write_text(target, render_report(board, index_dir))
