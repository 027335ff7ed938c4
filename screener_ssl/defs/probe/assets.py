"""Probe metrics per partition, the finetuned classifier, and the consolidated experiment index."""


import json
import os
from pathlib import Path

import dagster as dg

from screener_ssl.data.dataset import WINDOWED_DIR, load_dataset, write_duckdb_tables
from screener_ssl.defs.metadata import OWNERS, partitioned_check, table_metadata, table_value
from screener_ssl.defs.partitions import partition_parts
from screener_ssl.defs.resources import ScreenerSettings, WarehouseResource, source_version
from screener_ssl.defs.sweep_file import point_fingerprints
from screener_ssl.fingerprint import fingerprint
from screener_ssl.probe.plots import auprc_bar_png, label_efficiency_png, png_markdown, thumbnail_png
from screener_ssl.probe.probe import PLOT_FILES, ProbeConfig, run_probe, write_probe_artifacts
from screener_ssl.probe.label_budgets import (
    BUDGET_PLOT_FILE,
    BUDGET_PREDICTIONS_FILE,
    METRICS_KEY as BUDGET_METRICS_KEY,
    write_label_budget_artifacts,
)
from screener_ssl.runs.label_budgets import probe_label_budgets
from screener_ssl.runs.probe import probe_reference_encoders
from screener_ssl.runs.finetune import (
    NotFinetunableError,
    finetune_partition,
    finetuned_name,
    require_finetunable,
)
from screener_ssl.ssl.encoder import load_encoder
from screener_ssl.ssl.schema import SchemaMismatchError, load_schema
from screener_ssl.tracking.artifacts import atomic_write_parquet, to_jsonable
from screener_ssl.tracking.cleanup import clean_data_root
from screener_ssl.tracking.currency import leaderboard_rows, out_of_date_rows
from screener_ssl.tracking.index import build_index, index_fingerprint, write_index
from screener_ssl.tracking.latest import latest_partition_run, record_partition_run
from screener_ssl.tracking.leaderboard import (
    board_budgets,
    leaderboard,
    leaderboard_records,
    table_columns,
)

# Dagster marks an asset stale only when a direct input changed, so the probes name the
# dataset and the sweep point they read, not only the encoder: a new window spec or an
# edited point shows here without waiting for the encoder to be retrained first.
PARTITION_DEPS = [
    dg.AssetKey("sweep_file"), dg.AssetKey("pretrained_encoder"), dg.AssetKey("windowed_dataset"),
    dg.AssetKey("pattern_labels"),
]

PROBE_CODE_VERSION = source_version(
    "screener_ssl.probe.probe", "screener_ssl.probe.head", "screener_ssl.probe.metrics", "screener_ssl.probe.label_budgets",
    "screener_ssl.runs.label_budgets", "screener_ssl.data.label_budget",
)
LEADERBOARD_PLOT = "_macro_auprc_by_objective.png"
LABEL_EFFICIENCY_PLOT = "_label_efficiency.png"

PER_PATTERN_COLUMNS = [
    ("pattern", "string", "Pattern"),
    ("auprc", "float", "Test AUPRC"),
    ("ci_low", "float", "Lower end of the 95% block-bootstrap CI"),
    ("ci_high", "float", "Upper end of the 95% block-bootstrap CI"),
    ("prevalence", "float", "Share of positive test windows (a random screener's AUPRC)"),
    ("alerts_per_day_per_ticker", "float", "Alerts per ticker-day at the val threshold"),
    ("precision", "float", "Precision at the val threshold"),
    ("recall", "float", "Recall at the val threshold"),
    ("ece", "float", "Expected calibration error on test"),
]


def _num(value, spec: str = ".4f") -> str:
    """Format a metric that may be missing (None) or undefined (NaN)."""
    if value is None or value != value:
        return "n/a"
    return format(value, spec)


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def budget_metadata(metrics: dict, run_dir: Path) -> dict:
    """Per label budget: macro AUPRC and its CI pooled over draws, the summary, and the label-efficiency plot."""
    out: dict = {}
    for budget, rep in metrics["per_budget"].items():
        out[f"labels_{budget}_auprc"] = _float(rep["auprc"])
        out[f"labels_{budget}_auprc_ci"] = dg.MetadataValue.json([rep["ci_low"], rep["ci_high"]])
    out["label_efficiency"] = _float(metrics["label_efficiency"])
    out["label_efficiency_plot"] = dg.MetadataValue.path(str(run_dir / BUDGET_PLOT_FILE))
    return out


def probe_run_dir(
    context, settings: ScreenerSettings, run_dir, stage: str, finetune_source: Path | None = None
) -> dg.MaterializeResult:
    """Probe the encoder in ``run_dir`` (full labels, then every label budget) and describe the outcome.

    Shared by both probed assets; ``finetune_source`` (the pretrained run a finetune started
    from) makes every label budget finetune that encoder again on the budget's labelled rows.
    """
    objective, variant = partition_parts(context)
    point = settings.load_sweep().point(objective, variant)
    dataset = load_dataset(settings.root)
    try:
        schema = load_schema(run_dir / "schema.json", dataset.spec)
    except SchemaMismatchError as exc:
        raise dg.Failure(description=f"{stage} for {objective}|{variant}: {exc}") from exc
    encoder = load_encoder(run_dir)
    config = ProbeConfig(**point.probe)
    result = run_probe(encoder, dataset, config, augment=point.augment, log=context.log.info)
    budgets = None
    if config.label_budgets:
        budgets = probe_label_budgets(
            point, dataset, run_dir, config, full=result.metrics["macro"], finetune_source=finetune_source,
            log=context.log.info, embedded=result.embeddings,
        )
        result.metrics[BUDGET_METRICS_KEY] = to_jsonable(budgets.metrics)
        # Before probe_metrics.json: a run the index reads has its budget predictions beside it.
        write_label_budget_artifacts(budgets, run_dir)
    else:
        for name in (BUDGET_PREDICTIONS_FILE, BUDGET_PLOT_FILE):
            (run_dir / name).unlink(missing_ok=True)  # from an earlier probe with budgets
    write_probe_artifacts(result, run_dir)
    m = result.metrics["macro"]
    context.log.info(
        f"{objective}|{variant}: macro AUPRC {_num(m['auprc'])} [{_num(m['ci_low'])}, {_num(m['ci_high'])}]"
    )
    per_pattern = [
        {
            "pattern": name,
            **{k: rep["auprc"][k] for k in ("auprc", "ci_low", "ci_high", "prevalence")},
            **{k: rep["alerts"][k] for k in ("alerts_per_day_per_ticker", "precision", "recall")},
            "ece": rep["calibration"]["ece"] if rep.get("calibration") else None,
        }
        for name, rep in result.metrics["per_pattern"].items()
    ]
    earliest = m.get("earliest_detection") or {}
    return dg.MaterializeResult(
        metadata={
            "run_dir": dg.MetadataValue.path(str(run_dir)),
            "macro_auprc": _float(m["auprc"]),
            "macro_auprc_ci": dg.MetadataValue.json([m["ci_low"], m["ci_high"]]),
            "alerts_per_day_per_ticker": _float(m["alerts_per_day_per_ticker"]),
            "recall_at_60pct_span": _float(earliest.get("0.6", earliest.get(0.6))),
            "ece": _float(m["ece"]),
            "per_pattern": table_value(per_pattern, PER_PATTERN_COLUMNS),
            # The full-size plots are files in the run dir (written by write_probe_artifacts); only a
            # small preview of the PR curves travels inline in the event log.
            **{key: dg.MetadataValue.path(str(run_dir / name)) for key, name in PLOT_FILES.items()},
            "pr_curves_preview": dg.MetadataValue.md(
                png_markdown(thumbnail_png(result.plots["pr_curves"]), "PR curves (test)")
            ),
            **(budget_metadata(budgets.metrics, run_dir) if budgets is not None else {}),
        },
        data_version=dg.DataVersion(fingerprint({"run": str(run_dir), "schema": schema.fingerprint, "macro": m})),
        check_results=[
            dg.AssetCheckResult(
                check_name="schema_matches",
                passed=schema.dataset_fingerprint == dataset.dataset_fingerprint,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "encoder_dataset_fingerprint": schema.dataset_fingerprint,
                    "dataset_fingerprint": dataset.dataset_fingerprint,
                    "spec_fingerprint": schema.spec_fingerprint,
                },
            )
        ],
    )


def build_probe_assets(partitions: dg.PartitionsDefinition) -> list:
    @dg.asset(
        group_name="probe",
        kinds={"torch", "parquet"},
        owners=OWNERS,
        partitions_def=partitions,
        deps=PARTITION_DEPS,
        code_version=PROBE_CODE_VERSION,
        pool="torch",
        check_specs=[
            partitioned_check(
                "schema_matches", "probe_metrics", partitions,
                description="The probed encoder was trained on the windowed dataset being probed (fingerprints)",
            )
        ],
    )
    def probe_metrics(context: dg.AssetExecutionContext, settings: ScreenerSettings) -> dg.MaterializeResult:
        """Frozen encoder -> one-vs-rest head per pattern; test AUPRC (CI), alerts/day, earliest detection, stability, calibration."""
        objective, variant = partition_parts(context)
        run_dir = latest_partition_run(settings.root, objective, variant)
        result = probe_run_dir(context, settings, run_dir, "probe_metrics")
        point = settings.load_sweep().point(objective, variant)
        references = probe_reference_encoders(
            run_dir, objective, load_dataset(settings.root), ProbeConfig(**point.probe), augment=point.augment,
            log=context.log.info,
        )
        for name, macro in references.items():  # e.g. a distillation teacher, beside its student
            result.metadata[f"{name}_macro_auprc"] = _float(macro["auprc"])
            result.metadata[f"{name}_macro_auprc_ci"] = dg.MetadataValue.json([macro["ci_low"], macro["ci_high"]])
        return result

    @dg.asset(
        group_name="probe",
        kinds={"torch", "parquet"},
        owners=OWNERS,
        partitions_def=partitions,
        deps=PARTITION_DEPS,
        code_version=source_version("screener_ssl.ssl.finetune", "screener_ssl.runs.finetune") + PROBE_CODE_VERSION,
        pool="torch",
        check_specs=[
            partitioned_check(
                "schema_matches", "finetuned_classifier", partitions,
                description="The finetuned encoder was trained on the windowed dataset being probed",
            )
        ],
    )
    def finetuned_classifier(context: dg.AssetExecutionContext, settings: ScreenerSettings) -> dg.MaterializeResult:
        """The pretrained encoder finetuned end to end with a pattern head (schema-locked), then probed and indexed."""
        objective, variant = partition_parts(context)
        try:
            require_finetunable(objective)
        except NotFinetunableError as exc:
            raise dg.Failure(description=str(exc)) from exc
        point = settings.load_sweep().point(objective, variant)
        source = latest_partition_run(settings.root, objective, variant)
        dataset = load_dataset(settings.root)
        try:
            run_dir, version = finetune_partition(
                dataset, point, source, settings.root,
                run_context={
                    "dagster_run_id": context.run_id,
                    "dagster_partition": context.partition_key,
                    "sweep_point_fingerprint": settings.load_sweep().point_fingerprint(objective, variant),
                },
                log=context.log.info,
                environ=os.environ,
            )
        except SchemaMismatchError as exc:
            raise dg.Failure(description=f"cannot finetune {source}: {exc}") from exc
        record_partition_run(settings.root, finetuned_name(objective), variant, run_dir, version)
        result = probe_run_dir(context, settings, run_dir, "finetuned_classifier", finetune_source=source)
        result.metadata["source_run_dir"] = dg.MetadataValue.path(str(source))
        return result

    return [probe_metrics, finetuned_classifier]


def sweep_label_efficiency(board) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per leaderboard row with label budgets: (labelled tickers, AUPRC, CI) per budget, then full labels."""
    budgets = board_budgets(board)
    curves: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in board.iter_rows(named=True) if budgets else []:
        points = [
            (float(k), row[f"labels_{k}_auprc"], row[f"labels_{k}_ci_low"], row[f"labels_{k}_ci_high"])
            for k in budgets if row.get(f"labels_{k}_auprc") is not None
        ]
        if not points:
            continue
        if row.get("label_train_tickers"):
            points.append((float(row["label_train_tickers"]), row["auprc"], row["ci_low"], row["ci_high"]))
        curves[f"{row['objective']}|{row['variant']}"] = points
    return curves


def index_current_result(index, settings: ScreenerSettings) -> dg.AssetCheckResult:
    """``index_current``: the leaderboard rows computed on another dataset or sweep point, by run."""
    dataset_json = settings.root / WINDOWED_DIR / "dataset.json"
    current = json.loads(dataset_json.read_text())["dataset_fingerprint"] if dataset_json.exists() else None
    stale = out_of_date_rows(index, current, point_fingerprints(settings.load_sweep()))
    named = [f"{r['partition']} {r['model_type']} {r['run_id']}: {'; '.join(r['reasons'])}" for r in stale]
    return dg.AssetCheckResult(
        check_name="index_current",
        passed=not stale,
        description=("out of date: " + " | ".join(named)) if stale else "every leaderboard row is current",
        metadata={
            "out_of_date_rows": len(stale),
            "rows_checked": leaderboard_rows(index).height,
            "dataset_fingerprint": current or "none",
            "rows": dg.MetadataValue.json(stale),
        },
    )


@dg.asset(
    group_name="probe",
    kinds={"polars", "parquet", "duckdb"},
    owners=OWNERS,
    # windowed_dataset and sweep_file directly: the index is out of date the moment either changes,
    # not only once every probe has rerun (Dagster does not carry staleness past one edge).
    deps=[
        dg.AssetKey("probe_metrics"), dg.AssetKey("finetuned_classifier"), dg.AssetKey("windowed_dataset"),
        dg.AssetKey("sweep_file"),
    ],
    code_version=source_version(
        "screener_ssl.tracking.index", "screener_ssl.tracking.leaderboard", "screener_ssl.tracking.currency"
    ),
    pool="duckdb",
    check_specs=[
        dg.AssetCheckSpec("runs_readable", asset="experiment_index",
                          description="Every run dir's JSON artifacts parse; unreadable runs are left out"),
        dg.AssetCheckSpec("index_current", asset="experiment_index",
                          description="Every leaderboard row was computed on the current dataset fingerprint and "
                          "the current sweep point fingerprint; fails naming the rows that were not"),
    ],
)
def experiment_index(
    context: dg.AssetExecutionContext, settings: ScreenerSettings, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Every run dir flattened to dotted columns: _index.csv, _index.parquet and DuckDB table experiment_index."""
    models_root = settings.root / "models"
    cleaned = clean_data_root(settings.root)
    problems: list[dict[str, str]] = []
    index = build_index(models_root, problems)
    for problem in problems:
        context.log.warning(f"left out of the index: {problem['error']}")
    paths = write_index(index, models_root)
    if index.height:
        write_duckdb_tables(warehouse.get_connection, {"experiment_index": index})
    board = leaderboard(index)
    if board.height:
        # The verdicts (seed-pooled, paired, ranked by val) beside the per-run index.
        atomic_write_parquet(models_root / "_leaderboard.parquet", board)
    rows = [
        {"label": f"{r['objective']}|{r['variant']}", "auprc": r["auprc"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
        for r in board.iter_rows(named=True)
    ]
    metadata = {
        "runs": index.height,
        "columns": index.width,
        "csv": dg.MetadataValue.path(str(paths["csv"])),
        "parquet": dg.MetadataValue.path(str(paths["parquet"])),
        # Ranked by val macro AUPRC; test reported with block-bootstrap CIs; verdicts are paired differences.
        "leaderboard": table_value(leaderboard_records(board), table_columns(board)),
        **table_metadata(index, index.height,
                         table_name="warehouse.main.experiment_index" if index.height else None),
    }
    if rows:
        chart = models_root / LEADERBOARD_PLOT
        png = auprc_bar_png(rows, path=chart, title="Macro AUPRC (test) with 95% CI")
        metadata["macro_auprc_by_objective"] = dg.MetadataValue.path(str(chart))
        metadata["macro_auprc_by_objective_preview"] = dg.MetadataValue.md(
            png_markdown(thumbnail_png(png), "macro AUPRC by objective")
        )
    curves = sweep_label_efficiency(board)
    if curves:
        chart = models_root / LABEL_EFFICIENCY_PLOT
        png = label_efficiency_png(curves, path=chart)
        metadata["label_efficiency"] = dg.MetadataValue.path(str(chart))
        metadata["label_efficiency_preview"] = dg.MetadataValue.md(
            png_markdown(thumbnail_png(png), "test macro AUPRC vs labelled train tickers")
        )
    metadata["cleaned"] = dg.MetadataValue.json(cleaned)
    context.log.info(f"indexed {index.height} runs into {paths['parquet']}")
    return dg.MaterializeResult(
        metadata=metadata,
        data_version=dg.DataVersion(index_fingerprint(models_root)),
        check_results=[
            dg.AssetCheckResult(
                check_name="runs_readable",
                passed=not problems,
                metadata={"unreadable_runs": len(problems), "problems": dg.MetadataValue.json(problems)},
            ),
            index_current_result(index, settings),
        ],
    )


__all__ = ["build_probe_assets", "experiment_index"]
