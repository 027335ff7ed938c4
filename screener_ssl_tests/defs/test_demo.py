"""`make demo` on a tiny sweep: named, tagged partition runs (two at a time), seeds, verdicts, pool limits restored."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from screener_ssl import demo, pipeline

DEMO_SWEEP = """
dataset:
  synthetic: {n_tickers: 10, n_days: 420, seed: 1, difficulty: 0.2}
  window: {window_max: 32, crop_lengths: [16, 32], min_history: 16, label_horizon: 5}
defaults:
  backbone: {kind: tcn, embed_dim: 16, hidden_dim: 16, n_layers: 2}
  train: {steps: 6, batch_size: 16, seed: 0, threads: 1, checkpoint_every: 3, log_every: 3}
  probe: {n_boot: 20, stability_windows: 16, stability_augs: 2, max_train_windows: 2000,
          label_budgets: [2, 4], label_draws: 2}
objectives:
  masked_recon:
    variants: {base: {seeds: [0, 1]}, full: {train: {steps: 8, threads: 2}}}
  raw_features:
    variants: {base: {}}
  minirocket:
    variants: {base: {objective: {n_kernels: 84, fit_windows: 200}}}
  supervised:
    variants: {base: {}}
"""


def test_demo_runs_named_tagged_partitions_two_at_a_time(tiny_env, capsys) -> None:
    Path(tiny_env["SCREENER_SSL_SWEEP"]).write_text(DEMO_SWEEP)
    # The instance of `make demo`: one torch step at a time unless the demo says otherwise.
    home = Path(tiny_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n")

    assert demo.main(["--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "5 partitions for variant 'base', 2 at a time (1 torch thread(s) each)" in out
    assert "seeds masked_recon [0, 1], one seed elsewhere" in out
    assert "vs minirocket" in out and "vs masked_recon" in out
    header = next(line for line in out.splitlines() if "vs masked_recon" in line)
    assert header.index("kind") < header.index("test AUPRC") < header.index("vs masked_recon") < header.index("val AUPRC")
    assert "_report.html" in out
    assert "finetuned masked_recon|base-s0" in out
    # Label budgets: every row (the finetune too) at 2 and 4 labelled tickers, with paired verdicts.
    assert "@2 tickers" in out and "@4 tickers" in out
    assert "with 2 labelled tickers, better than supervised on the same labels:" in out
    board = pl.read_parquet(
        Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "models" / "_leaderboard.parquet"
    )
    finetuned = board.filter(board["objective"] == "masked_recon (finetuned)").row(0, named=True)
    assert finetuned["labels_2_auprc"] is not None and finetuned["labels_2_vs_supervised"] in ("better", "worse", "tie")
    assert board.filter(board["objective"] == "minirocket").row(0, named=True)["labels_4_vs_supervised"] is not None
    assert (Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "models" / "_label_efficiency.png").exists()
    assert "tickers scored" in out  # the demo ends with a market scan by the model chosen on val

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=demo.SWEEP_JOB))
    by_partition = {r.tags["dagster/partition"]: r for r in runs}
    assert set(by_partition) == {
        "masked_recon|base-s0", "masked_recon|base-s1", "raw_features|base", "minirocket|base", "supervised|base"
    }
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    second = by_partition["masked_recon|base-s1"].tags
    assert second["screener_ssl/objective"] == "masked_recon" and second["screener_ssl/variant"] == "base"
    assert second["screener_ssl/seed"] == "1" and second["screener_ssl/launched_by"] == "make demo"
    assert second["screener_ssl/point_fingerprint"] != by_partition["masked_recon|base-s0"].tags[
        "screener_ssl/point_fingerprint"
    ]
    # The torch pool is back on the instance's default limit.
    info = instance.event_log_storage.get_concurrency_info(pipeline.TORCH_POOL)
    assert info.limit == 1 and info.using_default_limit

    board = Path(tiny_env["SCREENER_SSL_DATA_DIR"]) / "models" / "_leaderboard.parquet"
    rows = {r["objective"]: r for r in pl.read_parquet(board).iter_rows(named=True)}
    assert rows["masked_recon"]["n_seeds"] == 2 and rows["masked_recon"]["seeds"] == "0,1"
    assert rows["masked_recon"]["vs_minirocket_against"] == "minirocket|base"
    assert rows["masked_recon"]["vs_minirocket_verdict"] in ("better", "worse", "tie")


def test_concurrency_never_runs_more_torch_threads_than_cores() -> None:
    assert pipeline.concurrent_partitions(2, cores=2, threads=1) == 2
    assert pipeline.concurrent_partitions(2, cores=2, threads=2) == 1
    assert pipeline.concurrent_partitions(4, cores=16, threads=2) == 4
    assert pipeline.concurrent_partitions(2, cores=1, threads=1) == 1


def test_reference_partition_is_the_first_seed(tiny_env) -> None:
    Path(tiny_env["SCREENER_SSL_SWEEP"]).write_text(DEMO_SWEEP)
    from screener_ssl.defs.resources import ScreenerSettings

    sweep = ScreenerSettings.from_env().load_sweep()
    assert demo.reference_partition(sweep, "masked_recon", "base") == "masked_recon|base-s0"
    assert demo.reference_partition(sweep, "masked_recon", "full") == "masked_recon|full"
    assert demo.reference_partition(sweep, "vicreg", "base") is None
    assert pipeline.max_point_threads(sweep, sweep.partition_keys("full")) == 2
