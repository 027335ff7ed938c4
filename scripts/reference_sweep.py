"""The reference verdict: sweep points trained, probed (full labels, label budgets, budget curves),
indexed and ranked through the library's run functions alone (no Dagster), several at once.

What ``screener-ssl materialize`` does for ``ssl_schema,pretrained_encoder,probe_metrics`` and
``experiment_index`` on a machine with one GPU (or many cores), without an instance: the bundled
sweep's dataset is built once under ``--data-root``, then ``--jobs`` worker processes each take
one point (``runs.pretrain.pretrain_partition``, then ``runs.probe.probe_run``, exactly what the
``pretrained_encoder`` and ``probe_metrics`` assets call), and the index, the leaderboard, its
Parquet, the HTML report and the printed board are written at the end from every point that
finished. Points still running at ``--deadline`` seconds are stopped and named as missing: the
board says what it covers.

    python scripts/reference_sweep.py --variant full --objectives masked_recon,supervised,vicreg \\
        --device cuda --jobs 6 --data-root /tmp/ref --out /tmp/ref_out

``--label-budgets`` overrides the points' ``probe.label_budgets`` (recorded in the summary).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _points(sweep, objectives: list[str], variant: str, seeds: list[int] | None) -> list[str]:
    """Partition keys of ``variant`` (its seed points ``<variant>-s<k>`` where it has seeds) per objective."""
    keys = []
    for objective in objectives:
        defined = [k for k in sweep.partition_keys() if k.startswith(f"{objective}|")]
        matching = [k for k in defined if k.split("|", 1)[1] == variant or k.split("|", 1)[1].startswith(f"{variant}-s")]
        if not matching:
            raise SystemExit(f"{objective} defines no {variant!r} point; it defines {[k.split('|')[1] for k in defined]}")
        if seeds is not None:
            matching = [k for k in matching if k.split("|", 1)[1] in {f"{variant}-s{s}" for s in seeds}] or matching
        keys += matching
    return keys


def _configure(point, device: str | None, label_budgets: list[int] | None, steps: int | None,
               threads: int | None = None):
    """``point`` with the command line's overrides (each recorded in the run's config and the summary)."""
    updates = {}
    train = {**({"device": device} if device is not None else {}), **({"steps": steps} if steps is not None else {}),
             **({"threads": threads} if threads is not None else {})}
    if train:
        updates["train"] = point.train.model_copy(update=train)
    if label_budgets is not None:
        updates["probe"] = {**point.probe, "label_budgets": label_budgets}
    return point.model_copy(update=updates) if updates else point


def _run_point(key: str, sweep_path: str | None, data_root: str, device: str | None, label_budgets, steps,
               log_dir: str, finetune: bool = False, threads: int | None = None) -> dict:
    """One worker's point: train, probe (and with ``finetune``, finetune its encoder end to end and probe
    that too, as the ``finetuned_classifier`` asset does); returns what the summary needs (the log goes to a file).
    """
    from screener_ssl.data.dataset import load_dataset
    from screener_ssl.runs.finetune import finetune_partition
    from screener_ssl.runs.pretrain import pretrain_partition
    from screener_ssl.runs.probe import probe_run
    from screener_ssl.runs.sweep import load_sweep
    from screener_ssl.ssl.trainer import seed_everything

    objective, variant = key.split("|", 1)
    point = _configure(load_sweep(sweep_path).point(objective, variant), device, label_budgets, steps, threads)
    seed_everything(point.train.seed, point.train.threads)
    log_path = Path(log_dir) / f"{objective}__{variant}.log"
    with log_path.open("w") as handle:
        def log(message: str) -> None:
            handle.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
            handle.flush()

        root = Path(data_root)
        dataset = load_dataset(root)
        started = time.perf_counter()
        outcome = pretrain_partition(dataset, point, root, log=log)
        trained = time.perf_counter() - started
        probed = probe_run(point, dataset, outcome.run_dir, log=log)
        macro = probed.result.metrics["macro"]
        record = {
            "key": key, "run_dir": str(outcome.run_dir), "train_s": trained,
            "probe_s": time.perf_counter() - started - trained, "test_auprc": macro["auprc"],
            "val_auprc": macro["val_auprc"],
        }
        if finetune:
            begun = time.perf_counter()
            run_dir, _ = finetune_partition(dataset, point, outcome.run_dir, root, log=log)
            tuned = probe_run(point, dataset, run_dir, finetune_source=outcome.run_dir, log=log)
            record["finetuned"] = {
                "run_dir": str(run_dir), "seconds": time.perf_counter() - begun,
                "test_auprc": tuned.result.metrics["macro"]["auprc"],
            }
    return record


def _finished_before(out: Path, key: str) -> dict | None:
    """The record of ``key`` from an earlier call with the same --out, if its run dirs are still there."""
    path = out / "points" / (key.replace("|", "__") + ".json")
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    dirs = [record["run_dir"]] + ([record["finetuned"]["run_dir"]] if "finetuned" in record else [])
    return record if all((Path(d) / "probe_metrics.json").exists() for d in dirs) else None


def _worker_init(threads: int) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ[name] = str(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objectives", required=True, help="comma-separated objectives")
    parser.add_argument("--variant", default="full")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds of the variant (default: all)")
    parser.add_argument("--extra", default="", help="comma-separated further partition keys, e.g. 'minirocket|base'")
    parser.add_argument("--device", default=None, help="TrainConfig.device for every point (default: the sweep's)")
    parser.add_argument("--label-budgets", default=None, help="comma-separated labelled tickers (default: the sweep's)")
    parser.add_argument("--finetune", default="", help="comma-separated objectives whose points are also finetuned")
    parser.add_argument("--resume", action="store_true",
                        help="skip points an earlier call with the same --out and --data-root finished")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2,
                        help="threads per worker: the points' train.threads (jobs x threads should not exceed the cores)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds; unfinished points are stopped")
    parser.add_argument("--sweep", default=None)
    parser.add_argument("--tickers", type=int, default=None, help="shrink the dataset (a smoke run)")
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="shorten training (a smoke run; recorded)")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True, help="folder for the board, its Parquet, the report, the summary")
    args = parser.parse_args(argv)
    _worker_init(args.threads)
    sys.path.insert(0, str(REPO_ROOT))

    from screener_ssl.data import dataset as ds
    from screener_ssl.data.synthetic import SyntheticMarketConfig
    from screener_ssl.runs.sweep import load_sweep

    started = time.perf_counter()
    sweep_path = args.sweep
    sweep = load_sweep(sweep_path)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    keys = _points(sweep, [o for o in args.objectives.split(",") if o], args.variant, seeds)
    keys += [k for k in args.extra.split(",") if k and k not in keys]
    unknown = [k for k in keys if k not in sweep.partition_keys()]
    if unknown:
        raise SystemExit(f"not points of the sweep: {unknown}")
    budgets = [int(k) for k in args.label_budgets.split(",")] if args.label_budgets else None
    root, out = Path(args.data_root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    log_dir.mkdir(exist_ok=True)

    spec = sweep.spec.dataset
    synthetic = spec.synthetic.model_copy(update={
        k: v for k, v in (("n_tickers", args.tickers), ("n_days", args.days)) if v is not None
    })
    finetuned = {o for o in args.finetune.split(",") if o}
    done: list[dict] = []
    if args.resume:
        done = [r for r in (_finished_before(out, k) for k in keys) if r is not None]
        _log(f"resuming: {len(done)} points finished before: {[r['key'] for r in done]}")
    if not (args.resume and (root / "datasets").exists()):
        t0 = time.perf_counter()
        ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(**synthetic.model_dump()))
        ds.build_features(root, spec.window.volume_lookback)
        ds.build_windowed_dataset(root, spec.window)
        ds.build_labels(root, "synthetic", spec.window)
        _log(f"dataset built in {time.perf_counter() - t0:.1f} s")
    todo = [k for k in keys if k not in {r["key"] for r in done}]
    _log(f"{len(todo)} points to run: {todo}")

    failed: dict[str, str] = {}
    (out / "points").mkdir(exist_ok=True)
    # Seed by seed, so that a deadline leaves whole seeds of every objective rather than every seed of a few;
    # within a seed the points that retrain per label-budget draw (supervised, finetunes) start first.
    def _seed(key: str) -> str:
        variant = key.split("|", 1)[1]
        return variant.rsplit("-s", 1)[1] if "-s" in variant else ""

    order = sorted(todo, key=lambda k: (_seed(k), not (k.startswith("supervised|") or k.split("|")[0] in finetuned),
                                        keys.index(k)))
    pool = ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                               initargs=(args.threads,))
    futures = {pool.submit(_run_point, k, sweep_path, str(root), args.device, budgets, args.steps, str(log_dir),
                           k.split("|")[0] in finetuned, args.threads): k
               for k in order}
    pending = set(futures)
    while pending:
        left = None if args.deadline is None else args.deadline - (time.perf_counter() - started)
        if left is not None and left <= 0:
            break
        finished, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
        for future in finished:
            key = futures[future]
            try:
                done.append(future.result())
                (out / "points" / (key.replace("|", "__") + ".json")).write_text(json.dumps(done[-1], indent=2))
                tuned = done[-1].get("finetuned")
                _log(f"{key}: test {done[-1]['test_auprc']:.3f} (train {done[-1]['train_s']:.0f} s, "
                     f"probe {done[-1]['probe_s']:.0f} s)"
                     + ("" if tuned is None else f"; finetuned {tuned['test_auprc']:.3f} ({tuned['seconds']:.0f} s)"))
            except Exception as exc:  # noqa: BLE001 - a failed point is named in the summary, the rest go on
                failed[key] = f"{type(exc).__name__}: {exc}"
                _log(f"{key} FAILED: {failed[key]}")
    missing = sorted(futures[f] for f in pending)
    if missing:
        _log(f"deadline: stopping {missing}")
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)

    from screener_ssl.tracking.board import ordered_board
    from screener_ssl.tracking.index import build_index
    from screener_ssl.tracking.leaderboard import format_leaderboard, leaderboard
    from screener_ssl.tracking.report_html import write_report

    problems: list[dict] = []
    index = build_index(root / "models", problems)
    board = ordered_board(leaderboard(index))
    board.write_parquet(out / "leaderboard.parquet")
    text = format_leaderboard(board)
    (out / "leaderboard.txt").write_text(text + "\n")
    write_report(board, root / "models", out / "report.html")
    summary = {
        "points": keys, "finished": done, "failed": failed, "missing": missing,
        "label_budgets_override": budgets, "finetuned_objectives": sorted(finetuned), "device": args.device,
        "jobs": args.jobs, "threads": args.threads,
        "steps_override": args.steps, "dataset": synthetic.model_dump(),
        "index_problems": problems, "wall_s": time.perf_counter() - started, "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(text)
    _log(f"{len(done)} of {len(keys)} points in {summary['wall_s']:.0f} s; board, report and summary in {out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
