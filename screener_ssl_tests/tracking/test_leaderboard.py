"""The leaderboard: seeds pooled, ranked by val, paired verdicts on shared test rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from screener_ssl.tracking.leaderboard import (
    TABLE_COLUMNS,
    format_leaderboard,
    leaderboard,
    leaderboard_records,
    ordered_board,
)
from screener_ssl.tracking.board import verdict_table


def _run(tmp_path, name: str, signal: float, seed: int, val: float, y: np.ndarray, base: pl.DataFrame) -> dict:
    run_dir = tmp_path / name
    run_dir.mkdir()
    rng = np.random.default_rng(seed + 17 * len(name))
    score = signal * y + rng.standard_normal(y.shape[0])
    base.with_columns(score_p=pl.Series(score)).write_parquet(run_dir / "probe_predictions.parquet")
    return {"run_dir": str(run_dir), "val": val, "seed": seed, "test": float("nan")}


def _test_rows(rng: np.random.Generator, n_tickers: int = 8, n_days: int = 150) -> tuple[np.ndarray, pl.DataFrame]:
    """Labels of one pattern on a ticker x day grid of test rows, and the frame every run's predictions share."""
    y = (rng.random(n_tickers * n_days) < 0.05).astype(np.int8)
    base = pl.DataFrame(
        {
            "ticker": [f"T{t}" for t in np.repeat(np.arange(n_tickers), n_days)],
            "date": (np.datetime64("2022-01-03") + np.tile(np.arange(n_days), n_tickers)).astype("datetime64[D]"),
            "split": ["test"] * y.shape[0],
            "decision_row": np.arange(y.shape[0], dtype=np.int64),
            "label_p": y,
        }
    )
    return y, base


def test_leaderboard_pools_seeds_ranks_by_val_and_gives_paired_verdicts(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y, base = _test_rows(rng)
    rows = []
    # (objective, variant, signal, seed, val AUPRC, test AUPRC as indexed)
    spec = [
        ("masked_recon", "full-s0", 1.0, 0, 0.30, 0.30),
        ("masked_recon", "full-s1", 1.0, 1, 0.32, 0.31),
        ("vicreg", "full-s0", 3.0, 0, 0.50, 0.60),
        ("vicreg", "full-s1", 3.0, 1, 0.52, 0.62),
        ("raw_features", "full", 0.5, 0, 0.20, 0.90),  # best test, worst val: ranked last
    ]
    for i, (objective, variant, signal, seed, val, test) in enumerate(spec):
        run = _run(tmp_path, f"{objective}-{variant}", signal, seed, val, y, base)
        rows.append(
            {
                "model_type": objective, "run_id": f"r{i}", "run_dir": run["run_dir"],
                "experiment.objective": objective, "experiment.variant": variant, "experiment.backbone": "tcn",
                "run_meta.seed": seed, "probe_metrics.macro.auprc": test, "probe_metrics.val.macro_auprc": val,
                "probe_metrics.macro.ci_low": test - 0.1, "probe_metrics.macro.ci_high": test + 0.1,
            }
        )
    board = leaderboard(pl.DataFrame(rows), baselines={"raw_features"}, n_boot=100)
    assert board.get_column("objective").to_list() == ["vicreg", "masked_recon", "raw_features"]
    vicreg = board.row(0, named=True)
    assert vicreg["variant"] == "full" and vicreg["n_seeds"] == 2 and vicreg["seeds"] == "0,1"
    assert abs(vicreg["auprc"] - 0.61) < 1e-9 and abs(vicreg["seed_sd"] - np.std([0.60, 0.62], ddof=1)) < 1e-9
    assert vicreg["ci_low"] < vicreg["ci_high"]  # pooled CI over the shared test rows
    assert vicreg["vs_reference_verdict"] == "better" and vicreg["vs_reference_against"] == "masked_recon|full"
    assert vicreg["vs_baseline_verdict"] == "better" and vicreg["vs_baseline_against"] == "raw_features|full"
    masked = board.row(1, named=True)
    assert masked["vs_reference_verdict"] is None  # not compared with itself
    text = format_leaderboard(board)
    assert "val AUPRC" in text and "better" in text and "best baseline (by val): raw_features|full" in text

    records = leaderboard_records(board)
    assert [r["rank"] for r in records] == [1, 2, 3]
    assert all(list(r) == [name for name, _, _ in TABLE_COLUMNS] for r in records)
    assert records[0]["objective"] == "vicreg" and records[0]["n_seeds"] == 2
    assert records[0]["test_auprc"] == vicreg["auprc"] and records[0]["test_ci_low"] == vicreg["ci_low"]
    assert records[0]["vs_reference"] == "better" and records[0]["baseline"] == "raw_features|full"
    assert records[1]["vs_reference"] is None and records[1]["vs_reference_diff"] is None
    assert records[2]["seed_sd"] is None  # one seed: no spread, not NaN


def test_sweep_seeds_expand_into_one_run_each(tmp_path) -> None:
    from screener_ssl.runs.sweep import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(
        "objectives:\n"
        "  vicreg:\n"
        "    variants:\n"
        "      base: {}\n"
        "      full: {seeds: [0, 1, 2], train: {steps: 10}}\n"
    )
    sweep = load_sweep(path)
    assert sorted(v for _, v in sweep.points) == ["base", "full-s0", "full-s1", "full-s2"]
    assert [sweep.point("vicreg", f"full-s{s}").train.seed for s in range(3)] == [0, 1, 2]
    assert sweep.point("vicreg", "full-s2").train.steps == 10
    assert sweep.partition_keys("full") == ["vicreg|full-s0", "vicreg|full-s1", "vicreg|full-s2"]
    default = load_sweep()
    assert all(
        len([k for k in default.partition_keys("full") if k.startswith(f"{o}|")]) >= 3
        for o, v in default.points if v.startswith("full")
    )
    assert "shape_free|base" in default.partition_keys("base")


def test_verdicts_against_minirocket_and_reference_encoder_rows(tmp_path) -> None:
    """Every row is paired with minirocket's on shared rows; a run's teacher gets a row of its own."""
    rng = np.random.default_rng(1)
    y, base = _test_rows(rng)
    rows = []
    # (objective, variant, signal, seed, val AUPRC, teacher signal or None)
    spec = [
        ("masked_recon", "base-s0", 1.0, 0, 0.30, None),
        ("masked_recon", "base-s1", 1.0, 1, 0.31, None),
        ("minirocket", "base", 3.0, 0, 0.40, None),
        ("minirocket", "full", 0.2, 0, 0.10, None),  # another variant: not the counterpart of base rows
        ("chart_distill", "base", 8.0, 0, 0.60, 0.3),
    ]
    for i, (objective, variant, signal, seed, val, teacher) in enumerate(spec):
        run = _run(tmp_path, f"{objective}-{variant}", signal, seed, val, y, base)
        row = {
            "model_type": objective, "run_id": f"r{i}", "run_dir": run["run_dir"],
            "experiment.objective": objective, "experiment.variant": variant, "experiment.backbone": "tcn",
            "run_meta.seed": seed, "probe_metrics.macro.auprc": val, "probe_metrics.val.macro_auprc": val,
            "pretrain_config.cost.pretrain_seconds": 10.0 + i,
        }
        if teacher is not None:
            (tmp_path / f"{objective}-{variant}" / "teacher").mkdir()
            score = teacher * y + np.random.default_rng(5).standard_normal(y.shape[0])
            base.with_columns(score_p=pl.Series(score)).write_parquet(
                tmp_path / f"{objective}-{variant}" / "teacher" / "probe_predictions.parquet"
            )
            row |= {
                "reference.teacher.probe_metrics.macro.auprc": 0.15,
                "reference.teacher.probe_metrics.val.macro_auprc": 0.14,
                "reference.teacher.probe_metrics.cost.encoder_parameters": 1234,
            }
        rows.append(row)
    board = leaderboard(pl.DataFrame(rows), baselines={"minirocket"}, n_boot=100)
    by = {(r["objective"], r["variant"]): r for r in board.iter_rows(named=True)}
    assert set(by) == {("masked_recon", "base"), ("minirocket", "base"), ("minirocket", "full"),
                       ("chart_distill", "base"), ("chart_distill:teacher", "base")}
    student, teacher = by[("chart_distill", "base")], by[("chart_distill:teacher", "base")]
    assert student["vs_minirocket_against"] == "minirocket|base" and student["vs_minirocket_verdict"] == "better"
    assert by[("masked_recon", "base")]["vs_minirocket_verdict"] == "worse"
    assert by[("masked_recon", "base")]["n_seeds"] == 2
    assert by[("minirocket", "base")]["vs_minirocket_verdict"] is None  # not compared with itself
    # The teacher: its own metrics and predictions, its run's identity, no pretraining cost of its own.
    assert teacher["val_auprc"] == 0.14 and teacher["auprc"] == 0.15 and teacher["parameters"] == 1234
    assert teacher["pretrain_s"] is None and student["pretrain_s"] == 14.0
    assert teacher["vs_minirocket_verdict"] == "worse" and teacher["vs_minirocket_diff"] < 0
    assert teacher["vs_reference_against"] == "masked_recon|base"
    assert [r for r in board.get_column("objective")][:2] == ["chart_distill", "minirocket"]  # ranked by val
    text = format_leaderboard(board)
    assert "vs minirocket" in text and "chart_distill:teacher" in text


def _kinds_board(tmp_path) -> pl.DataFrame:
    """A board of an objective, two registry baselines, minirocket and a run's reference encoder."""
    rng = np.random.default_rng(2)
    y, base = _test_rows(rng)
    rows = []
    for i, (objective, signal, val) in enumerate(
        [("masked_recon", 1.0, 0.30), ("supervised", 3.0, 0.50), ("minirocket", 2.0, 0.40), ("raw_features", 0.5, 0.20),
         ("chart_distill", 2.5, 0.45)]
    ):
        run = _run(tmp_path, objective, signal, 0, val, y, base)
        row = {
            "model_type": objective, "run_id": f"r{i}", "run_dir": run["run_dir"], "experiment.objective": objective,
            "experiment.variant": "base", "experiment.backbone": "tcn", "run_meta.seed": 0,
            "probe_metrics.macro.auprc": val, "probe_metrics.val.macro_auprc": val,
        }
        if objective == "chart_distill":
            (tmp_path / objective / "teacher").mkdir()
            base.with_columns(score_p=pl.Series(y + rng.standard_normal(y.shape[0]))).write_parquet(
                tmp_path / objective / "teacher" / "probe_predictions.parquet"
            )
            row |= {"reference.teacher.probe_metrics.macro.auprc": 0.1, "reference.teacher.probe_metrics.val.macro_auprc": 0.1}
        rows.append(row)
    return leaderboard(pl.DataFrame(rows), n_boot=50)


def test_each_row_says_its_kind_from_the_objective_registry(tmp_path) -> None:
    board = _kinds_board(tmp_path)
    kinds = dict(zip(board.get_column("objective"), board.get_column("kind")))
    assert kinds == {"supervised": "baseline", "chart_distill": "objective", "minirocket": "baseline",
                     "masked_recon": "objective", "raw_features": "baseline", "chart_distill:teacher": "reference"}
    assert board.get_column("run_ids").to_list() == board.get_column("run_id").to_list()  # one seed each
    assert all(Path(d).is_dir() for d in board.get_column("run_dir"))


def test_the_printed_board_the_parquet_and_the_table_lead_with_the_verdict_in_one_order(tmp_path) -> None:
    from screener_ssl.tracking.board import table_columns

    board = _kinds_board(tmp_path).with_columns(
        # Fields the label-budget work adds: placed by their names, budgets by k ascending.
        labels_100_auprc=pl.lit(0.3), labels_20_auprc=pl.lit(0.2), labels_20_vs_minirocket=pl.lit("worse"),
        labels_20_ci_low=pl.lit(0.1), labels_20_vs_supervised=pl.lit("tie"), label_efficiency=pl.lit(0.7),
        still_rising=pl.lit(True), current=pl.lit(True),
    )
    names = [c.name for c in table_columns(board)]
    assert names[:16] == [
        "rank", "objective", "variant", "kind", "current", "test_auprc", "test_ci_low", "test_ci_high",
        "still_rising", "vs_reference", "vs_minirocket", "vs_baseline", "label_efficiency",
        "labels_20_auprc", "labels_20_ci_low", "labels_20_vs_supervised",
    ]
    assert names[16:19] == ["labels_20_vs_minirocket", "labels_100_auprc", "pretrain_s"]  # then cost, then the rest
    assert names.index("val_auprc") > names.index("parameters")

    # The Parquet: the same columns in the same order (under the board's own names), rank first.
    parquet = ordered_board(board)
    sources = [c.column for c in table_columns(board)]
    assert parquet.columns[: len(sources)] == sources and parquet.get_column("rank").to_list() == list(range(1, 7))
    assert set(parquet.columns) == set(board.columns) | {"rank"}
    assert ordered_board(parquet).equals(parquet)  # reading it back and ordering again changes nothing

    # The UI table: records and schema in that order.
    [first, *_] = leaderboard_records(parquet)
    assert list(first) == names and first["kind"] == "baseline" and first["objective"] == "supervised"

    # The printed board: its headers in the same order.
    header = format_leaderboard(parquet).splitlines()[0]
    shown = ["objective", "kind", "current", "test AUPRC", "rising", "vs masked_recon", "vs minirocket",
             "vs best baseline", "label eff.", "@20 tickers", "@100 tickers", "pretrain s", "params", "val AUPRC", "ECE"]
    positions = [header.index(h) for h in shown]
    assert positions == sorted(positions)
    supervised = format_leaderboard(parquet).splitlines()[2]
    assert "supervised" in supervised and "baseline" in supervised and "yes" in supervised

    # The first screen's narrow table: the decisive columns as printed, the AUPRC at the smallest budget only.
    schema, rows = verdict_table(parquet)
    assert [name for name, _, _ in schema] == [
        "#", "objective", "variant", "kind", "current", "test AUPRC [95% CI]", "rising", "vs masked_recon",
        "vs minirocket", "vs best baseline", "label eff.", "@20 tickers: AUPRC [CI] s m"]
    assert rows[0]["objective"] == "supervised" and rows[0]["#"] == 1 and rows[0]["vs masked_recon"].startswith("better")
    top = parquet.row(0, named=True)
    assert rows[0]["test AUPRC [95% CI]"] == f"{top['auprc']:.3f} [{top['ci_low']:.3f}, {top['ci_high']:.3f}]"
    assert rows[0]["test AUPRC [95% CI]"] in supervised  # the printed board's very cell


def test_optional_columns_stay_out_of_a_board_without_them(tmp_path) -> None:
    from screener_ssl.tracking.board import table_columns

    names = [c.name for c in table_columns(_kinds_board(tmp_path))]
    assert names == [name for name, _, _ in TABLE_COLUMNS]
    assert not {"current", "still_rising", "label_efficiency"} & set(names)


def test_a_row_is_current_only_when_every_run_it_pools_is() -> None:
    from screener_ssl.tracking.currency import out_of_date_rows, with_currency

    index = pl.DataFrame({
        "run_id": ["r0", "r1", "r2", "r3"], "model_type": ["m"] * 4, "run_dir": ["d0", "d1", "d2", "d3"],
        "experiment.partition": ["a|base-s0", "a|base-s1", "b|base", "c|base"],
        "experiment.dataset_fingerprint": ["D", "D", "D", "old"],
        "run_meta.sweep_point_fingerprint": ["P0", "edited", "Pb", "Pc"],
        "probe_metrics.macro.auprc": [0.1, 0.2, 0.3, 0.4],
    })
    points = {"a|base-s0": "P0", "a|base-s1": "P1", "b|base": "Pb", "c|base": "Pc"}
    board = pl.DataFrame({"objective": ["a", "b", "c", "gone"], "run_ids": ["r0,r1", "r2", "r3", "r9"]})
    assert with_currency(board, index, "D", points).get_column("current").to_list() == [False, True, False, False]
    assert sorted(r["run_id"] for r in out_of_date_rows(index, "D", points)) == ["r1", "r3"]  # the same reasons
    points["a|base-s1"] = "edited"
    assert with_currency(board, index, "D", points).get_column("current").to_list() == [True, True, False, False]
    assert with_currency(board, index, None, points).get_column("current").to_list() == [False] * 4


def _budget_run(tmp_path, name: str, seed: int, signals: dict[int, float], y: np.ndarray, base: pl.DataFrame) -> dict:
    """A run with full-label predictions and, per budget, three draws' test predictions."""
    run = _run(tmp_path, name, 1.0, seed, 0.3, y, base)
    frames = []
    for budget, signal in signals.items():
        for draw in range(3):
            rng = np.random.default_rng(1000 * seed + 10 * budget + draw + 7 * len(name))
            score = signal * y + rng.standard_normal(y.shape[0])
            frames.append(base.with_columns(score_p=pl.Series(score), budget=pl.lit(budget, dtype=pl.Int64),
                                            draw=pl.lit(draw, dtype=pl.Int64)))
    pl.concat(frames).write_parquet(f"{run['run_dir']}/probe_budget_predictions.parquet")
    return run


def test_label_budget_columns_pool_seeds_and_draws_with_paired_verdicts(tmp_path) -> None:
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    y, base = _test_rows(rng)
    # At 3 labelled tickers the pretrained encoder is far ahead of supervised; at 10 it is behind.
    spec = [
        ("vicreg", "base-s0", 0, {3: 3.0, 10: 0.5}),
        ("vicreg", "base-s1", 1, {3: 3.0, 10: 0.5}),
        ("supervised", "base", 0, {3: 0.3, 10: 3.0}),
        ("minirocket", "base", 0, {3: 3.0, 10: 0.5}),
        ("masked_recon", "base", 0, {}),  # probed without budgets: null budget columns
    ]
    rows = []
    for i, (objective, variant, seed, signals) in enumerate(spec):
        name = f"{objective}-{variant}"
        run = _budget_run(tmp_path, name, seed, signals, y, base) if signals else _run(tmp_path, name, 1.0, seed, 0.3, y, base)
        row = {
            "model_type": objective, "run_id": f"r{i}", "run_dir": run["run_dir"],
            "experiment.objective": objective, "experiment.variant": variant, "experiment.backbone": "tcn",
            "run_meta.seed": seed, "probe_metrics.macro.auprc": 0.3, "probe_metrics.val.macro_auprc": 0.3 + i / 100,
            "probe_metrics.macro.ci_low": 0.2, "probe_metrics.macro.ci_high": 0.4,
        }
        if signals:
            row["probe_metrics.label_budgets.train_tickers"] = 8
            for budget in signals:
                row |= {f"probe_metrics.label_budgets.per_budget.{budget}.{f}": 0.5 for f in ("auprc", "ci_low", "ci_high")}
        rows.append(row)
    board = leaderboard(pl.DataFrame(rows, infer_schema_length=None), baselines={"supervised"}, n_boot=100)
    by = {r["objective"]: r for r in board.iter_rows(named=True)}
    vicreg = by["vicreg"]
    # The pooled AUPRC at a budget is the mean over seeds x draws, recomputed here from the files.
    frames = [pl.read_parquet(tmp_path / f"vicreg-base-s{s}" / "probe_budget_predictions.parquet") for s in (0, 1)]
    expected = np.mean([
        average_precision_score(y, f.filter((pl.col("budget") == 3) & (pl.col("draw") == d))["score_p"].to_numpy())
        for f in frames for d in range(3)
    ])
    assert abs(vicreg["labels_3_auprc"] - expected) < 1e-12
    assert vicreg["labels_3_ci_low"] < vicreg["labels_3_auprc"] < vicreg["labels_3_ci_high"]
    assert vicreg["labels_3_vs_supervised"] == "better" and vicreg["labels_10_vs_supervised"] == "worse"
    assert vicreg["labels_3_vs_minirocket"] == "tie"
    assert vicreg["labels_3_vs_supervised_against"] == "supervised|base"
    assert vicreg["label_efficiency"] == vicreg["labels_3_auprc"] and vicreg["label_efficiency_budget"] == 3
    assert by["supervised"]["labels_3_vs_supervised"] is None  # not compared with itself
    assert by["masked_recon"]["labels_3_auprc"] is None and by["masked_recon"]["labels_3_vs_supervised"] is None

    text = format_leaderboard(board)
    assert "@3 tickers" in text and "@10 tickers" in text and "s+ m=" in text and "s- m" in text
    records = leaderboard_records(board)
    vic = next(r for r in records if r["objective"] == "vicreg")
    assert vic["labels_3_auprc"] == vicreg["labels_3_auprc"] and vic["labels_10_vs_supervised"] == "worse"
    assert vic["label_efficiency"] == vicreg["labels_3_auprc"]
