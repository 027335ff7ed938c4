"""Market scan latency: bars in DuckDB -> ranked alerts for every ticker, beside the bare batched forward.

Setup (not timed): a synthetic market is generated and ingested into a temporary
data root (``warehouse.duckdb``, table ``bars``); a run dir gets the default TCN
(``BackboneConfig()``, untrained weights: latency does not depend on them), a
schema for ``WindowSpec()`` and a logistic ProbeHead fitted on random embeddings
for the 7 patterns.

Measured, median of ``--repeats`` after one warm-up each, the two interleaved so
that both see the same load on a shared machine (CPU seconds are reported too):
- ``end_to_end_s``: :func:`scan_market` from the DuckDB file (model load, query,
  features, gather, chunked forward, head, ranking);
- ``bare_forward_s``: the scan's forward alone (``batched_embeddings``: the last
  step only, which for the TCN is its receptive cone) on the same ``x/observed``
  windows with the same chunking, nothing else;
- ``full_forward_s``: the whole per-timestep forward on the same chunks, keeping
  the last step (what the scan computed before the cone), for comparison.
``end_to_end_s / bare_forward_s`` is the scan's overhead; ``end_to_end_s /
full_forward_s`` compares with the full forward. Targets (2 CPU threads, 5,000
tickers, default TCN): ``end_to_end_s <= 1.5 * full_forward_s``, ``end_to_end_s <= 2``
and ``bare_forward_s <= 0.5``. Bars come from DuckDB, where ingestion keeps the
recent-dates slice ``bars_recent`` beside ``bars``.

    python benchmarks/scan_latency.py --tickers 5000 --days 2500 --threads 2 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, host_record, log, pin_threads, thread_record  # noqa: E402

TARGET_RATIO = 1.5
TARGET_SECONDS = 2.0
TARGET_FORWARD_SECONDS = 0.5


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=400, help="history per ticker (only the recent bars are read)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:N' or 'auto'")
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default=None, help="also write the JSON document here")
    return parser.parse_args(argv)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _make_run_dir(run_dir: Path, spec, dataset_fp: str, n_channels: int, seed: int) -> None:
    """Default TCN (untrained) + schema + a logistic head fitted on random embeddings."""
    import numpy as np
    import torch

    from screener_ssl.data.contracts import PATTERNS
    from screener_ssl.probe.head_fit import fit_probe_head
    from screener_ssl.ssl.augment import AugmentConfig
    from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
    from screener_ssl.ssl.encoder import Encoder, embedding_settings
    from screener_ssl.ssl.schema import SSLSchema

    torch.manual_seed(seed)
    config = BackboneConfig()
    backbone = build_backbone(config, n_channels)
    encoder = Encoder(backbone, normalization="none")
    encoder.save(run_dir)
    schema = SSLSchema(
        window_spec=spec,
        spec_fingerprint=spec.fingerprint(),
        dataset_fingerprint=dataset_fp,
        augmentation=AugmentConfig(),
        objective="masked_recon",
        objective_config={},
        encoder=config,
    )
    (run_dir / "schema.json").write_text(schema.to_json())
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(2000, config.embed_dim))
    labels = (rng.random((2000, len(PATTERNS))) < 0.1).astype(np.uint8)
    head = fit_probe_head(emb, labels, PATTERNS, kind="logistic", seed=seed)
    head.set_thresholds({p: 0.2 for p in PATTERNS}, target_precision=0.8)
    head.embedding = embedding_settings(encoder)  # as the probe records it: the scan checks it
    head.save(run_dir)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    threads_env = pin_threads(args.threads)  # before numpy/polars/torch import
    import torch

    from screener_ssl.data import dataset as ds
    from screener_ssl.data.recent_bars import connect_read_only, load_latest_bars
    from screener_ssl.data.synthetic import SyntheticMarketConfig
    from screener_ssl.data.windows import WindowSpec
    from screener_ssl.scan.scan import ScanConfig, batched_embeddings, latest_windows, scan_market
    from screener_ssl.ssl.encoder import load_encoder

    from screener_ssl.ssl.device import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)  # a clear error when CUDA is asked for but absent
    args.device = device.type
    spec = WindowSpec()
    with tempfile.TemporaryDirectory(prefix="scan_latency_") as tmp:
        root = Path(tmp) / "data"
        run_dir = Path(tmp) / "run"
        t = time.perf_counter()
        report = ds.ingest_bars(
            root, "synthetic", SyntheticMarketConfig(n_tickers=args.tickers, n_days=args.days, seed=args.seed)
        )
        setup_s = time.perf_counter() - t
        log(f"ingested {args.tickers} tickers x {args.days} days in {setup_s:.1f}s")
        _make_run_dir(run_dir, spec, ds.dataset_fingerprint(spec, report.content_hash), spec.n_features, args.seed)
        db_path = root / ds.WAREHOUSE
        config = ScanConfig(chunk_size=args.chunk_size, threads=args.threads, device=args.device)

        # The bare forward's inputs: the very windows the scan builds.
        with connect_read_only(db_path, args.threads) as con:
            bars = load_latest_bars(con, spec, None)
        x, observed, tickers, skipped = latest_windows(bars, spec, bars.get_column("date").max())
        backbone = load_encoder(run_dir).backbone.to(args.device)

        def bare_forward() -> None:
            batched_embeddings(backbone, x, observed, args.chunk_size, args.device)
            if args.device == "cuda":
                torch.cuda.synchronize()

        def full_forward() -> None:
            with torch.inference_mode():
                for begin in range(0, x.shape[0], args.chunk_size):
                    xb = torch.from_numpy(x[begin : begin + args.chunk_size]).to(args.device)
                    ob = torch.from_numpy(observed[begin : begin + args.chunk_size]).to(args.device)
                    backbone(xb, ob)[:, -1].float().cpu()
            if args.device == "cuda":
                torch.cuda.synchronize()

        def end_to_end() -> dict:
            # One connection per scan, as a caller opens it (its few ms fall outside the timings).
            with connect_read_only(db_path, args.threads) as con:
                timings = scan_market(run_dir, con=con, spec=spec, config=config).timings
            if args.device == "cuda":
                torch.cuda.synchronize()
            return timings

        end_to_end()  # warm-up
        bare_forward()
        full_forward()
        # Interleaved, so all see the same load on a shared machine; CPU seconds beside wall seconds.
        runs, bare, runs_cpu, bare_cpu, full = [], [], [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            full_forward()
            full.append(time.perf_counter() - t)
            c = time.process_time()
            runs.append(end_to_end())
            runs_cpu.append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            bare_forward()
            bare.append(time.perf_counter() - t)
            bare_cpu.append(time.process_time() - c)
        log(f"end-to-end runs: {[round(r['total'], 3) for r in runs]}")
        log(f"bare forward runs: {[round(b, 3) for b in bare]}")
        log(f"full forward runs: {[round(b, 3) for b in full]}")

    end_to_end = _median([r["total"] for r in runs])
    bare_forward = _median(bare)
    full_forward_s = _median(full)
    ratio = end_to_end / bare_forward
    ratio_full = end_to_end / full_forward_s
    document = {
        "benchmark": "scan_latency",
        "tickers": args.tickers,
        "scored": len(tickers),
        "skipped": skipped.height,
        "days": args.days,
        "window_max": spec.window_max,
        "end_to_end_s": round(end_to_end, 4),
        "bare_forward_s": round(bare_forward, 4),
        "full_forward_s": round(full_forward_s, 4),
        "ratio": round(ratio, 3),
        "ratio_to_full_forward": round(ratio_full, 3),
        "cone_speedup": round(full_forward_s / bare_forward, 3),
        "targets": {
            "ratio_max": TARGET_RATIO,
            "end_to_end_max_s": TARGET_SECONDS,
            "forward_max_s": TARGET_FORWARD_SECONDS,
            "ratio_to_full_forward_met": ratio_full <= TARGET_RATIO,
            "ratio_to_scan_forward_met": ratio <= TARGET_RATIO,
            "seconds_met": end_to_end <= TARGET_SECONDS,
            "forward_met": bare_forward <= TARGET_FORWARD_SECONDS,
        },
        "end_to_end_cpu_s": round(_median(runs_cpu), 4),
        "bare_forward_cpu_s": round(_median(bare_cpu), 4),
        "ratio_cpu": round(_median(runs_cpu) / _median(bare_cpu), 3),
        "breakdown_s": {k: round(_median([r[k] for r in runs]), 4) for k in runs[0]},
        "end_to_end_runs_s": [round(r["total"], 4) for r in runs],
        "bare_forward_runs_s": [round(b, 4) for b in bare],
        "full_forward_runs_s": [round(b, 4) for b in full],
        "chunk_size": args.chunk_size,
        "repeats": args.repeats,
        "threads": args.threads,
        "threads_env": threads_env,
        "thread_record": thread_record(),
        "torch": torch.__version__,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "host": host_record(),
        "setup_ingest_s": round(setup_s, 2),
    }
    emit(document, args.json_out)
    return document


if __name__ == "__main__":
    main()
