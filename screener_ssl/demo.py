"""`make demo`: materialize the default sweep end to end into the Dagster instance, then print a summary.

Each sweep partition is a run of the named job ``sweep_partition_job`` carrying the sweep's run
tags (objective, variant, seed, fingerprints), so the demo's runs can be found and filtered in
the UI like the nightly ones. ``--jobs`` partitions run at once, each in its own process with as
many torch threads as its point asks for (``train.threads``; the ``base`` points ask for one), so
two single-threaded partitions share a 2-core machine instead of one two-threaded partition
leaving the second core idle in every single-threaded stage (sampling, the probe's head and
metrics, writing artifacts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl

from screener_ssl.data.contracts import SPLITS
from screener_ssl.defs.data.assets import data_summary
from screener_ssl.defs.partitions import split_partition_key
from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl.defs.schedules import DATA_JOB, FINETUNE_JOB, INDEX_JOB, SWEEP_JOB, sweep_run_tags
from screener_ssl.instance import open_instance
from screener_ssl.pipeline import (
    PlannedRun, concurrent_partitions, launch, load_definitions, max_point_threads, run_partitions,
)
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.runs.sweep import Sweep
from screener_ssl.store.environment import dagster_home
from screener_ssl.tracking.leaderboard import board_budgets, format_leaderboard

DATA_ASSETS = ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]
DEMO_TAGS = {"screener_ssl/launched_by": "make demo"}


def _print_data_summary(settings: ScreenerSettings) -> None:
    summary = data_summary(settings)
    info, labels = summary["dataset"], summary["labels"]
    print(f"\nbars: {info['n_bars']:,} across {info['n_tickers']} tickers")
    print("windows per split: " + ", ".join(f"{s} {info['windows'][s]:,}" for s in SPLITS))
    print("split bounds: " + ", ".join(f"{s} {info['split_bounds'][s][0]}..{info['split_bounds'][s][1]}" for s in SPLITS))
    print(f"labels: {labels['source']}, {labels['events']} events, horizon {labels['label_horizon']} bars")
    splits = list(SPLITS)
    print(f"  {'pattern':32s}" + "".join(f"{s:>9s}" for s in splits))
    for p in labels["patterns"]:
        print(f"  {p:32s}" + "".join(f"{labels['prevalence'][s][p]:9.4f}" for s in splits))


def _run_job(
    defs: dg.Definitions, instance: dg.DagsterInstance, job: str, selection: list[str], partition: str | None
) -> None:
    """A step around the sweep (data, finetuning, index) as a run of its named job, limited to ``selection``."""
    result = launch(defs, instance, PlannedRun(job, tuple(selection), partition), tags=_tags(defs, partition),
                    raise_on_error=True)
    if not result.success:
        raise SystemExit(f"run of {job} for {selection} ({partition}) failed")


def _tags(defs: dg.Definitions, partition: str | None) -> dict[str, str]:
    """The demo's runs say who launched them; a partition's run carries the sweep's tags of its point."""
    settings: ScreenerSettings = defs.resources["settings"]
    return dict(DEMO_TAGS) | (sweep_run_tags(settings.load_sweep(), partition) if partition else {})


def _print_scan(settings: ScreenerSettings) -> None:
    """What market_scan just wrote: the decision date, the model it chose on val, its alerts."""
    scores = pl.read_parquet(settings.root / "scans" / "market_scan_latest.parquet")
    alerts = scores.filter(pl.col("alert")).sort("score", descending=True)
    as_of = scores.get_column("date").max() if scores.height else "-"
    print(
        f"\nmarket scan as of {as_of}: {scores.get_column('ticker').n_unique()} tickers scored, "
        f"{alerts.height} alerts (data/scans/market_scan_latest.parquet, DuckDB table market_scan)"
    )
    for row in alerts.head(5).iter_rows(named=True):
        print(f"  {row['ticker']:>8}  {row['pattern']:<22} score {row['score']:.3f}")


def reference_partition(sweep: Sweep, objective: str, variant: str) -> str | None:
    """The first partition of ``objective`` in ``variant`` (its first seed): ``masked_recon|base-s0``."""
    keys = [k for k in sweep.partition_keys(variant) if split_partition_key(k)[0] == objective]
    return keys[0] if keys else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="base", help="sweep variant to run for every objective")
    parser.add_argument("--data-only", action="store_true", help="materialize only the data assets")
    parser.add_argument(
        "--finetune", nargs="*", default=None,
        help="partitions whose encoder is also finetuned end to end (finetuned_classifier); "
        "default: the first seed of masked_recon in --variant",
    )
    parser.add_argument(
        "--jobs", type=int, default=2,
        help="partitions run at once, one process each (capped so their torch threads fit the cores)",
    )
    args = parser.parse_args(argv)

    dagster_home(default=Path.cwd())
    defs = load_definitions()

    settings: ScreenerSettings = defs.resources["settings"]
    # Storage created up front (the workers open it concurrently), killed runs' pool slots freed.
    instance = open_instance()
    started = time.perf_counter()
    print(f"data root {settings.root}; bars {settings.bars}; labels {settings.labels}; DAGSTER_HOME {dagster_home()}")
    _run_job(defs, instance, DATA_JOB, DATA_ASSETS, None)
    _print_data_summary(settings)
    if not args.data_only:
        sweep = settings.load_sweep()
        keys = sweep.partition_keys(args.variant)
        threads = max_point_threads(sweep, keys)
        jobs = concurrent_partitions(args.jobs, os.cpu_count() or 1, threads)
        print(
            f"\nsweep {sweep.source}: {len(keys)} partitions for variant {args.variant!r}, "
            f"{jobs} at a time ({threads} torch thread(s) each), as runs of {SWEEP_JOB}"
        )
        if args.variant == "base":
            print(base_budget_note(sweep, keys))
        started_sweep = time.perf_counter()

        def done(i: int, key: str, wall: float, cpu: float) -> None:
            print(f"[{i}/{len(keys)}] {key} done in {wall:.0f}s ({cpu:.0f} CPU s; "
                  f"{time.perf_counter() - started_sweep:.0f}s into the sweep)", flush=True)

        run_partitions(keys, jobs, threads, instance, tags=lambda key: sweep_run_tags(sweep, key) | DEMO_TAGS, done=done)
        finetune = args.finetune
        if finetune is None:
            finetune = [k for k in [reference_partition(sweep, "masked_recon", args.variant)] if k]
        for key in finetune:
            t0 = time.perf_counter()
            _run_job(defs, instance, FINETUNE_JOB, ["finetuned_classifier"], key)
            print(f"finetuned {key} in {time.perf_counter() - t0:.0f}s", flush=True)
        t0 = time.perf_counter()
        _run_job(defs, instance, INDEX_JOB, ["experiment_index", "market_scan"], None)
        print(f"indexed and scanned in {time.perf_counter() - t0:.0f}s", flush=True)
        # The board the index asset just computed and wrote: pooling and paired bootstraps are not redone.
        board = pl.read_parquet(settings.root / "models" / "_leaderboard.parquet")
        # Ranked again within the variant shown.
        board = board.filter(pl.col("variant") == args.variant).drop("rank", strict=False)
        print(
            f"\nleaderboard (variant {args.variant!r}, ranked by val, test reported; "
            f"index in {settings.root / 'models'}/_index.parquet, this table in _leaderboard.parquet, "
            f"every variant with each row's plots in _report.html)"
        )
        print(format_leaderboard(board))
        _print_label_budgets(board, settings.root / "models")
        _print_benchmark_checks(board)
        _print_teachers(board)
        _print_scan(settings)
        if args.variant == "base":
            print("\nnote: " + base_budget_note(sweep, keys)
                  + " Run the `full` variants (3 seeds each) before reading the ranking as a verdict.")
    print(f"\ntotal time {time.perf_counter() - started:.0f}s")
    return 0


def base_budget_note(sweep: Sweep, keys: list[str]) -> str:
    """What `base` is: a smoke-sized budget, per objective where it differs from the default."""
    points = [sweep.point(*split_partition_key(key)) for key in keys]
    default = sweep.spec.defaults.get("train", {})
    seeds: dict[str, list[int]] = {}
    budgets: dict[str, str] = {}
    for point in points:
        seeds.setdefault(point.objective, []).append(point.train.seed)
        budgets[point.objective] = f"{point.train.steps} steps x {point.train.batch_size}"
    typical = f"{default.get('steps', '?')} steps x {default.get('batch_size', '?')}"
    probe = ProbeConfig(**points[0].probe).model_dump() if points else {}
    windows = _windows_seen(default)
    smaller = {o: b for o, b in budgets.items() if b != typical and _trains(o)}
    replicated = {o: s for o, s in seeds.items() if len(s) > 1}
    return (
        f"`base` is a smoke-sized budget: {typical} windows = {windows} windows seen per run"
        + (", except " + ", ".join(f"{o} {b}" for o, b in sorted(smaller.items())) if smaller else "")
        + "; seeds "
        + (", ".join(f"{o} {s}" for o, s in replicated.items()) + ", one seed elsewhere" if replicated else "one per objective")
        + "; probe on seeded subsamples of "
        + ", ".join(f"{_count(probe.get(f'max_{s}_windows'))} {s}" for s in SPLITS)
        + " windows."
    )


def _count(value) -> str:
    return "every" if value is None else f"{value:,}"


def _trains(objective: str) -> bool:
    from screener_ssl.ssl.objectives.base import get_objective_class

    return bool(get_objective_class(objective).trains)


def _windows_seen(train: dict) -> str:
    steps, batch = train.get("steps"), train.get("batch_size")
    return f"{steps * batch:,}" if isinstance(steps, int) and isinstance(batch, int) else "?"


def _print_benchmark_checks(board: pl.DataFrame) -> None:
    """Is the market a shape benchmark? shape_free should sit near the prevalence, supervised far above it."""
    for objective, bound in (("shape_free", "<= 2x"), ("supervised", ">= 10x")):
        row = board.filter(pl.col("objective") == objective)
        if row.height == 0 or row["prevalence"][0] is None:
            print(f"{objective}: not in this leaderboard")
            continue
        ratio = row["auprc"][0] / row["prevalence"][0] if row["prevalence"][0] else float("nan")
        print(f"{objective}: macro AUPRC {row['auprc'][0]:.4f} = {ratio:.1f}x the macro prevalence (expected {bound})")


def _print_label_budgets(board: pl.DataFrame, models_root: Path) -> None:
    """At the smallest label budget: the rows that beat supervised and minirocket there (paired, 95%)."""
    budgets = board_budgets(board)
    if not budgets:
        return
    k = budgets[0]
    for side in ("supervised", "minirocket"):
        column = f"labels_{k}_vs_{side}"
        better = board.filter(pl.col(column) == "better").get_column("objective").to_list() if column in board.columns else []
        print(f"with {k} labelled tickers, better than {side} on the same labels: {', '.join(better) or 'none'}")
    plot = models_root / "_label_efficiency.png"
    if plot.exists():
        print(f"label-efficiency curves (AUPRC vs labelled tickers, every row): {plot}")


def _print_teachers(board: pl.DataFrame) -> None:
    """Reference encoders (a distillation teacher) beside the student they trained."""
    for row in board.filter(pl.col("objective").str.contains(":")).iter_rows(named=True):
        student_name, reference = row["objective"].split(":", 1)
        student = board.filter(pl.col("objective") == student_name).to_dicts()
        if not student:
            continue
        s = student[0]
        print(
            f"{student_name}: student val/test macro AUPRC {s['val_auprc']:.4f}/{s['auprc']:.4f}, "
            f"its {reference} {row['val_auprc']:.4f}/{row['auprc']:.4f}"
        )


if __name__ == "__main__":
    sys.exit(main())
