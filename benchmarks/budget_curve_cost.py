"""Budget-curve cost: what probing a trained run's encoder snapshots adds to its probe step.

Setup (not timed): the sweep's market (default: the bundled sweep's, 200 tickers x 1,500 days)
in a temporary data root, and one partition of the sweep (default ``vicreg|base``)
pretrained with its settings (``--steps`` shortens training: the probe's cost depends on the
probe sizes and the encoder, not on how long it trained; the snapshots stay at the point's
``curve_fracs`` of the steps).

Measured: ``probe_s``, the main probe (:func:`run_probe`) of the final encoder, and
``curve_s``, :func:`screener_ssl.probe.curves.budget_curve` over the run's snapshots (the
100 % snapshot takes the main probe's numbers; every earlier one gets a light probe: embed
the probe's train/val/test rows and fit the same head), plus seconds per snapshot.
``curve_s`` is what the probe step of one trained partition adds; ``*_cpu_s`` are the process's
CPU seconds (at one thread about the wall time on an idle machine; a shared one inflates wall time).

    python benchmarks/budget_curve_cost.py --partition "vicreg|base" --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, host_record, log, pin_threads, thread_record  # noqa: E402


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partition", default="vicreg|base", help="objective|variant of the sweep")
    parser.add_argument("--sweep", default=None, help="sweep file (default: the bundled one)")
    parser.add_argument("--steps", type=int, default=None, help="train steps (default: the point's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    threads = pin_threads(args.threads)
    from screener_ssl.data import dataset as ds
    from screener_ssl.probe.curves import budget_curve
    from screener_ssl.probe.config import ProbeConfig
    from screener_ssl.probe.probe import run_probe
    from screener_ssl.runs.pretrain import pretrain_partition
    from screener_ssl.runs.sweep import load_sweep
    from screener_ssl.ssl.encoder import load_encoder

    sweep = load_sweep(args.sweep)
    objective, variant = args.partition.split("|")
    point = sweep.point(objective, variant)
    train = point.train.model_copy(update={"threads": args.threads, **({"steps": args.steps} if args.steps else {})})
    point = point.model_copy(update={"train": train})
    config = ProbeConfig(**point.probe)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = sweep.spec.dataset.window
        log("building the market ...")
        ds.ingest_bars(root, "synthetic", sweep.spec.dataset.synthetic)
        ds.build_features(root, spec.volume_lookback)
        ds.build_windowed_dataset(root, spec)
        ds.build_labels(root, "synthetic", spec)
        dataset = ds.load_dataset(root)
        log(f"pretraining {args.partition} for {train.steps} steps ...")
        outcome = pretrain_partition(dataset, point, root, log=lambda _m: None, environ=os.environ)
        encoder = load_encoder(outcome.run_dir)
        load_before = os.getloadavg()
        started, cpu = time.perf_counter(), time.process_time()
        result = run_probe(encoder, dataset, config, augment=point.augment, log=lambda _m: None)
        probe_s, probe_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        curve = budget_curve(outcome.run_dir, encoder, dataset, config, final_metrics=result.metrics, log=log)
        curve_s, curve_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    document = {
        "benchmark": "budget_curve_cost",
        "partition": args.partition,
        "train_steps": train.steps,
        "curve_fracs": list(train.curve_fracs),
        "probe_windows": result.metrics["n_windows"],
        "probe_s": probe_s,
        "curve_s": curve_s,
        "curve_share_of_probe": curve_s / probe_s,
        # CPU seconds of this process: about the wall time on an idle machine at one thread.
        "probe_cpu_s": probe_cpu_s,
        "curve_cpu_s": curve_cpu_s,
        "probe_timings": result.metrics["timings"],
        "snapshots": curve or [],
        "load_average_before": list(load_before),
        "threads": threads | thread_record(),
        "host": host_record(),
    }
    emit(document, args.json_out)
    return document


if __name__ == "__main__":
    main()
