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

import hashlib
import json
import math
from collections.abc import Collection
from pathlib import Path

import numpy as np
import polars as pl

from screener_ssl.probe.compare import JOIN_KEYS
from screener_ssl.probe.curves import last_rise, mean_curve, still_rising
from screener_ssl.probe.bootstrap import BLOCK_DAYS, BootstrapDesign, pooled_macro_comparison
from screener_ssl.probe.metric_names import (
    ALERTS_PER_DAY,
    AUPRC,
    BUDGET_CURVE,
    CI_HIGH,
    CI_LOW,
    COST,
    EARLIEST_DETECTION,
    ECE,
    LABEL_BUDGETS,
    MACRO,
    MACRO_AUPRC_COLUMN,
    N_REACHABLE,
    PRECISION,
    PREVALENCE,
    REACHABLE,
    TIMINGS,
    VAL,
    VAL_MACRO_AUPRC,
    column,
)
from screener_ssl.tracking.board import TABLE_COLUMNS, format_leaderboard, leaderboard_records, ordered_board

__all__ = ["TABLE_COLUMNS", "format_leaderboard", "latest_runs", "leaderboard", "leaderboard_records", "ordered_board"]

REFERENCE_OBJECTIVE = "masked_recon"
MINIROCKET_OBJECTIVE = "minirocket"
PREDICTIONS_FILE = "probe_predictions.parquet"
# Columns of a run that describe its reference encoders' probes as well (under reference.<name>.probe_metrics).
REFERENCE_COLUMNS = {
    src: dst for src, dst in (
        (column(MACRO, AUPRC), "auprc"),
        (column(VAL, VAL_MACRO_AUPRC), "val_auprc"),
        (column(MACRO, N_REACHABLE), "n_reachable"),
        (column(MACRO, REACHABLE), "reachable"),
        (column(MACRO, CI_LOW), "ci_low"),
        (column(MACRO, CI_HIGH), "ci_high"),
        (column(MACRO, PREVALENCE), "prevalence"),
        (column(MACRO, ALERTS_PER_DAY), "alerts_per_day"),
        (column(MACRO, PRECISION), "precision"),
        (column(MACRO, EARLIEST_DETECTION, "0.6"), "recall_at_60pct"),
        (column(MACRO, ECE), "ece"),
        (column(TIMINGS, "embed"), "embed_s"),
        (column(TIMINGS, "fit_head"), "head_s"),
        (column(COST, "encoder_parameters"), "parameters"),
    )
}
REFERENCE_PREFIX = "reference"
REFERENCE_KIND = "reference"  # the kind of a reference encoder's row (the registry gives the others')

COLUMNS = {
    "experiment.objective": "objective",
    "experiment.variant": "variant",
    "experiment.backbone": "backbone",
    column(MACRO, AUPRC): "auprc",
    column(VAL, VAL_MACRO_AUPRC): "val_auprc",
    "run_meta.seed": "seed",
    column(MACRO, N_REACHABLE): "n_reachable",
    column(MACRO, REACHABLE): "reachable",
    column(MACRO, CI_LOW): "ci_low",
    column(MACRO, CI_HIGH): "ci_high",
    column(MACRO, PREVALENCE): "prevalence",
    column(MACRO, ALERTS_PER_DAY): "alerts_per_day",
    column(MACRO, PRECISION): "precision",
    column(MACRO, EARLIEST_DETECTION, "0.6"): "recall_at_60pct",
    column(MACRO, ECE): "ece",
    "pretrain_config.metrics.windows_per_s": "windows_per_s",
    "pretrain_config.metrics.final_loss": "final_loss",
    "pretrain_config.cost.pretrain_seconds": "pretrain_s",
    "pretrain_config.cost.windows_seen": "windows_seen",
    column(TIMINGS, "embed"): "embed_s",
    column(TIMINGS, "fit_head"): "head_s",
    column(COST, "encoder_parameters"): "parameters",
    column(BUDGET_CURVE): "budget_curve",
    "model_type": "model_type",
    "run_id": "run_id",
    "run_dir": "run_dir",
}


def objective_kind(name: str) -> str | None:
    """``objective`` or ``baseline``, as the objective registry declares ``name`` (None for a name it lacks)."""
    from screener_ssl.ssl.objectives.base import get_objective_class

    try:
        return get_objective_class(name).leaderboard_kind()
    except KeyError:
        return None


BUDGET_PREDICTIONS_FILE = "probe_budget_predictions.parquet"
SUPERVISED_OBJECTIVE = "supervised"
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
    identity = {src: dst for src, dst in COLUMNS.items() if dst in ("objective", "variant", "backbone", "seed",
                                                                     "model_type", "run_id", "run_dir")}
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
    numeric = ["auprc", "val_auprc", "ci_low", "ci_high", "prevalence", "alerts_per_day", "precision",
               "recall_at_60pct", "ece", "windows_per_s", "final_loss", "pretrain_s", "windows_seen", "embed_s",
               "head_s", "parameters", *_budget_columns(index).values()]
    typed = []
    for table in tables:
        for dst in columns.values():
            if dst not in table.columns:
                table = table.with_columns(pl.lit(None).alias(dst))
        table = table.select(list(columns.values()))
        table = table.with_columns(
            [pl.col(c).cast(pl.Float64, strict=False) for c in numeric]
            + [pl.col(c).cast(pl.String) for c in columns.values() if c not in (*numeric, "seed", "n_reachable")]
            + [pl.col("seed").cast(pl.Int64, strict=False).fill_null(0),
               pl.col("n_reachable").cast(pl.Int64, strict=False)]
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
    return table.sort("run_id").group_by(["objective", "variant", "backbone", "model_type", "seed"]).last()


def _budget_predictions(run_dir: str, budget: int, cache: dict) -> list[pl.DataFrame] | None:
    """One test prediction frame per draw of ``budget`` (draw order), or None when the run has none."""
    if ("budgets", run_dir) not in cache:
        path = Path(run_dir) / BUDGET_PREDICTIONS_FILE
        cache[("budgets", run_dir)] = pl.read_parquet(path).filter(pl.col("split") == "test") if path.is_file() else None
    frame = cache[("budgets", run_dir)]
    if frame is None:
        return None
    mine = frame.filter(pl.col("budget") == budget)
    draws = sorted(mine.get_column("draw").unique().to_list())
    return [mine.filter(pl.col("draw") == d).drop(["budget", "draw"]) for d in draws] or None


def _predictions(run_dir: str, cache: dict) -> pl.DataFrame | None:
    if run_dir not in cache:
        path = Path(run_dir) / PREDICTIONS_FILE
        cache[run_dir] = pl.read_parquet(path).filter(pl.col("split") == "test") if path.is_file() else None
    return cache[run_dir]


def _shared_rows(frames: list[pl.DataFrame]) -> tuple[np.ndarray, list[np.ndarray], BootstrapDesign, str] | None:
    """Labels, one score array per frame, the block design and a digest naming the rows, on the rows every frame scored."""
    patterns = sorted(set.intersection(*({c[6:] for c in f.columns if c.startswith("score_")} for f in frames)))
    if not patterns:
        return None
    keyed = [
        f.select([*JOIN_KEYS, "date", *(f"label_{p}" for p in patterns), *(f"score_{p}" for p in patterns)])
        for f in frames
    ]
    joined = keyed[0].rename({f"score_{p}": f"score_{p}__0" for p in patterns})
    for i, frame in enumerate(keyed[1:], 1):
        other = frame.select([*JOIN_KEYS, *(f"score_{p}" for p in patterns)])
        joined = joined.join(other.rename({f"score_{p}": f"score_{p}__{i}" for p in patterns}), on=list(JOIN_KEYS))
    if joined.height == 0:
        return None
    joined = joined.sort(list(JOIN_KEYS))
    y = joined.select([f"label_{p}" for p in patterns]).to_numpy()
    scores = [joined.select([f"score_{p}__{i}" for p in patterns]).to_numpy() for i in range(len(frames))]
    dates = joined.get_column("date").to_numpy().astype("datetime64[D]")
    design = BootstrapDesign(
        joined.get_column("ticker").to_numpy(), np.searchsorted(np.unique(dates), dates), block_days=BLOCK_DAYS
    )
    rows = hashlib.sha256(joined.select(list(JOIN_KEYS)).hash_rows(seed=0).to_numpy().tobytes()).hexdigest()
    return y, scores, design, f"{rows}:{','.join(patterns)}"


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
            *[pl.col(c).mean() for c in ("prevalence", "alerts_per_day", "precision", "recall_at_60pct", "ece",
                                          "windows_per_s", "final_loss", "pretrain_s", "windows_seen", "embed_s",
                                          "head_s", "parameters")],
            pl.col("ci_low").first().alias("run_ci_low"),
            pl.col("ci_high").first().alias("run_ci_high"),
            pl.col("reachable").first(),
            pl.col("budget_curve"),
            *[pl.col(c).mean() for c in runs.columns if c.startswith("labels_") or c == "label_train_tickers"],
        )
    )
    budgets = label_budgets_of(index)
    rows = groups.to_dicts()
    cache: dict = {}
    # A run's resampled macro AUPRC on one row set, shared by its pooled CI and its three verdicts.
    resamples: dict = {}

    def frames_of(row: dict) -> list[pl.DataFrame] | None:
        frames = [_predictions(d, cache) for d in row["run_dir"]]
        return None if any(f is None for f in frames) else frames

    def by_val(candidates: list[dict]) -> dict | None:
        finite = [r for r in candidates if r["val_auprc"] is not None and not math.isnan(r["val_auprc"])]
        return max(finite, key=lambda r: r["val_auprc"]) if finite else None

    def compare(row: dict, other: dict | None, prefix: str) -> None:
        for k in ("diff", "ci_low", "ci_high", "verdict", "against"):
            row[f"{prefix}_{k}"] = None
        if other is None or other is row:
            return
        a, b = frames_of(row), frames_of(other)
        shared = None if a is None or b is None else _shared_rows(a + b)
        if shared is None:
            return
        y, scores, design, on = shared
        out = pooled_macro_comparison(
            y, scores[: len(a)], scores[len(a):], design=design, n_boot=n_boot, memo=resamples,
            keys_a=[(d, on) for d in row["run_dir"]], keys_b=[(d, on) for d in other["run_dir"]],
        )
        row.update({f"{prefix}_{k}": out[k] for k in ("diff", "ci_low", "ci_high", "verdict")})
        row[f"{prefix}_against"] = f"{other['objective']}|{other['variant']}"

    def counterpart(row: dict, objective: str) -> dict | None:
        """``objective``'s row to compare ``row`` with: same variant and backbone, else same variant, else best val."""
        candidates = [r for r in rows if r["objective"] == objective]
        same_variant = [r for r in candidates if r["variant"] == row["variant"]]
        same_backbone = [r for r in same_variant if r["backbone"] == row["backbone"]]
        return by_val(same_backbone or same_variant or candidates)

    def budget_frames(row: dict, k: int) -> tuple[list[pl.DataFrame], list[tuple]] | None:
        frames, keys = [], []
        for d in row["run_dir"]:
            per_draw = _budget_predictions(d, k, cache)
            if per_draw is None:
                return None
            frames += per_draw
            keys += [(d, k, i) for i in range(len(per_draw))]
        return frames, keys

    def budget_columns(row: dict, k: int) -> None:
        """``labels_{k}_*``: the pooled AUPRC and CI over seeds x draws, and the paired verdicts at budget k."""
        prefix = f"labels_{k}"
        row[f"{prefix}_auprc"] = row.get(f"{prefix}_run_auprc")
        row[f"{prefix}_ci_low"] = row.get(f"{prefix}_run_ci_low")  # one seed's CI until the pooled one replaces it
        row[f"{prefix}_ci_high"] = row.get(f"{prefix}_run_ci_high")
        for side in ("supervised", "minirocket"):
            for field in ("", "_diff", "_against"):
                row[f"{prefix}_vs_{side}{field}"] = None
        mine = budget_frames(row, k)
        if mine is None:
            return
        shared = _shared_rows(mine[0])
        if shared is not None:
            y, scores, design, on = shared
            pooled = pooled_macro_comparison(
                y, scores, design=design, n_boot=n_boot, memo=resamples, keys_a=[(*key, on) for key in mine[1]]
            )
            row[f"{prefix}_auprc"] = pooled["auprc_a"]
            row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = pooled["ci_low"], pooled["ci_high"]
        for side, objective in (("supervised", supervised), ("minirocket", minirocket)):
            other = counterpart(row, objective)
            theirs = None if other is None or other is row else budget_frames(other, k)
            if theirs is None:
                continue
            both = _shared_rows(mine[0] + theirs[0])
            if both is None:
                continue
            y, scores, design, on = both
            n = len(mine[0])
            out = pooled_macro_comparison(
                y, scores[:n], scores[n:], design=design, n_boot=n_boot, memo=resamples,
                keys_a=[(*key, on) for key in mine[1]], keys_b=[(*key, on) for key in theirs[1]],
            )
            row[f"{prefix}_vs_{side}"] = out["verdict"]
            row[f"{prefix}_vs_{side}_diff"] = out["diff"]
            row[f"{prefix}_vs_{side}_against"] = f"{other['objective']}|{other['variant']}"

    best_baseline = by_val([r for r in rows if r["objective"] in set(baselines)])
    for row in rows:
        for k in budgets:
            budget_columns(row, k)
        row["label_efficiency"] = row.get(f"labels_{budgets[0]}_auprc") if budgets else None
        row["label_efficiency_budget"] = budgets[0] if budgets else None
        frames = frames_of(row)
        shared = None if frames is None else _shared_rows(frames)
        if shared is not None:
            y, scores, design, on = shared
            pooled = pooled_macro_comparison(
                y, scores, design=design, n_boot=n_boot, memo=resamples, keys_a=[(d, on) for d in row["run_dir"]]
            )
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
