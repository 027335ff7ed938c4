"""Dataset build benchmark: bars Parquet -> shape features -> window index, speed and peak memory.

The synthetic market is generated and written to a temporary Parquet file first,
in a subprocess of its own (not timed). The measured build then runs in another
fresh subprocess, so its peak RSS covers only: import, the feature build, and
``build_window_index(store, WindowSpec())``. The default build is the pipeline's
(``read_shape_features``: the Parquet file streamed in row blocks, so the bar table
is never resident whole beside the features); ``--in-memory`` measures the older
``pl.read_parquet`` + ``compute_shape_features`` path instead. Peak RSS is VmHWM
(this process image's high-water mark); ``ru_maxrss`` is reported beside it, and
agrees because the launching process stays small (Linux carries ru_maxrss over
from the parent through fork + exec).

Targets (2 CPU cores, 5,000 tickers x 2,500 days): the whole build in <= 60 s,
and peak memory <= 3x the float32 feature array.

With ``--purge-freed-memory`` polars' allocator returns freed memory to the OS at once.

    python benchmarks/build_dataset.py --tickers 5000 --days 2500 --threads 2 [--json-out out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO_ROOT,
    current_rss_mb,
    emit,
    high_water_rss_mb,
    host_record,
    log,
    peak_rss_mb,
    pin_threads,
    thread_record,
)

TARGET_SECONDS = 60.0
TARGET_PEAK_RATIO = 3.0
MB = 1024.0 * 1024.0
JEMALLOC_ENV = "_RJEM_MALLOC_CONF"  # polars' bundled jemalloc reads its options from here
JEMALLOC_PURGE = "dirty_decay_ms:0,muzzy_decay_ms:0"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=2500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default="cpu",
        help="accepted like the other scripts' and recorded; the build itself is numpy/polars work on the CPU",
    )
    parser.add_argument("--json-out", default=None, help="also write the JSON document here")
    parser.add_argument(
        "--purge-freed-memory",
        action="store_true",
        help=f"run the build with {JEMALLOC_ENV}={JEMALLOC_PURGE}: polars' allocator hands freed pages "
        "(the dropped bar frame) back to the OS at once instead of keeping them for reuse",
    )
    parser.add_argument(
        "--in-memory",
        action="store_true",
        help="read the whole Parquet file into one frame, then compute features (the pre-streaming path)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: Parquet path to build from
    parser.add_argument("--generate-to", default=None, help=argparse.SUPPRESS)  # internal: write the market here
    return parser.parse_args(argv)


def _build_in_this_process(bars_path: Path, in_memory: bool) -> dict:
    """The measured build; runs in the fresh subprocess. Returns timings and memory readings."""
    t_start = time.perf_counter()
    import numpy as np
    import polars as pl

    from screener_ssl.data.features import compute_shape_features, read_shape_features
    from screener_ssl.data.windows import WindowSpec, build_window_index

    rss_after_import = current_rss_mb()
    t0 = time.perf_counter()
    if in_memory:
        bars = pl.read_parquet(bars_path)
        bars_frame_mb = bars.estimated_size() / MB
    else:
        bars, bars_frame_mb = None, 0.0  # streamed: no bar frame is ever built whole
    t1 = time.perf_counter()
    rss_after_bars = current_rss_mb()
    peak_after_bars = high_water_rss_mb()

    store = compute_shape_features(bars) if in_memory else read_shape_features(bars_path)
    n_bars = store.values.shape[0]
    t2 = time.perf_counter()
    rss_after_features = current_rss_mb()
    peak_after_features = high_water_rss_mb()
    # The pipeline step keeps only the store from here on.
    del bars
    gc.collect()
    rss_after_free_bars = current_rss_mb()

    index = build_window_index(store, WindowSpec())
    t3 = time.perf_counter()
    peak_total = high_water_rss_mb()
    ru_maxrss_total = peak_rss_mb()

    index_mb = (index.ticker_id.nbytes + index.decision_row.nbytes + index.split.nbytes) / MB
    return {
        "n_bars": int(n_bars),
        "n_tickers": int(store.n_tickers),
        "n_windows": int(len(index)),
        "windows_per_split": index.counts(),
        "feature_array_mb": store.values.nbytes / MB,
        "feature_dtype": str(store.values.dtype),
        "feature_store_mb": (store.values.nbytes + store.dates.nbytes + store.offsets.nbytes) / MB,
        "window_index_mb": index_mb,
        "window_index_dtypes": {
            "ticker_id": str(index.ticker_id.dtype),
            "decision_row": str(index.decision_row.dtype),
            "split": str(index.split.dtype),
        },
        "bars_frame_mb": bars_frame_mb,
        "feature_nan_fraction": float(np.isnan(store.values).mean()),
        "seconds": {
            "import": t0 - t_start,
            "read_parquet": t1 - t0,
            "features": t2 - t1,
            "window_index": t3 - t2,
            "total_bars_to_index": t3 - t0,
        },
        "rss_mb": {
            "after_import": rss_after_import,
            "after_bars_loaded": rss_after_bars,
            "peak_after_bars_loaded": peak_after_bars,
            "after_features": rss_after_features,
            "peak_after_features": peak_after_features,
            "after_bars_freed": rss_after_free_bars,
            "peak": peak_total,
            "ru_maxrss": ru_maxrss_total,
        },
        "threads": thread_record(),
    }


def _write_synthetic_bars(tickers: int, days: int, seed: int, path: Path) -> dict:
    """Generate the market and write its bars to ``path``; returns the seconds each part took."""
    from screener_ssl.data.synthetic import SyntheticMarketConfig, generate_market

    t0 = time.perf_counter()
    market = generate_market(SyntheticMarketConfig(n_tickers=tickers, n_days=days, seed=seed))
    t1 = time.perf_counter()
    market.bars.write_parquet(path)
    return {"generate_market": t1 - t0, "write_parquet": time.perf_counter() - t1}


def _run_self(args: list[str], env: dict) -> dict:
    """Run this script with ``args`` in a fresh interpreter; its last stdout line is a JSON object."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        log(proc.stderr)
        raise SystemExit(f"benchmark subprocess {args[0]} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    pinned = pin_threads(args.threads)
    if args.child:
        print(json.dumps(_build_in_this_process(Path(args.child), args.in_memory)), flush=True)
        return 0
    if args.generate_to:
        print(json.dumps(_write_synthetic_bars(args.tickers, args.days, args.seed, Path(args.generate_to))), flush=True)
        return 0

    # This process only launches: it stays small, so the build's ru_maxrss inherits nothing big.
    env = {**os.environ, **pinned, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="screener_ssl_bench_") as tmp:
        path = Path(tmp) / "bars.parquet"
        log(f"generating a synthetic market of {args.tickers} tickers x {args.days} days (not timed)")
        setup = _run_self(
            ["--generate-to", str(path), "--tickers", str(args.tickers), "--days", str(args.days),
             "--seed", str(args.seed), "--threads", str(args.threads)],
            env,
        )
        parquet_mb = path.stat().st_size / MB
        log(f"  generated in {setup['generate_market']:.1f} s, wrote {parquet_mb:.0f} MB of Parquet in "
            f"{setup['write_parquet']:.1f} s; building")
        build_env = {**env, JEMALLOC_ENV: JEMALLOC_PURGE} if args.purge_freed_memory else env
        child = _run_self(
            ["--child", str(path), "--threads", str(args.threads), *(["--in-memory"] if args.in_memory else [])],
            build_env,
        )

    seconds = child["seconds"]
    rss = child["rss_mb"]
    feature_mb = child["feature_array_mb"]
    n_bars = child["n_bars"]
    peak_ratio = rss["peak"] / feature_mb
    build_ratio = (rss["peak"] - rss["after_bars_loaded"]) / feature_mb
    document = {
        "benchmark": "build_dataset",
        "config": {"tickers": args.tickers, "days": args.days, "threads": args.threads, "seed": args.seed,
                   "window_spec": "WindowSpec() defaults",
                   "feature_build": "in_memory" if args.in_memory else "streamed_parquet",
                   "device": "cpu", "device_note": "the build is numpy/polars work; it has no accelerator stage"},
        "n_bars": n_bars,
        "n_windows": child["n_windows"],
        "windows_per_split": child["windows_per_split"],
        "bars_per_s": {
            "features": n_bars / seconds["features"],
            "bars_to_window_index": n_bars / seconds["total_bars_to_index"],
        },
        "seconds": seconds,
        "memory_mb": {
            "peak_rss": rss["peak"],
            "peak_rss_ru_maxrss": rss["ru_maxrss"],
            "rss_after_bars_loaded": rss["after_bars_loaded"],
            "rss_after_import": rss["after_import"],
            "feature_array_float32": feature_mb,
            "feature_store_total": child["feature_store_mb"],
            "bars_frame_estimated": child["bars_frame_mb"],
            "window_index": child["window_index_mb"],
            "parquet_file": parquet_mb,
            "rss_trace": rss,
        },
        "ratios": {
            "peak_over_feature_array": peak_ratio,
            "peak_minus_bars_loaded_over_feature_array": build_ratio,
        },
        "targets": {
            "seconds_max": TARGET_SECONDS,
            "seconds_ok": seconds["total_bars_to_index"] <= TARGET_SECONDS,
            "peak_over_feature_array_max": TARGET_PEAK_RATIO,
            "peak_ok": peak_ratio <= TARGET_PEAK_RATIO,
            "peak_minus_bars_loaded_ok": build_ratio <= TARGET_PEAK_RATIO,
        },
        "window_index_dtypes": child["window_index_dtypes"],
        "feature_nan_fraction": child["feature_nan_fraction"],
        "untimed_setup_seconds": setup,
        "threads": child["threads"],
        "allocator": {JEMALLOC_ENV: JEMALLOC_PURGE if args.purge_freed_memory else os.environ.get(JEMALLOC_ENV)},
        "host": host_record() | {"build_process": "fresh subprocess", "peak_rss_source": "VmHWM"},
    }
    emit(document, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
