"""The leaderboard: per (objective, variant, backbone), its seeds' runs, ranked by val, reported on test.

Each row pools the latest run of every seed of a (objective, declared variant,
backbone, model type): val and test macro AUPRC are the means over seeds,
``seed_sd`` their spread, ``ci_low/ci_high`` the block-bootstrap CI of the
seed-mean on the test rows all seeds scored, and three paired verdicts, each a
difference of seed-means on shared rows with shared draws: against
``masked_recon`` and against ``minirocket`` (each the same variant where it
exists) and against the best baseline (chosen by val). Ranking is by val; test
is reported, never used to choose. A trained row also says whether it was
``still_rising`` at its budget: the seed-mean rise of val macro AUPRC between its
last two encoder snapshots (``curve_rise``, see :mod:`screener_ssl.probe.curves`)
above the tolerance, with the seed-mean ``budget_curve``.

A run's reference encoders (a distillation teacher, probed into
``<run_dir>/<name>/`` and carried on the run's index row, see
:mod:`screener_ssl.tracking.index`) get rows of their own, named
``<objective>:<name>`` (``chart_distill:teacher``), pooled and compared like any
run. Their pretraining is part of their run's: its seconds and windows stay on
the student's row.

Each row says its ``kind``: ``objective`` or ``baseline`` as the objective registry
declares it, ``reference`` for a run's reference encoder; ``run_ids`` lists the runs it
pools (what :func:`screener_ssl.tracking.currency.with_currency` judges) and ``run_dir``
is its latest seed's run dir (the report reads its plots there). How the board is shown
(columns, their order, the printed and table forms) is :mod:`screener_ssl.tracking.board`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import polars as pl

from screener_ssl.probe.curves import last_rise, mean_curve, still_rising
from screener_ssl.probe.metric_names import (
    ALERTS_PER_DAY, AUPRC, BUDGET_CURVE, CI_HIGH, CI_LOW, COST, EARLIEST_DETECTION, ECE, LABEL_BUDGETS, MACRO,
    MACRO_AUPRC_COLUMN, N_REACHABLE, PRECISION, PREVALENCE, REACHABLE, TIMINGS, VAL, VAL_MACRO_AUPRC, column,
)
from screener_ssl.tracking.paired import PairedRuns
from screener_ssl.tracking.board import TABLE_COLUMNS, format_leaderboard, leaderboard_records, ordered_board

__all__ = ["TABLE_COLUMNS", "format_leaderboard", "latest_runs", "leaderboard", "leaderboard_records", "ordered_board"]

REFERENCE_OBJECTIVE = "masked_recon"
MINIROCKET_OBJECTIVE = "minirocket"
SUPERVISED_OBJECTIVE = "supervised"
REFERENCE_PREFIX = "reference"
REFERENCE_KIND = "reference"  # the kind of a reference encoder's row (the registry gives the others')


@dataclass(frozen=True)
class RunField:
    """One column of a run that the leaderboard reads from the index, declared once."""

    index: str  # the index column (a dotted path into the run's files)
    name: str  # the run table's column (and the board frame's, when the board carries it)
    type: str = "string"  # "string" | "float" | "int": the run table's dtype
    reference: bool = False  # a run's reference encoders carry it too (under reference.<name>.probe_metrics)
    mean: bool = False  # a board row pools it over seeds as the mean


def _number(index: str, name: str, reference: bool = True, mean: bool = True) -> RunField:
    """A float field, a probe metric (a reference encoder carries it too) pooled as the seed mean unless said."""
    return RunField(index, name, "float", reference=reference, mean=mean)


RUN_FIELDS: list[RunField] = [
    RunField("experiment.objective", "objective"),
    RunField("experiment.variant", "variant"),
    RunField("experiment.backbone", "backbone"),
    _number(column(MACRO, AUPRC), "auprc", mean=False),
    _number(column(VAL, VAL_MACRO_AUPRC), "val_auprc", mean=False),
    RunField("run_meta.seed", "seed", "int"),
    RunField(column(MACRO, N_REACHABLE), "n_reachable", "int", reference=True),
    RunField(column(MACRO, REACHABLE), "reachable", reference=True),
    _number(column(MACRO, CI_LOW), "ci_low", mean=False),
    _number(column(MACRO, CI_HIGH), "ci_high", mean=False),
    _number(column(MACRO, PREVALENCE), "prevalence"),
    _number(column(MACRO, ALERTS_PER_DAY), "alerts_per_day"),
    _number(column(MACRO, PRECISION), "precision"),
    _number(column(MACRO, EARLIEST_DETECTION, "0.6"), "recall_at_60pct"),
    _number(column(MACRO, ECE), "ece"),
    _number("pretrain_config.metrics.windows_per_s", "windows_per_s", reference=False),
    _number("pretrain_config.metrics.final_loss", "final_loss", reference=False),
    _number("pretrain_config.cost.pretrain_seconds", "pretrain_s", reference=False),
    _number("pretrain_config.cost.windows_seen", "windows_seen", reference=False),
    _number(column(TIMINGS, "embed"), "embed_s"),
    _number(column(TIMINGS, "fit_head"), "head_s"),
    _number(column(COST, "encoder_parameters"), "parameters"),
    RunField(column(BUDGET_CURVE), "budget_curve"),
    RunField("model_type", "model_type"),
    RunField("run_id", "run_id"),
    RunField("run_dir", "run_dir"),
]
COLUMNS = {f.index: f.name for f in RUN_FIELDS}
# Columns of a run that describe its reference encoders' probes as well (under reference.<name>.probe_metrics).
REFERENCE_COLUMNS = {f.index: f.name for f in RUN_FIELDS if f.reference}
# A reference encoder's row names its run: objective, variant, backbone, seed and where it lives.
IDENTITY_COLUMNS = ("objective", "variant", "backbone", "seed", "model_type", "run_id", "run_dir")


def objective_kind(name: str) -> str | None:
    """``objective`` or ``baseline``, as the objective registry declares ``name`` (None for a name it lacks)."""
    from screener_ssl.ssl.objectives.base import get_objective_class

    try:
        return get_objective_class(name).leaderboard_kind()
    except KeyError:
        return None


_BUDGET_PREFIX = column(LABEL_BUDGETS, "per_budget", "")


def label_budgets_of(index: pl.DataFrame) -> list[int]:
    """The label budgets (labelled train tickers) any run of ``index`` was probed at, ascending."""
    found = set()
    for column in index.columns:
        if column.startswith(_BUDGET_PREFIX) and column.endswith(".auprc"):
            found.add(int(column[len(_BUDGET_PREFIX):-len(".auprc")]))
    return sorted(found)


def _budget_columns(index: pl.DataFrame) -> dict[str, str]:
    """Index column -> run column of each budget's per-run result (a fallback without predictions)."""
    out = {column(LABEL_BUDGETS, "train_tickers"): "label_train_tickers"}
    for k in label_budgets_of(index):
        for field in ("auprc", "ci_low", "ci_high"):
            out[f"{_BUDGET_PREFIX}{k}.{field}"] = f"labels_{k}_run_{field}"
    return out


def _reference_names(index: pl.DataFrame) -> list[str]:
    prefix, suffix = f"{REFERENCE_PREFIX}.", f".{MACRO_AUPRC_COLUMN}"
    return sorted({c[len(prefix):-len(suffix)] for c in index.columns if c.startswith(prefix) and c.endswith(suffix)})


def _reference_rows(index: pl.DataFrame, name: str) -> pl.DataFrame:
    """Rows for the reference encoder ``name`` of the runs that have one: its metrics, its run's identity."""
    auprc = f"{REFERENCE_PREFIX}.{name}.{MACRO_AUPRC_COLUMN}"
    rows = index.filter(pl.col(auprc).is_not_null())
    own = {f"{REFERENCE_PREFIX}.{name}.{src}": dst for src, dst in REFERENCE_COLUMNS.items()}
    identity = {src: dst for src, dst in COLUMNS.items() if dst in IDENTITY_COLUMNS}
    table = rows.select(
        [pl.col(src).alias(dst) for src, dst in identity.items() if src in rows.columns]
        + [pl.col(src).alias(dst) for src, dst in own.items() if src in rows.columns]
    )
    return table.with_columns(
        objective=pl.col("objective").cast(pl.String) + f":{name}",
        run_dir=pl.col("run_dir").cast(pl.String) + f"/{name}",
    )


def latest_runs(index: pl.DataFrame) -> pl.DataFrame:
    """The latest probed run per (objective, variant, backbone, model type, seed), renamed columns.

    Reference encoders of a run (``reference.<name>.*`` columns) add rows ``<objective>:<name>``.
    """
    if index.height == 0 or MACRO_AUPRC_COLUMN not in index.columns:
        return pl.DataFrame(schema={name: pl.String for name in (*COLUMNS.values(), "kind")})
    columns = COLUMNS | _budget_columns(index)
    present = {src: dst for src, dst in columns.items() if src in index.columns}
    tables = [index.select([pl.col(src).alias(dst) for src, dst in present.items()])]
    tables += [_reference_rows(index, name) for name in _reference_names(index)]
    numeric = [f.name for f in RUN_FIELDS if f.type == "float"] + list(_budget_columns(index).values())
    integer = [f.name for f in RUN_FIELDS if f.type == "int"]
    typed = []
    for table in tables:
        for dst in columns.values():
            if dst not in table.columns:
                table = table.with_columns(pl.lit(None).alias(dst))
        table = table.select(list(columns.values()))
        table = table.with_columns(
            [pl.col(c).cast(pl.Float64, strict=False) for c in numeric]
            + [pl.col(c).cast(pl.String) for c in columns.values() if c not in (*numeric, *integer)]
            + [pl.col(c).cast(pl.Int64, strict=False) for c in integer]
        )
        typed.append(table)
    # What each row is: the registry says objective or baseline; a run's reference encoders are references.
    runs, *references = typed
    kinds = {name: objective_kind(name) for name in runs.get_column("objective").drop_nulls().unique().to_list()}
    typed = [runs.with_columns(kind=pl.col("objective").replace_strict(kinds, default=None, return_dtype=pl.String))]
    typed += [table.with_columns(kind=pl.lit(REFERENCE_KIND, dtype=pl.String)) for table in references]
    table = pl.concat(typed, how="vertical").filter(pl.col("auprc").is_not_null())
    # A finetuned classifier shares its source objective's name; say which row is which.
    table = table.with_columns(
        objective=pl.when(pl.col("model_type").str.ends_with("_classifier"))
        .then(pl.col("objective") + " (finetuned)")
        .otherwise(pl.col("objective")),
        # Seed replicates are named <variant>-s<seed>: they pool under the declared variant.
        variant=pl.col("variant").str.replace(r"-s\d+$", ""),
    )
    table = table.with_columns(pl.col("seed").fill_null(0))
    return table.sort("run_id").group_by(["objective", "variant", "backbone", "model_type", "seed"]).last()


def leaderboard(
    index: pl.DataFrame,
    baselines: Collection[str] | None = None,
    reference: str = REFERENCE_OBJECTIVE,
    n_boot: int = 200,
    minirocket: str = MINIROCKET_OBJECTIVE,
    supervised: str = SUPERVISED_OBJECTIVE,
) -> pl.DataFrame:
    """One row per (objective, variant, backbone, model type) pooling its seeds, best val AUPRC first.

    ``baselines`` defaults to the registry's baselines. Verdict columns, per
    prefix ``vs_reference`` (``reference``), ``vs_minirocket`` (``minirocket``)
    and ``vs_baseline``: ``_diff``, ``_ci_low``, ``_ci_high``, ``_verdict`` and
    ``_against`` (``objective|variant``). They need the runs'
    ``probe_predictions.parquet``; without them, or without the other side, they are null.

    Label budgets (see :mod:`screener_ssl.probe.label_budgets`), per budget ``k`` the runs were
    probed at: ``labels_{k}_auprc`` (test macro AUPRC, mean over seeds and draws), its
    block-bootstrap CI ``labels_{k}_ci_low`` / ``labels_{k}_ci_high``, and the paired verdicts
    ``labels_{k}_vs_supervised`` / ``labels_{k}_vs_minirocket`` ("better"/"worse"/"tie", with
    ``_diff``) against ``supervised`` and ``minirocket`` at the same budget: every draw of both
    sides on the rows all of them scored, one set of bootstrap draws. ``label_efficiency`` is
    the AUPRC at the smallest budget (``label_efficiency_budget``).
    """
    runs = latest_runs(index)
    if runs.height == 0:
        return runs
    if baselines is None:
        from screener_ssl.ssl.objectives.base import baseline_names

        baselines = baseline_names()
    keys = ["objective", "variant", "backbone", "model_type"]
    groups = (
        runs.sort("seed")
        .group_by(keys, maintain_order=True)
        .agg(
            pl.col("seed"),
            pl.col("run_dir"),
            pl.col("run_id").last(),
            pl.col("run_id").alias("run_ids"),
            pl.col("kind").first(),
            pl.col("val_auprc").mean(),
            pl.col("auprc").mean(),
            pl.col("auprc").std().alias("seed_sd"),
            pl.len().alias("n_seeds"),
            *[pl.col(f.name).mean() for f in RUN_FIELDS if f.mean],
            pl.col("ci_low").first().alias("run_ci_low"),
            pl.col("ci_high").first().alias("run_ci_high"),
            pl.col("reachable").first(),
            pl.col("budget_curve"),
            *[pl.col(c).mean() for c in runs.columns if c.startswith("labels_") or c == "label_train_tickers"],
        )
    )
    budgets = label_budgets_of(index)
    rows = groups.to_dicts()
    paired = PairedRuns(n_boot)

    def by_val(candidates: list[dict]) -> dict | None:
        finite = [r for r in candidates if r["val_auprc"] is not None and not math.isnan(r["val_auprc"])]
        return max(finite, key=lambda r: r["val_auprc"]) if finite else None

    def counterpart(row: dict, objective: str) -> dict | None:
        """``objective``'s row to compare ``row`` with: same variant and backbone, else same variant, else best val."""
        candidates = [r for r in rows if r["objective"] == objective]
        same_variant = [r for r in candidates if r["variant"] == row["variant"]]
        same_backbone = [r for r in same_variant if r["backbone"] == row["backbone"]]
        return by_val(same_backbone or same_variant or candidates)

    def compare(row: dict, other: dict | None, prefix: str) -> None:
        for k in ("diff", "ci_low", "ci_high", "verdict", "against"):
            row[f"{prefix}_{k}"] = None
        if other is None or other is row:
            return
        a, b = paired.full(row["run_dir"]), paired.full(other["run_dir"])
        out = None if a is None or b is None else paired.compare(a, b)
        if out is None:
            return
        row.update({f"{prefix}_{k}": out[k] for k in ("diff", "ci_low", "ci_high", "verdict")})
        row[f"{prefix}_against"] = f"{other['objective']}|{other['variant']}"

    def budget_columns(row: dict, k: int) -> None:
        """``labels_{k}_*``: the pooled AUPRC and CI over seeds x draws, and the paired verdicts at budget k."""
        prefix = f"labels_{k}"
        row[f"{prefix}_auprc"] = row.get(f"{prefix}_run_auprc")
        row[f"{prefix}_ci_low"] = row.get(f"{prefix}_run_ci_low")  # one seed's CI until the pooled one replaces it
        row[f"{prefix}_ci_high"] = row.get(f"{prefix}_run_ci_high")
        for side in ("supervised", "minirocket"):
            for field in ("", "_diff", "_against"):
                row[f"{prefix}_vs_{side}{field}"] = None
        mine = paired.budget(row["run_dir"], k)
        if mine is None:
            return
        pooled = paired.compare(mine)
        if pooled is not None:
            row[f"{prefix}_auprc"] = pooled["auprc_a"]
            row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = pooled["ci_low"], pooled["ci_high"]
        for side, objective in (("supervised", supervised), ("minirocket", minirocket)):
            other = counterpart(row, objective)
            theirs = None if other is None or other is row else paired.budget(other["run_dir"], k)
            out = None if theirs is None else paired.compare(mine, theirs)
            if out is None:
                continue
            row[f"{prefix}_vs_{side}"] = out["verdict"]
            row[f"{prefix}_vs_{side}_diff"] = out["diff"]
            row[f"{prefix}_vs_{side}_against"] = f"{other['objective']}|{other['variant']}"

    best_baseline = by_val([r for r in rows if r["objective"] in set(baselines)])
    for row in rows:
        for k in budgets:
            budget_columns(row, k)
        row["label_efficiency"] = row.get(f"labels_{budgets[0]}_auprc") if budgets else None
        row["label_efficiency_budget"] = budgets[0] if budgets else None
        mine = paired.full(row["run_dir"])
        pooled = None if mine is None else paired.compare(mine)
        if pooled is not None:
            row["ci_low"], row["ci_high"] = pooled["ci_low"], pooled["ci_high"]
        else:
            row["ci_low"], row["ci_high"] = row["run_ci_low"], row["run_ci_high"]
        compare(row, counterpart(row, reference), "vs_reference")
        compare(row, counterpart(row, minirocket), "vs_minirocket")
        compare(row, best_baseline, "vs_baseline")
        # Budget curve: seed-mean rise of val AUPRC over the last stretch of training, and the mean curve.
        rises = [r for r in (last_rise(c) for c in row["budget_curve"]) if r is not None]
        row["curve_rise"] = float(np.mean(rises)) if rises else None
        row["still_rising"] = still_rising(row["curve_rise"])
        curve = mean_curve(row["budget_curve"])
        row["budget_curve"] = json.dumps(curve) if curve else None
    board = pl.DataFrame(
        [{k: v for k, v in r.items()
          if k not in ("run_dir", "seed", "run_ci_low", "run_ci_high") and "_run_" not in k}
         | {"seeds": ",".join(str(s) for s in r["seed"]), "run_ids": ",".join(r["run_ids"]),
            "run_dir": r["run_dir"][-1]} for r in rows],
        infer_schema_length=None,
    )
    return board.sort(["val_auprc", "auprc"], descending=True, nulls_last=True)


def board_budgets(board: pl.DataFrame) -> list[int]:
    """The label budgets a leaderboard carries columns for (``labels_{k}_auprc``), ascending."""
    return sorted(int(c[len("labels_"):-len("_auprc")]) for c in board.columns
                  if c.startswith("labels_") and c.endswith("_auprc") and c[len("labels_"):-len("_auprc")].isdigit())
