"""One sweep point end to end: train + probe, through the library's run functions (no Dagster).

Builds the bundled sweep's synthetic dataset (bars -> features -> windows -> labels) in a
temporary data root, then runs what the `pretrained_encoder` and `probe_metrics` assets run
for one partition: ``runs.pretrain.pretrain_partition`` (the registry entry's fit, the collapse
check, the run dir) and ``runs.probe.probe_run`` on the encoder it wrote (full labels, label
budgets, budget curve). ``--device`` becomes the point's ``TrainConfig.device`` (the probe embeds on the CPU, as
in the sweep). ``--steps`` shortens training (the document then says it is reduced, and by how
much); ``--tickers`` / ``--days`` shrink the dataset for a smoke run.

    python benchmarks/full_point.py --objective vicreg --variant full-s0 --device cuda [--json-out out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, high_water_rss_mb, host_record, log, pin_threads, pin_torch_threads, thread_record  # noqa: E402


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", default="vicreg")
    parser.add_argument("--variant", default="full-s0")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:N' or 'auto' (TrainConfig.device)")
    parser.add_argument("--threads", type=int, default=None, help="default: the point's train.threads")
    parser.add_argument("--steps", type=int, default=None, help="train steps (default: the point's; fewer = reduced)")
    parser.add_argument("--amp-bf16", action="store_true", help="TrainConfig.amp_bf16")
    parser.add_argument("--tickers", type=int, default=None, help="default: the sweep's dataset")
    parser.add_argument("--days", type=int, default=None, help="default: the sweep's dataset")
    parser.add_argument("--sweep", default=None, help="sweep file (default: the bundled sweeps/default.yaml)")
    parser.add_argument("--json-out", default=None, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from screener_ssl.runs.sweep import load_sweep

    sweep = load_sweep(args.sweep)
    point = sweep.point(args.objective, args.variant)
    threads = args.threads or point.train.threads
    pinned = pin_threads(threads)
    torch_threads = pin_torch_threads(threads)
    import torch

    from screener_ssl.data import dataset as ds
    from screener_ssl.data.synthetic import SyntheticMarketConfig

    probe_skipped = None
    if importlib.util.find_spec("matplotlib") is None:  # the probe draws its plots with it
        probe_skipped = "probe not run: matplotlib is not installed (the probe's plots need it)"
        log(probe_skipped)
    from screener_ssl.runs.pretrain import pretrain_partition
    from screener_ssl.runs.probe import probe_run
    from screener_ssl.ssl.device import resolve_device

    device = resolve_device(args.device)  # a clear error when CUDA is asked for but absent
    declared_steps = point.train.steps
    train = point.train.model_copy(update={
        "device": args.device, "threads": threads, "amp_bf16": args.amp_bf16 or point.train.amp_bf16,
        **({"steps": args.steps} if args.steps is not None else {}),
    })
    point = point.model_copy(update={"train": train})
    spec = sweep.spec.dataset
    synthetic = spec.synthetic.model_copy(update={
        k: v for k, v in (("n_tickers", args.tickers), ("n_days", args.days)) if v is not None
    })
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="screener_ssl_full_point_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(**synthetic.model_dump()))
        ds.build_features(root, spec.window.volume_lookback)
        ds.build_windowed_dataset(root, spec.window)
        ds.build_labels(root, "synthetic", spec.window)
        dataset = ds.load_dataset(root)
        build_s = time.perf_counter() - t0
        log(f"dataset: {dataset.store.values.shape[0]} bars, {dataset.index.counts()} windows ({build_s:.1f} s)")

        t0 = time.perf_counter()
        outcome = pretrain_partition(dataset, point, root, log=log)
        pretrain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = None
        if probe_skipped is None:  # what the probe_metrics asset runs: full labels, label budgets, budget curve
            result = probe_run(point, dataset, outcome.run_dir, log=log).result
        probe_s = time.perf_counter() - t0
        windows = dataset.index.counts()
    total_s = build_s + pretrain_s + probe_s
    macro = result.metrics["macro"] if result is not None else {}
    document = {
        "benchmark": "full_point",
        "device": str(device),
        "config": {
            "partition": point.partition_key,
            "device": str(device),
            "amp_bf16": train.amp_bf16,
            "threads": threads,
            "steps": train.steps,
            "declared_steps": declared_steps,
            "reduced": train.steps != declared_steps,
            "batch_size": train.batch_size,
            "dataset": {"tickers": synthetic.n_tickers, "days": synthetic.n_days, "windows": windows},
            "probe": point.probe,
        },
        "seconds": {
            "dataset_build": build_s,
            "pretrain_partition": pretrain_s,
            "train_loop": outcome.result.seconds,
            "probe": probe_s,
            "train_plus_probe": pretrain_s + probe_s,
            "total": total_s,
            "wall": time.perf_counter() - started,
        },
        "train_windows_per_s": outcome.result.windows_per_s,
        # The full point's cost had the declared steps run at the measured rate (a reduced run's estimate).
        "train_plus_probe_at_declared_steps_s": (
            pretrain_s + probe_s + (declared_steps - train.steps) * train.batch_size / max(outcome.result.windows_per_s, 1e-9)
            if outcome.result.windows_per_s > 0 else None
        ),
        "probe": {"macro_auprc": macro.get("auprc"), "ci": [macro.get("ci_low"), macro.get("ci_high")],
                  "timings": result.metrics.get("timings") if result is not None else None,
                  "skipped": probe_skipped},
        "peak_rss_mb": high_water_rss_mb(),
        "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]],
        "threads": {**pinned, **torch_threads, **thread_record()},
        "host": host_record() | ({"cuda_device": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
    }
    if device.type == "cuda":
        document["cuda_peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    emit(document, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
