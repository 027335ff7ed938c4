"""Candlestick rendering throughput (images/s): gathered windows -> chart images, and the chart teacher's forward.

Windows are gathered from a synthetic market's feature store (built in memory, no
data root) exactly as the sampler and probe gather them; then, per batch size:

(a) render: ``screener_ssl.ssl.render.render_candles`` on pre-gathered windows;
(b) gather + render: the same with the gather inside the timed loop;
(c) teacher: render + the ``chart_distill`` CNN teacher forward (inference mode), the
    cost of probing or scanning with the teacher.

Each is the median over ``--repeats`` timed calls after a warm-up, beside the fastest
call (on a shared machine the median includes waits for a CPU).

    python benchmarks/render_throughput.py --batch-sizes 64,512 --repeats 20 --threads 2 [--json-out out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, host_record, log, peak_rss_mb, pin_threads, pin_torch_threads, thread_record  # noqa: E402


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="64,512")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--tickers", type=int, default=50)
    parser.add_argument("--days", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def _timed(fn, repeats: int, warmup: int, sync) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    threads_env = pin_threads(args.threads)
    import numpy as np
    import torch

    from screener_ssl.data.features import compute_shape_features
    from screener_ssl.data.synthetic import SyntheticMarketConfig, generate_market
    from screener_ssl.data.windows import WindowSpec, gather_windows
    from screener_ssl.ssl.objectives.chart_distill import ChartDistillConfig, ChartTeacher
    from screener_ssl.ssl.render import render_candles

    torch_threads = pin_torch_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    log(f"building a {args.tickers} x {args.days} synthetic market")
    market = generate_market(SyntheticMarketConfig(n_tickers=args.tickers, n_days=args.days, seed=args.seed))
    store = compute_shape_features(market.bars)
    spec = WindowSpec()
    config = ChartDistillConfig()
    teacher = ChartTeacher(config.render.height, config.teacher_width, config.teacher_dim).to(device).eval()
    rng = np.random.default_rng(args.seed)
    starts = store.offsets[:-1]
    lengths = np.diff(store.offsets)
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        ticker = rng.integers(0, len(starts), size=batch_size)
        ticker_start = starts[ticker]
        decision = ticker_start + rng.integers(spec.min_history, lengths[ticker])
        x, observed = gather_windows(
            store.values, ticker_start, decision, spec.window_max, open_known=spec.open_known_mask
        )
        xt, ot = torch.from_numpy(x).to(device), torch.from_numpy(observed).to(device)

        def render() -> None:
            render_candles(xt, ot, config.render)

        def gather_render() -> None:
            gx, go = gather_windows(store.values, ticker_start, decision, spec.window_max, open_known=spec.open_known_mask)
            render_candles(torch.from_numpy(gx).to(device), torch.from_numpy(go).to(device), config.render)

        @torch.inference_mode()
        def teacher_forward() -> None:
            teacher(render_candles(xt, ot, config.render))

        row = {"batch_size": batch_size, "image_shape": [2, config.render.height, spec.window_max]}
        for name, fn in (("render", render), ("gather_render", gather_render), ("render_teacher", teacher_forward)):
            median, best = _timed(fn, args.repeats, args.warmup, sync)
            row[name] = {
                "median_s": median,
                "best_s": best,
                "images_per_s": batch_size / median,
                "images_per_s_best": batch_size / best,
            }
        log(
            f"batch {batch_size}: render {row['render']['images_per_s']:.0f} images/s, "
            f"gather+render {row['gather_render']['images_per_s']:.0f}, "
            f"render+teacher {row['render_teacher']['images_per_s']:.0f}"
        )
        rows.append(row)
    emit(
        {
            "benchmark": "render_throughput",
            "device": args.device,
            "market": {"tickers": args.tickers, "days": args.days, "seed": args.seed},
            "rows": rows,
            "peak_rss_mb": peak_rss_mb(),
            "threads": {**threads_env, **torch_threads, **thread_record()},
            "host": host_record(),
        },
        args.json_out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
