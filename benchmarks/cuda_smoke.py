"""Every registry entry trains a few steps on the device and is probed, on a tiny dataset.

The device-consistency smoke for an accelerator: for each objective and baseline of the
registry, the bundled sweep's ``base`` point with ``TrainConfig.device`` set to ``--device``
and a handful of steps goes through ``runs.pretrain.pretrain_partition`` (its own fit, the
collapse check, the run dir), then ``run_probe`` with small sample sizes. One entry's failure
is recorded (with the end of its traceback) and the next one runs. First, the sampler on the
device is checked against the CPU sampler with the same seed (same windows; augmented views
equal in distribution). Prints JSON; exits 1 when anything failed.

    python benchmarks/cuda_smoke.py --device cuda [--steps 4] [--json-out out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, high_water_rss_mb, host_record, log, pin_threads, pin_torch_threads, thread_record  # noqa: E402

HOST_ONLY = ("minirocket",)
PROBE = {"max_train_windows": 2000, "max_val_windows": 1000, "max_test_windows": 1000, "n_boot": 10,
         "stability_windows": 16, "stability_augs": 2}


def _base_point(sweep, name: str):
    """The objective's ``base`` point (``base-s0`` where the base variant is seeded)."""
    from screener_ssl.runs.sweep import SweepError

    try:
        return sweep.point(name, "base")
    except SweepError:
        return sweep.point(name, "base-s0")


def _sampler_check(dataset, device, batches: int = 8, batch_size: int = 256) -> dict:
    """The device-resident sampler against the CPU one, same seed: the same windows (ids, masks,
    clean values to float rounding); augmented views equal in distribution (their own noise draws)."""
    import torch

    from screener_ssl.ssl.augment import AugmentConfig
    from screener_ssl.ssl.objectives.base import get_objective_class
    from screener_ssl.ssl.trainer import TrainConfig

    cls = get_objective_class("vicreg")
    train = TrainConfig(batch_size=batch_size)
    cpu = cls.train_sampler(dataset, AugmentConfig(), train, {})
    dev = cls.train_sampler(dataset, AugmentConfig(), train, {}).to(device)
    same_ids = same_masks = True
    clean_diff = 0.0
    stats = {"cpu": [], "device": []}
    for _ in range(batches):
        a, b = cpu.sample(), dev.sample()
        same_ids &= torch.equal(a.ticker_id, b.ticker_id.cpu()) and torch.equal(a.decision_row, b.decision_row.cpu())
        same_masks &= torch.equal(a.clean.observed, b.clean.observed.cpu())
        clean_diff = max(clean_diff, float((a.clean.x - b.clean.x.cpu()).abs().max()))
        for key, batch in (("cpu", a), ("device", b)):
            view = batch.views[1]
            x, o = view.x.float().cpu(), view.observed.cpu()
            stats[key].append((float(o.float().mean()), float(x[o].mean()), float(x[o].std())))
    summary = {k: [sum(v[i] for v in rows) / len(rows) for i in range(3)] for k, rows in stats.items()}
    # Equal in distribution: observed share, mean and std of the augmented cells within a few percent.
    close = all(abs(c - d) <= 0.03 * max(abs(c), 1.0) for c, d in zip(summary["cpu"], summary["device"]))
    return {
        "batches": batches, "batch_size": batch_size, "same_windows": bool(same_ids), "same_masks": bool(same_masks),
        "clean_max_abs_diff": clean_diff,
        "augmented_view_observed_mean_std": summary,
        "ok": bool(same_ids and same_masks and clean_diff < 1e-3 and close),
    }


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--objectives", default="all", help="'all' or a comma-separated list")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tickers", type=int, default=30)
    parser.add_argument("--days", type=int, default=500)
    parser.add_argument("--amp-bf16", action="store_true")
    parser.add_argument("--json-out", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    pinned = pin_threads(args.threads)
    torch_threads = pin_torch_threads(args.threads)
    import torch

    from screener_ssl.data import dataset as ds
    from screener_ssl.probe.config import ProbeConfig
    from screener_ssl.probe.probe import run_probe

    probe_skipped = None
    if importlib.util.find_spec("matplotlib") is None:  # the probe draws its plots with it
        probe_skipped = "probe not run: matplotlib is not installed (the probe's plots need it)"
        log(probe_skipped)
    from screener_ssl.runs.pretrain import pretrain_partition
    from screener_ssl.runs.sweep import load_sweep
    from screener_ssl.ssl.device import resolve_device
    from screener_ssl.ssl.encoder import load_encoder
    from screener_ssl.ssl.objectives.base import objective_names

    device = resolve_device(args.device)
    sweep = load_sweep()
    # "all": every entry that can touch the device; minirocket is numpy/numba on the CPU (and its
    # first fit on a fresh machine spends minutes compiling), so it is named explicitly or not at all.
    names = (
        [n for n in objective_names() if n not in HOST_ONLY] if args.objectives == "all"
        else [o.strip() for o in args.objectives.split(",") if o]
    )
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="screener_ssl_cuda_smoke_") as tmp:
        root = Path(tmp)
        spec = sweep.spec.dataset
        synthetic = spec.synthetic.model_copy(update={"n_tickers": args.tickers, "n_days": args.days})
        ds.ingest_bars(root, "synthetic", synthetic)
        ds.build_features(root, spec.window.volume_lookback)
        ds.build_windowed_dataset(root, spec.window)
        ds.build_labels(root, "synthetic", spec.window)
        dataset = ds.load_dataset(root)
        try:
            sampler_check = _sampler_check(dataset, device)
        except Exception as exc:  # noqa: BLE001 - recorded; the entries still run
            sampler_check = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc().splitlines()[-12:]}
        log(f"sampler on {device} vs cpu: {'ok' if sampler_check['ok'] else 'FAILED'} {sampler_check}")
        for name in names:
            t0 = time.perf_counter()
            row: dict = {"objective": name}
            try:
                point = _base_point(sweep, name)
                point = point.model_copy(update={"train": point.train.model_copy(update={
                    "device": args.device, "steps": args.steps, "batch_size": args.batch_size,
                    "threads": args.threads, "amp_bf16": args.amp_bf16, "log_every": 1,
                })})
                outcome = pretrain_partition(dataset, point, root, log=lambda _m: None)
                t1 = time.perf_counter()
                auprc = None
                if probe_skipped is None:
                    result = run_probe(load_encoder(outcome.run_dir), dataset, ProbeConfig(**{**point.probe, **PROBE}),
                                       augment=point.augment, log=lambda _m: None)
                    auprc = result.metrics["macro"].get("auprc")
                row.update(ok=True, probed=probe_skipped is None, train_s=t1 - t0, probe_s=time.perf_counter() - t1,
                           final_loss=outcome.result.final_loss, macro_auprc=auprc)
            except Exception as exc:  # noqa: BLE001 - recorded, and the next entry runs
                row.update(ok=False, error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc().splitlines()[-12:])
            row["seconds"] = time.perf_counter() - t0
            log(f"{name:>18s}: {'ok' if row['ok'] else 'FAILED ' + row['error']} ({row['seconds']:.1f} s)")
            rows.append(row)
            if args.json_out:  # what has run so far survives a timeout
                Path(args.json_out).write_text(json.dumps(_document(args, device, rows, started, sampler_check, probe_skipped, partial=True), default=str))
    document = _document(args, device, rows, started, sampler_check, probe_skipped)
    document["threads"] = {**pinned, **torch_threads, **thread_record()}
    emit(document, args.json_out)
    return 1 if document["summary"]["failed"] or not sampler_check["ok"] else 0


def _document(
    args, device, rows: list[dict], started: float, sampler_check: dict, probe_skipped: str | None = None,
    partial: bool = False,
) -> dict:
    import torch

    failed = [r["objective"] for r in rows if not r["ok"]]
    return {
        "benchmark": "cuda_smoke",
        "device": str(device),
        "config": {"steps": args.steps, "batch_size": args.batch_size, "threads": args.threads,
                   "amp_bf16": args.amp_bf16, "tickers": args.tickers, "days": args.days, "probe": PROBE},
        "rows": rows,
        "sampler_check": sampler_check,
        "probe_skipped": probe_skipped,
        "summary": {"entries": len(rows), "failed": failed, "all_ok": not failed, "partial": partial,
                    "wall_seconds": time.perf_counter() - started, "peak_rss_mb": high_water_rss_mb()},
        "host": host_record() | ({"cuda_device": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
    }


if __name__ == "__main__":
    raise SystemExit(main())
