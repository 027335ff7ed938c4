"""Probe metrics per partition, the finetuned classifier, and the consolidated experiment index."""


from pathlib import Path

import dagster as dg

from screener_ssl.data.dataset import load_dataset
from screener_ssl.defs.metadata import OWNERS, partitioned_check, table_metadata, table_value
from screener_ssl.defs.partitions import finetune_partitions, partition_parts
from screener_ssl.defs.resources import ScreenerSettings, WarehouseResource, source_version
from screener_ssl.defs.staleness import LEADERBOARD_PARQUET, current_fingerprints, index_current_fields
from screener_ssl.store.fingerprint import fingerprint
from screener_ssl.probe.curves import CURVE_KEY, budget_curves_by_row
from screener_ssl.probe.curves import PLOT_FILE as CURVE_PLOT_FILE
from screener_ssl.probe.curves import budget_curve_png
from screener_ssl.probe.plots import auprc_bar_png, label_efficiency_png, png_markdown, thumbnail_png
from screener_ssl.probe.config import ProbeConfig
from screener_ssl.probe.probe import PLOT_FILES
from screener_ssl.probe.label_budgets import BUDGET_PLOT_FILE
from screener_ssl.probe.metric_names import (
    ALERTS_PER_DAY, AUPRC, CI_HIGH, CI_LOW, EARLIEST_DETECTION, ECE, MACRO, N_REACHABLE, REACHABLE,
)
from screener_ssl.runs.probe import probe_reference_encoders, probe_run
from screener_ssl.runs.finetune import (
    NotFinetunableError,
    finetune_partition,
    finetuned_name,
    require_finetunable,
)
from screener_ssl.ssl.schema import SchemaMismatchError, load_schema
from screener_ssl.store.artifacts import atomic_write_parquet
from screener_ssl.tracking.cleanup import clean_data_root
from screener_ssl.tracking.currency import with_currency
from screener_ssl.tracking.index import build_index, index_fingerprint, publish_index
from screener_ssl.tracking.latest import latest_partition_run, record_partition_run
from screener_ssl.tracking.leaderboard import board_budgets, leaderboard, leaderboard_records, ordered_board
from screener_ssl.tracking.board import table_schema, verdict_table
from screener_ssl.tracking.report_html import PER_PATTERN_COLUMNS, REPORT_FILE, per_pattern_rows, write_report
from screener_ssl.store.environment import thread_variables

# Dagster marks an asset stale only when a direct input changed, so the probes name the
# dataset and the sweep point they read, not only the encoder: a new window spec or an
# edited point shows here without waiting for the encoder to be retrained first.
PARTITION_DEPS = [
    dg.AssetKey("sweep_file"), dg.AssetKey("pretrained_encoder"), dg.AssetKey("windowed_dataset"),
    dg.AssetKey("pattern_labels"),
]

PROBE_CODE_VERSION = source_version(
    "screener_ssl.probe.probe", "screener_ssl.probe.config", "screener_ssl.probe.positions", "screener_ssl.probe.head",
    "screener_ssl.probe.head_fit", "screener_ssl.probe.checks", "screener_ssl.probe.bootstrap",
    "screener_ssl.probe.metrics", "screener_ssl.probe.report", "screener_ssl.probe.metric_names",
    "screener_ssl.probe.curves", "screener_ssl.probe.label_budgets", "screener_ssl.runs.label_budgets",
    "screener_ssl.data.label_budget", "screener_ssl.runs.probe",
)
LEADERBOARD_PLOT = "_macro_auprc_by_objective.png"
BUDGET_CURVES_PLOT = "_budget_curves.png"
LABEL_EFFICIENCY_PLOT = "_label_efficiency.png"

PLOT_TITLES = {
    "pr_curves": "PR curves (test)",
    "earliest_detection": "Earliest detection (recall by visible share of the pattern)",
    "reliability": "Reliability (test)",
}


def reachable_text(macro: dict, metrics: dict) -> str:
    """``"3 of 7 reachable at precision 0.8"``: the patterns the macro alert figures average over."""
    target = (metrics.get("config") or {}).get("target_precision", (metrics.get("head") or {}).get("target_precision"))
    text = macro.get(REACHABLE) or f"{macro.get(N_REACHABLE, '?')} reachable"
    return f"{text} at precision {target:g}" if isinstance(target, (int, float)) else f"{text} at the precision target"


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
        out[f"labels_{budget}_auprc"] = _float(rep[AUPRC])
        out[f"labels_{budget}_auprc_ci"] = dg.MetadataValue.json([rep[CI_LOW], rep[CI_HIGH]])
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
    probed = probe_run(point, dataset, run_dir, finetune_source=finetune_source, log=context.log.info)
    result, budgets, curve_png = probed.result, probed.budgets, probed.curve_png
    m = result.metrics[MACRO]
    context.log.info(
        f"{objective}|{variant}: macro AUPRC {_num(m[AUPRC])} [{_num(m[CI_LOW])}, {_num(m[CI_HIGH])}]"
    )
    earliest = m.get(EARLIEST_DETECTION) or {}
    return dg.MaterializeResult(
        metadata={
            "run_dir": dg.MetadataValue.path(str(run_dir)),
            "macro_auprc": _float(m[AUPRC]),
            "macro_auprc_ci": dg.MetadataValue.json([m[CI_LOW], m[CI_HIGH]]),
            # The alert figures are means over the patterns that reach the precision target: say how many do.
            "reachable_patterns": reachable_text(m, result.metrics),
            ALERTS_PER_DAY: _float(m[ALERTS_PER_DAY]),
            "recall_at_60pct_span": _float(earliest.get("0.6", earliest.get(0.6))),
            ECE: _float(m[ECE]),
            "per_pattern": table_value(per_pattern_rows(result.metrics), PER_PATTERN_COLUMNS),
            # The full-size plots are files in the run dir (written by write_probe_artifacts); small
            # previews of each travel inline in the event log.
            **{f"{key}_preview": dg.MetadataValue.md(png_markdown(thumbnail_png(result.plots[key]), title))
               for key, title in PLOT_TITLES.items()},
            **{key: dg.MetadataValue.path(str(run_dir / name)) for key, name in PLOT_FILES.items()},
            **({} if curve_png is None else {
                "budget_curve": dg.MetadataValue.path(str(run_dir / CURVE_PLOT_FILE)),
                "budget_curve_points": dg.MetadataValue.json(result.metrics[CURVE_KEY]),
                "budget_curve_preview": dg.MetadataValue.md(
                    png_markdown(thumbnail_png(curve_png), "macro AUPRC vs windows seen")
                ),
            }),
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


def _probe_asset(name: str, partitions: dg.PartitionsDefinition, code_version: str, schema_check: str):
    """A partitioned probe asset: in the torch pool, on the sweep point, the dataset and the encoder it probes.

    ``schema_check``: what its ``schema_matches`` check says it verifies.
    """
    return dg.asset(
        name=name,
        group_name="probe",
        kinds={"torch", "parquet"},
        owners=OWNERS,
        partitions_def=partitions,
        deps=PARTITION_DEPS,
        code_version=code_version,
        pool="torch",
        check_specs=[partitioned_check("schema_matches", name, partitions, description=schema_check)],
    )


def build_probe_assets(partitions: dg.PartitionsDefinition) -> list:
    @_probe_asset(
        "probe_metrics", partitions, PROBE_CODE_VERSION,
        "The probed encoder was trained on the windowed dataset being probed (fingerprints)",
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
            result.metadata[f"{name}_macro_auprc"] = _float(macro[AUPRC])
            result.metadata[f"{name}_macro_auprc_ci"] = dg.MetadataValue.json([macro[CI_LOW], macro[CI_HIGH]])
        return result

    finetunable = finetune_partitions(partitions)

    # Only the partitions whose objective has weights: the others can never be filled.
    @_probe_asset(
        "finetuned_classifier", finetunable,
        source_version("screener_ssl.ssl.finetune", "screener_ssl.runs.finetune") + PROBE_CODE_VERSION,
        "The finetuned encoder was trained on the windowed dataset being probed",
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
                environ=thread_variables(),
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


def index_current_result(index, board, settings: ScreenerSettings) -> dg.AssetCheckResult:
    """``index_current``: the leaderboard rows computed on another dataset or sweep point, by run."""
    return dg.AssetCheckResult(check_name="index_current", **index_current_fields(index, board, settings))


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
    """The leaderboard and every run dir flattened to dotted columns (_index.csv, _index.parquet, DuckDB table
    experiment_index).

    Where the verdict is: this asset's latest materialization (Events tab) opens with the ``leaderboard``
    table (objective, kind, current, test AUPRC with CI, the paired verdicts, the label budgets, then cost);
    ``report`` is the same board as one HTML page with every row's plots (models/_report.html), and
    ``_leaderboard.parquet`` the board as a file. The ``index_current`` check (Checks tab) says whether the
    rows are still current, kept up to date by stale_partitions_sensor without a rebuild.
    """
    models_root = settings.root / "models"
    cleaned = clean_data_root(settings.root)
    problems: list[dict[str, str]] = []
    index = build_index(models_root, problems)
    for problem in problems:
        context.log.warning(f"left out of the index: {problem['error']}")
    paths = publish_index(index, models_root, warehouse.get_connection)
    dataset_fingerprint, points = current_fingerprints(settings)
    board = ordered_board(with_currency(leaderboard(index), index, dataset_fingerprint, points))
    # The verdict first: the decisive columns (narrow enough for the first screen), the report, then the
    # whole board and its chart lead the materialization's metadata. Keys stay short: the longest sets
    # the width of the UI's label column, and so what is left for the tables.
    verdict_schema, verdict_records = verdict_table(board)
    metadata = {"verdict": table_value(verdict_records, verdict_schema)}
    if board.height:
        metadata["report"] = dg.MetadataValue.path(str(models_root / REPORT_FILE))
    metadata["leaderboard"] = table_value(leaderboard_records(board), table_schema(board))
    if board.height:
        # The verdicts (seed-pooled, paired, ranked by val) beside the per-run index.
        atomic_write_parquet(models_root / LEADERBOARD_PARQUET, board)
        # Ranked as the table ranks (by val), best on top; test AUPRC with its CI.
        rows = [
            {"label": f"{r['objective']}|{r['variant']}", "auprc": r["auprc"], "ci_low": r["ci_low"],
             "ci_high": r["ci_high"]}
            for r in board.iter_rows(named=True)
        ]
        chart = models_root / LEADERBOARD_PLOT
        png = auprc_bar_png(rows, path=chart, title="Macro AUPRC (test) with 95% CI, ranked by val", ranked=True)
        curves = budget_curves_by_row(board)
        if curves:  # every trained row's seed-mean val AUPRC against windows seen
            curve_chart = models_root / BUDGET_CURVES_PLOT
            curve_png = budget_curve_png(curves, path=curve_chart, title="Budget curves: val macro AUPRC vs windows seen",
                                         splits=("val",))
            metadata["budget_curves"] = dg.MetadataValue.path(str(curve_chart))
            metadata["budget_curves_preview"] = dg.MetadataValue.md(
                png_markdown(thumbnail_png(curve_png), "val macro AUPRC vs windows seen, per objective")
            )
        efficiency = sweep_label_efficiency(board)
        if efficiency:  # test macro AUPRC against labelled train tickers, per row with label budgets
            efficiency_chart = models_root / LABEL_EFFICIENCY_PLOT
            efficiency_png = label_efficiency_png(efficiency, path=efficiency_chart)
            metadata["label_efficiency"] = dg.MetadataValue.path(str(efficiency_chart))
            metadata["label_efficiency_preview"] = dg.MetadataValue.md(
                png_markdown(thumbnail_png(efficiency_png), "test macro AUPRC vs labelled train tickers")
            )
        write_report(board, models_root)  # after the charts: the report embeds the index dir's plots
        metadata["auprc_chart_preview"] = dg.MetadataValue.md(png_markdown(thumbnail_png(png), "macro AUPRC by objective"))
        metadata["auprc_chart"] = dg.MetadataValue.path(str(chart))
        metadata["leaderboard_parquet"] = dg.MetadataValue.path(str(models_root / LEADERBOARD_PARQUET))
    metadata |= {
        "runs": index.height,
        "columns": index.width,
        "csv": dg.MetadataValue.path(str(paths["csv"])),
        "parquet": dg.MetadataValue.path(str(paths["parquet"])),
        **table_metadata(index, index.height,
                         table_name="warehouse.main.experiment_index" if index.height else None),
    }
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
            index_current_result(index, board, settings),
        ],
    )


__all__ = ["build_probe_assets", "experiment_index"]
