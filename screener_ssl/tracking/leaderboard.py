"""The leaderboard: the latest run of each (objective, variant, backbone) with its probe metrics."""

from __future__ import annotations

import math

import polars as pl

COLUMNS = {
    "experiment.objective": "objective",
    "experiment.variant": "variant",
    "experiment.backbone": "backbone",
    "probe_metrics.macro.auprc": "auprc",
    "probe_metrics.macro.ci_low": "ci_low",
    "probe_metrics.macro.ci_high": "ci_high",
    "probe_metrics.macro.prevalence": "prevalence",
    "probe_metrics.macro.alerts_per_day_per_ticker": "alerts_per_day",
    "probe_metrics.macro.precision": "precision",
    "probe_metrics.macro.earliest_detection.0.6": "recall_at_60pct",
    "probe_metrics.macro.ece": "ece",
    "pretrain_config.metrics.windows_per_s": "windows_per_s",
    "pretrain_config.metrics.final_loss": "final_loss",
    "pretrain_config.cost.pretrain_seconds": "pretrain_s",
    "pretrain_config.cost.windows_seen": "windows_seen",
    "probe_metrics.timings.embed": "embed_s",
    "probe_metrics.timings.fit_head": "head_s",
    "probe_metrics.cost.encoder_parameters": "parameters",
    "model_type": "model_type",
    "run_id": "run_id",
    "run_dir": "run_dir",
}


def leaderboard(index: pl.DataFrame) -> pl.DataFrame:
    """Latest probed run per (objective, variant, backbone), best macro AUPRC first."""
    if index.height == 0 or "probe_metrics.macro.auprc" not in index.columns:
        return pl.DataFrame(schema={name: pl.String for name in COLUMNS.values()})
    present = {src: dst for src, dst in COLUMNS.items() if src in index.columns}
    table = index.select([pl.col(src).alias(dst) for src, dst in present.items()])
    for dst in COLUMNS.values():
        if dst not in table.columns:
            table = table.with_columns(pl.lit(None).alias(dst))
    numeric = ["auprc", "ci_low", "ci_high", "prevalence", "alerts_per_day", "precision", "recall_at_60pct", "ece",
               "windows_per_s", "final_loss", "pretrain_s", "windows_seen", "embed_s", "head_s", "parameters"]
    table = table.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in numeric])
    table = table.filter(pl.col("auprc").is_not_null())
    # A finetuned classifier shares its source objective's name; say which row is which.
    table = table.with_columns(
        objective=pl.when(pl.col("model_type").cast(pl.String).str.ends_with("_classifier"))
        .then(pl.col("objective").cast(pl.String) + " (finetuned)")
        .otherwise(pl.col("objective").cast(pl.String))
    )
    latest = table.sort("run_id").group_by(["objective", "variant", "backbone", "model_type"]).last()
    return latest.sort("auprc", descending=True, nulls_last=True)


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_leaderboard(board: pl.DataFrame) -> str:
    """A fixed-width table for the terminal."""
    header = (
        f"{'#':>2} {'objective':24s} {'variant':10s} {'backbone':17s} {'macro AUPRC [95% CI]':24s} "
        f"{'alerts/day/tkr':>14s} {'recall@60%':>10s} {'ECE':>6s} {'win/s':>7s} "
        f"{'pretrain s':>10s} {'embed s':>8s} {'head s':>7s} {'params':>8s}"
    )
    lines = [header, "-" * len(header)]
    for i, row in enumerate(board.iter_rows(named=True), 1):
        auprc = f"{_fmt(row['auprc'], '.3f')} [{_fmt(row['ci_low'], '.3f')}, {_fmt(row['ci_high'], '.3f')}]"
        lines.append(
            f"{i:>2} {str(row['objective'])[:24]:24s} {str(row['variant'])[:10]:10s} {str(row['backbone'])[:17]:17s} "
            f"{auprc:24s} {_fmt(row['alerts_per_day'], '.4f'):>14s} {_fmt(row['recall_at_60pct'], '.3f'):>10s} "
            f"{_fmt(row['ece'], '.3f'):>6s} {_fmt(row['windows_per_s'], '.0f'):>7s} "
            f"{_fmt(row['pretrain_s'], '.1f'):>10s} {_fmt(row['embed_s'], '.1f'):>8s} {_fmt(row['head_s'], '.1f'):>7s} "
            f"{_fmt(row['parameters'], '.0f'):>8s}"
        )
    return "\n".join(lines)


def leaderboard_markdown(board: pl.DataFrame) -> str:
    lines = [
        "| # | objective | variant | backbone | macro AUPRC | 95% CI | alerts/day/ticker | recall @60% span | ECE | windows/s "
        "| pretrain s | windows seen | embed s | head s | parameters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(board.iter_rows(named=True), 1):
        lines.append(
            f"| {i} | {row['objective']} | {row['variant']} | {row['backbone']} | {_fmt(row['auprc'], '.3f')} | "
            f"[{_fmt(row['ci_low'], '.3f')}, {_fmt(row['ci_high'], '.3f')}] | {_fmt(row['alerts_per_day'], '.4f')} | "
            f"{_fmt(row['recall_at_60pct'], '.3f')} | {_fmt(row['ece'], '.3f')} | {_fmt(row['windows_per_s'], '.0f')} | "
            f"{_fmt(row['pretrain_s'], '.1f')} | {_fmt(row['windows_seen'], '.0f')} | {_fmt(row['embed_s'], '.1f')} | "
            f"{_fmt(row['head_s'], '.1f')} | {_fmt(row['parameters'], '.0f')} |"
        )
    return "\n".join(lines)
