"""Data assets: validated bars, shape features, the windowed dataset and pattern labels."""


import json

import dagster as dg
import polars as pl

from screener_ssl.data import dataset as ds
from screener_ssl.data.bars import REJECT_REASONS
from screener_ssl.defs.metadata import OWNERS, row_count, table_metadata, table_value
from screener_ssl.defs.resources import ScreenerSettings, WarehouseResource, source_version

# Share of rejected bars above which the validation check fails.
MAX_REJECTED_SHARE = 0.01


@dg.asset(
    group_name="data",
    kinds={"polars", "parquet", "duckdb"},
    owners=OWNERS,
    code_version=source_version("screener_ssl.data.bars", "screener_ssl.data.synthetic", "screener_ssl.data.dataset"),
    pool="duckdb",
    check_specs=[dg.AssetCheckSpec("bars_valid", asset="ohlcv_bars", description="Rejected rows by reason")],
)
def ohlcv_bars(
    context: dg.AssetExecutionContext, settings: ScreenerSettings, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Validated daily bars (DuckDB table `bars` + Parquet); rejected rows kept in `bars_quarantine`."""
    sweep = settings.load_sweep()
    context.log.info(f"reading bars from {settings.bars}")
    report = ds.ingest_bars(
        settings.root, settings.bars, sweep.spec.dataset.synthetic, date_format=settings.bars_date_format or None,
        connect=warehouse.get_connection,
    )
    counts = report.counts
    rejected = sum(counts[r] for r in REJECT_REASONS)
    share = rejected / max(counts["input_rows"], 1)
    context.log.info(f"{counts['clean_rows']} clean bars, {rejected} quarantined: {counts}")
    for warning in report.warnings:
        context.log.warning(warning)
    return dg.MaterializeResult(
        metadata={
            "source": settings.bars,
            "input_rows": counts["input_rows"],
            "clean_rows": counts["clean_rows"],
            "quarantined_rows": rejected,
            "rejected_by_reason": dg.MetadataValue.json({r: counts[r] for r in REJECT_REASONS}),
            "tickers": report.n_tickers,
            "first_date": report.first_date,
            "last_date": report.last_date,
            "warnings": dg.MetadataValue.json(report.warnings),
            "parquet": dg.MetadataValue.path(str(settings.root / ds.BARS_DIR / "bars.parquet")),
            **table_metadata(
                pl.read_parquet_schema(settings.root / ds.BARS_DIR / "bars.parquet"), counts["clean_rows"],
                table_name="warehouse.main.bars",
            ),
        },
        data_version=dg.DataVersion(report.content_hash),
        check_results=[
            dg.AssetCheckResult(
                check_name="bars_valid",
                passed=share <= MAX_REJECTED_SHARE,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "rejected_share": share,
                    "max_rejected_share": MAX_REJECTED_SHARE,
                    **{f"rejected_{r}": counts[r] for r in REJECT_REASONS},
                },
            )
        ],
    )


@dg.asset(
    group_name="data",
    kinds={"polars", "numpy"},
    owners=OWNERS,
    deps=[ohlcv_bars],
    code_version=source_version("screener_ssl.data.features"),
    # Reads what ohlcv_bars writes: sharing its pool keeps a feature build off a half-done ingest.
    pool="duckdb",
)
def shape_features(context: dg.AssetExecutionContext, settings: ScreenerSettings) -> dg.MaterializeResult:
    """Per-ticker contiguous float32 arrays of scale-free shape features (bars <= t only)."""
    spec = settings.load_sweep().spec.dataset.window
    store, version = ds.build_features(settings.root, spec.volume_lookback)
    nan_share = {name: float(x) for name, x in zip(store.feature_names, (store.values != store.values).mean(axis=0))}
    return dg.MaterializeResult(
        metadata={
            "tickers": store.n_tickers,
            "bars": int(store.values.shape[0]),
            "features": dg.MetadataValue.json(list(store.feature_names)),
            "nan_share": dg.MetadataValue.json(nan_share),
            "array_mb": round(store.values.nbytes / 2**20, 1),
        },
        data_version=dg.DataVersion(version),
    )


@dg.asset(
    group_name="data",
    kinds={"numpy"},
    owners=OWNERS,
    deps=[shape_features],
    code_version=source_version("screener_ssl.data.windows"),
)
def windowed_dataset(context: dg.AssetExecutionContext, settings: ScreenerSettings) -> dg.MaterializeResult:
    """Window index (ticker, decision row), chronological splits with embargo; data version = fingerprint."""
    spec = settings.load_sweep().spec.dataset.window
    _, info = ds.build_windowed_dataset(settings.root, spec)
    context.log.info(f"windows per split {info['windows']}, fingerprint {info['dataset_fingerprint'][:12]}")
    short = info["tickers_without_windows"]
    if short["count"]:
        context.log.warning(f"{short['count']} tickers end no window (min_history {short['min_history']}): {short['examples']}")
    return dg.MaterializeResult(
        metadata={
            "tickers_without_windows": dg.MetadataValue.json(short),
            "windows": dg.MetadataValue.json(info["windows"]),
            "split_bounds": dg.MetadataValue.json(info["split_bounds"]),
            "spec": dg.MetadataValue.json(info["spec"]),
            "spec_fingerprint": info["spec_fingerprint"],
            "dataset_fingerprint": info["dataset_fingerprint"],
            **row_count(sum(info["windows"].values())),
        },
        data_version=dg.DataVersion(info["dataset_fingerprint"]),
    )


@dg.asset(
    group_name="data",
    kinds={"numpy", "parquet", "duckdb"},
    owners=OWNERS,
    deps=[windowed_dataset],
    code_version=source_version("screener_ssl.data.labels", "screener_ssl.data.label_sources"),
    pool="duckdb",
)
def pattern_labels(
    context: dg.AssetExecutionContext, settings: ScreenerSettings, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Pattern events and the per-window label matrix (an event ending in [D-h, D-1] is positive at D)."""
    spec = settings.load_sweep().spec.dataset.window
    info = ds.build_labels(settings.root, settings.labels, spec, connect=warehouse.get_connection)
    if info["unmatched_events"]:
        context.log.warning(f"{info['unmatched_events']} label events matched no bars: {info['unmatched_reasons']}")
    return dg.MaterializeResult(
        metadata={
            "source": info["source"],
            "events": info["events"],
            "events_per_pattern": dg.MetadataValue.json(info["events_per_pattern"]),
            "unmatched_events": info["unmatched_events"],
            "prevalence": _prevalence_table(info["prevalence"], info["patterns"]),
            "windows_per_split": dg.MetadataValue.json({s: info["prevalence"][s]["_windows"] for s in info["prevalence"]}),
            # Rows of the warehouse table label_events (the label matrix has one row per window).
            **row_count(info["events"]),
            "dagster/table_name": "warehouse.main.label_events",
        },
        data_version=dg.DataVersion(info["data_version"]),
    )


def _prevalence_table(prevalence: dict, patterns: list[str]) -> dg.TableMetadataValue:
    """Share of positive windows per pattern and split, as an inline table."""
    splits = list(prevalence)
    columns = [("pattern", "string", "Pattern")] + [(s, "float", f"Share of {s} windows positive") for s in splits]
    return table_value([{"pattern": p, **{s: prevalence[s][p] for s in splits}} for p in patterns], columns)


def data_summary(settings: ScreenerSettings) -> dict:
    """What `make demo` prints about the data: tickers, bars, windows per split, label prevalence."""
    root = settings.root
    info = json.loads((root / ds.WINDOWED_DIR / "dataset.json").read_text())
    labels = json.loads((root / ds.LABELS_DIR / "labels.json").read_text())
    return {"dataset": info, "labels": labels}
