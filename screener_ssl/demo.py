"""`make demo`: materialize the default sweep end to end into the Dagster instance, then print a summary."""

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
from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl.tracking.index import build_index
from screener_ssl.tracking.leaderboard import format_leaderboard, leaderboard

DATA_ASSETS = ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"]


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


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, selection: list[str], partition: str | None) -> None:
    assets = list(defs.assets)
    result = dg.materialize(
        assets,
        selection=selection,
        partition_key=partition,
        instance=instance,
        resources=defs.resources,
        raise_on_error=True,
        # INFO keeps training progress (step, loss, windows/s) and drops Dagster's step bookkeeping.
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )
    if not result.success:
        raise SystemExit(f"materialization of {selection} ({partition}) failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", default="base", help="sweep variant to run for every objective")
    parser.add_argument("--data-only", action="store_true", help="materialize only the data assets")
    parser.add_argument(
        "--finetune", nargs="*", default=["masked_recon|base"],
        help="partitions whose encoder is also finetuned end to end (finetuned_classifier)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("DAGSTER_HOME", str(Path.cwd()))
    from screener_ssl.definitions import defs  # after DAGSTER_HOME is set

    settings: ScreenerSettings = defs.resources["settings"]
    instance = dg.DagsterInstance.get()
    started = time.perf_counter()
    print(f"data root {settings.root}; bars {settings.bars}; labels {settings.labels}; DAGSTER_HOME {os.environ['DAGSTER_HOME']}")
    _run(defs, instance, DATA_ASSETS, None)
    _print_data_summary(settings)
    if not args.data_only:
        sweep = settings.load_sweep()
        keys = sweep.partition_keys(args.variant)
        print(f"\nsweep {sweep.source}: {len(keys)} partitions for variant {args.variant!r}")
        for i, key in enumerate(keys, 1):
            t0 = time.perf_counter()
            _run(defs, instance, ["ssl_schema", "pretrained_encoder", "probe_metrics"], key)
            print(f"[{i}/{len(keys)}] {key} done in {time.perf_counter() - t0:.0f}s", flush=True)
        for key in args.finetune:
            t0 = time.perf_counter()
            _run(defs, instance, ["finetuned_classifier"], key)
            print(f"finetuned {key} in {time.perf_counter() - t0:.0f}s", flush=True)
        _run(defs, instance, ["experiment_index"], None)
        board = leaderboard(build_index(settings.root / "models"))
        board = board.filter(pl.col("variant") == args.variant)
        print(
            f"\nleaderboard (variant {args.variant!r}, ranked by val, test reported; "
            f"index in {settings.root / 'models'}/_index.parquet)"
        )
        print(format_leaderboard(board))
        _print_benchmark_checks(board)
        train = sweep.spec.defaults.get("train", {})
        if args.variant == "base":
            print(
                f"\nnote: `base` is a smoke-sized budget ({train.get('steps', '?')} steps x "
                f"{train.get('batch_size', '?')} windows = {_windows_seen(train)} windows seen, one seed); "
                "run the `full` variants (3 seeds each) before reading the ranking as a verdict."
            )
    print(f"\ntotal time {time.perf_counter() - started:.0f}s")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
