"""Label budgets on the default market: the finetune's encoder rate chosen on val, finetune vs scratch
paired on test, and the per-step costs that size the demo's budgets.

Builds the default sweep's synthetic market in a temporary root, pretrains ``masked_recon``'s base
point, then:

- finetunes it at encoder rate scale 1.0 and 0.1 (full labels, and each draw of the smallest budget)
  and reports the val macro AUPRC of each (model selection and the probe's head both on val);
- compares the finetune (at the scale val prefers) with ``supervised`` from scratch, paired on
  identical test rows with shared block-bootstrap draws, at full labels and at the smallest budget
  (pooled over its draws);
- times a training step, the frozen probe at every budget, and a retrained head's probe, and
  estimates what the label budgets add to ``make demo`` (two partitions at once on 2 cores).

    python benchmarks/label_budgets.py --threads 1 [--budgets 5 20 --draws 3] [--json-out out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, host_record, log, pin_threads, thread_record  # noqa: E402


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--json-out", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    pin_threads(args.threads)
    import numpy as np
    import polars as pl

    from screener_ssl.data import dataset as ds
    from screener_ssl.data.label_budget import label_draws
    from screener_ssl.probe.compare import paired_comparison
    from screener_ssl.probe.label_budgets import RetrainPerDraw, run_label_budgets
    from screener_ssl.probe.bootstrap import pooled_macro_comparison
    from screener_ssl.probe.config import ProbeConfig
    from screener_ssl.probe.positions import eval_positions
    from screener_ssl.probe.probe import bootstrap_design, run_probe
    from screener_ssl.runs.finetune import finetune_settings
    from screener_ssl.runs.pretrain import pretrain_partition
    from screener_ssl.runs.sweep import load_sweep
    from screener_ssl.ssl.encoder import Encoder
    from screener_ssl.runs.run_dirs import load_pretrained_backbone
    from screener_ssl.ssl.finetune import finetune_config, scratch_backbone, train_classifier

    quiet = lambda _m: None  # noqa: E731
    sweep = load_sweep()
    root = Path(tempfile.mkdtemp(prefix="label_budgets_bench_"))
    t0 = time.perf_counter()
    ds.ingest_bars(root, "synthetic", sweep.spec.dataset.synthetic)
    ds.build_features(root, sweep.spec.dataset.window.volume_lookback)
    ds.build_windowed_dataset(root, sweep.spec.dataset.window)
    ds.build_labels(root, "synthetic", sweep.spec.dataset.window)
    dataset = ds.load_dataset(root)
    log(f"dataset built in {time.perf_counter() - t0:.0f}s")

    point = sweep.point("masked_recon", "base-s0")
    point = point.model_copy(update={"train": point.train.model_copy(update={"threads": args.threads})})
    probe_dict = dict(point.probe) | {"label_budgets": tuple(args.budgets), "label_draws": args.draws,
                                      "n_boot": args.n_boot, "stability_windows": 0}
    config = ProbeConfig(**probe_dict)
    t0 = time.perf_counter()
    run = pretrain_partition(dataset, point, root, log=quiet)
    pretrain_s = time.perf_counter() - t0
    log(f"pretrained masked_recon in {pretrain_s:.0f}s")
    backbone, schema = load_pretrained_backbone(run.run_dir, dataset.spec)
    supervised = sweep.point("supervised", "base-s0")
    sup_config = finetune_config(supervised.train.model_copy(update={"threads": args.threads}),
                                 **supervised.objective_config)
    draws = label_draws(dataset, config.label_budgets, config.label_draws, config.label_seed)
    smallest = [d for d in draws if d.budget == min(args.budgets)]

    def scratch(rows=None):
        return train_classifier(scratch_backbone(schema.encoder, dataset.spec.n_features, sup_config.seed), dataset,
                                sup_config, log=quiet, labelled_rows=rows)

    def finetuned(scale: float, rows=None):
        cfg = finetune_settings(point, encoder_lr_scale=scale)
        return train_classifier(backbone, dataset, cfg, log=quiet, labelled_rows=rows)

    def encoder_of(fitted) -> Encoder:
        return Encoder(fitted.classifier.backbone, normalization="none")

    out: dict = {"benchmark": "label_budgets", "host": host_record(), "threads": thread_record(),
                 "budgets": args.budgets, "draws": args.draws, "pretrain_s": pretrain_s}

    # -- the encoder rate of the finetune, chosen on val (full labels and the smallest budget)
    full_probe = ProbeConfig(**(dict(probe_dict) | {"label_budgets": ()}))
    rate: dict = {}
    fitted_full: dict = {}
    for scale in args.scales:
        t0 = time.perf_counter()
        fitted = finetuned(scale)
        seconds = time.perf_counter() - t0
        fitted_full[scale] = fitted
        probe = run_probe(encoder_of(fitted), dataset, full_probe, log=quiet)
        budget_val = [finetuned(scale, d.rows).selection_history for d in smallest]
        rate[str(scale)] = {
            "full_labels": {"selected_val_auprc": max(v for _, v in fitted.selection_history),
                            "selected_step": fitted.selected_step, "probe_val_auprc": probe.metrics["val"]["macro_auprc"],
                            "train_s": seconds, "steps": fitted.steps},
            f"labels_{min(args.budgets)}": {"selected_val_auprc_mean": float(np.mean([max(v for _, v in h)
                                                                                        for h in budget_val]))},
        }
        log(f"finetune encoder scale {scale}: {rate[str(scale)]}")
    chosen = max(args.scales, key=lambda s: rate[str(s)]["full_labels"]["probe_val_auprc"])
    out["finetune_encoder_rate_on_val"] = rate | {"chosen_by_val": chosen}

    # -- finetune vs scratch, paired on test: full labels
    t0 = time.perf_counter()
    scratch_full = scratch()
    step_s = (time.perf_counter() - t0) / sup_config.steps
    a = run_probe(encoder_of(fitted_full[chosen]), dataset, full_probe, log=quiet)
    b = run_probe(encoder_of(scratch_full), dataset, full_probe, log=quiet)
    full_cmp = paired_comparison(a.predictions, b.predictions, n_boot=args.n_boot)
    out["finetuned_vs_scratch_full_labels"] = {k: full_cmp[k] for k in ("auprc_a", "auprc_b", "diff", "ci_low",
                                                                         "ci_high", "verdict")}
    log(f"full labels: finetuned vs scratch {out['finetuned_vs_scratch_full_labels']}")

    # -- the same at every budget, pooled over draws; and the frozen probe's cost at every budget
    t0 = time.perf_counter()
    frozen = run_label_budgets(Encoder(backbone, normalization="none"), dataset, config, log=quiet)
    frozen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fine = run_label_budgets(RetrainPerDraw(lambda d: encoder_of(finetuned(chosen, d.rows))), dataset, config,
                             log=quiet)
    retrained_s = time.perf_counter() - t0
    sup = run_label_budgets(RetrainPerDraw(lambda d: encoder_of(scratch(d.rows))), dataset, config, log=quiet)
    _, test_pos = eval_positions(dataset, config)
    y = dataset.labels[test_pos]
    design = bootstrap_design(dataset, test_pos, config)
    cols = [f"score_{p}" for p in dataset.patterns]
    per_budget = {}
    for k in args.budgets:
        fa = [f.select(cols).to_numpy() for _, f in fine.predictions.filter(pl.col("budget") == k)
              .group_by("draw", maintain_order=True)]
        fb = [f.select(cols).to_numpy() for _, f in sup.predictions.filter(pl.col("budget") == k)
              .group_by("draw", maintain_order=True)]
        cmp = pooled_macro_comparison(y, fa, fb, design=design, n_boot=args.n_boot)
        per_budget[str(k)] = {key: cmp[key] for key in ("auprc_a", "auprc_b", "diff", "ci_low", "ci_high", "verdict")}
        per_budget[str(k)]["masked_recon_frozen_auprc"] = frozen.metrics["per_budget"][str(k)]["auprc"]
    out["finetuned_vs_scratch_by_budget"] = per_budget
    log(f"by budget: {per_budget}")

    # -- costs and the demo estimate: every base partition probes at every budget; supervised's two
    # seeds and the finetuned masked_recon retrain once per (budget, draw); two partitions at once.
    n_draws = len(draws)
    keys = sweep.partition_keys("base")
    retrained_keys = [k for k in keys if k.startswith("supervised|")]
    frozen_keys = [k for k in keys if k not in retrained_keys]
    per_retrained_run = retrained_s
    added_cpu = len(frozen_keys) * frozen_s + (len(retrained_keys) + 1) * per_retrained_run
    out["costs"] = {
        "train_step_s": step_s,
        "frozen_probe_all_budgets_s": frozen_s,
        "retrained_probe_all_budgets_s": retrained_s,
        "retrained_per_draw_s": retrained_s / n_draws,
        "demo_partitions": {"frozen": len(frozen_keys), "retrained": len(retrained_keys), "finetuned": 1},
        "demo_added_s_estimate": added_cpu / 2,
        "note": "frozen_probe_all_budgets_s is masked_recon's (TCN, D=64); minirocket's head fit is wider",
    }
    emit(out, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
