"""The market scan: every ticker's latest decision window scored by the chosen model."""

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl

from screener_ssl.data.dataset import load_clean_bars, load_dataset, write_duckdb_tables
from screener_ssl.defs.metadata import OWNERS, table_metadata, table_value
from screener_ssl.defs.resources import ScreenerSettings, WarehouseResource, source_version
from screener_ssl.probe.plots import png_markdown, thumbnail_png
from screener_ssl.scan.scan import ScanConfig, scan_market, select_best_run
from screener_ssl.scan.plots import recent_bars_png
from screener_ssl.ssl.schema import SchemaMismatchError
from screener_ssl.store.artifacts import atomic_write_bytes, atomic_write_parquet
from screener_ssl.tracking.index import build_index

TOP_ALERTS = 20
TOP_ALERT_COLUMNS = [
    ("ticker", "string", "Ticker"),
    ("pattern", "string", "Pattern alerted"),
    ("score", "float", "Probe head probability of the pattern at the decision date"),
]


class MarketScanConfig(dg.Config):
    run_dir: str = ""  # model to score with; empty = the servable run of best val macro AUPRC
    as_of: str = ""  # decision date YYYY-MM-DD; empty = the latest date in the bars
    chunk_size: int = 512
    threads: int = 2


@dg.asset(
    group_name="scan",
    kinds={"torch", "duckdb", "parquet"},
    owners=OWNERS,
    deps=[dg.AssetKey("ohlcv_bars"), dg.AssetKey("experiment_index")],
    code_version=source_version("screener_ssl.scan.scan", "screener_ssl.ssl.encoder"),  # it embeds through Encoder
    pool="duckdb",
)
def market_scan(
    context: dg.AssetExecutionContext, settings: ScreenerSettings, warehouse: WarehouseResource,
    config: MarketScanConfig,
) -> dg.MaterializeResult:
    """Scores and alerts (ticker, date, pattern, score, alert) for every ticker's latest open-only decision window."""
    root = settings.root
    passed_over: list[dict[str, str]] = []
    run_dir = Path(config.run_dir) if config.run_dir else select_best_run(build_index(root / "models"), passed_over)
    for model in passed_over:  # better by val, but the scan cannot load them
        context.log.warning(f"passed over {model['model_dir']}: {model['reason']}")
    spec = load_dataset(root, with_labels=False).spec
    scan_config = ScanConfig(
        chunk_size=config.chunk_size, threads=config.threads,
        as_of=dt.date.fromisoformat(config.as_of) if config.as_of else None,
    )
    if not Path(warehouse.database).exists():  # a read-write connection would create an empty one
        raise dg.Failure(description=f"no DuckDB warehouse at {warehouse.database}; materialize ohlcv_bars first")
    try:
        with warehouse.get_connection() as con:
            con.execute(f"SET threads = {int(config.threads)}")
            result = scan_market(run_dir, con=con, spec=spec, config=scan_config)
    except SchemaMismatchError as exc:
        raise dg.Failure(description=f"the model at {run_dir} does not match the current window spec: {exc}") from exc
    scores, skipped = result.scores, result.skipped
    out_dir = root / "scans"
    atomic_write_parquet(out_dir / f"market_scan_{result.as_of}.parquet", scores)
    atomic_write_parquet(out_dir / "market_scan_latest.parquet", scores)
    write_duckdb_tables(warehouse.get_connection, {"market_scan": scores, "market_scan_skipped": skipped})
    alerts = scores.filter(pl.col("alert")).sort("score", descending=True)
    context.log.info(
        f"scanned {scores.get_column('ticker').n_unique()} tickers as of {result.as_of} with {run_dir.name}: "
        f"{alerts.height} alerts, {skipped.height} skipped, {result.timings['total']:.2f}s"
    )
    if skipped.height:
        context.log.warning(f"skipped tickers: {skipped.head(10).to_dicts()}")
    top = alerts.head(TOP_ALERTS)
    tickers = top.get_column("ticker").unique().to_list()
    bars = load_clean_bars(root).filter(
        pl.col("ticker").is_in(tickers) & (pl.col("date") <= result.as_of)
    )
    # The chart is a file beside the scan; only a small preview travels inline in the event log.
    charts = recent_bars_png(bars, top)
    charts_path = atomic_write_bytes(out_dir / f"market_scan_{result.as_of}_alerts.png", charts)
    return dg.MaterializeResult(
        metadata={
            "as_of": str(result.as_of),
            "model_run_dir": dg.MetadataValue.path(str(run_dir)),
            "tickers_scored": scores.get_column("ticker").n_unique(),
            "alerts": alerts.height,
            "skipped": skipped.height,
            "skipped_reasons": dg.MetadataValue.json(
                skipped.group_by("reason").len().to_dicts() if skipped.height else []
            ),
            "timings_s": dg.MetadataValue.json({k: round(v, 4) for k, v in result.timings.items()}),
            "top_alerts": table_value(top.select("ticker", "pattern", "score").to_dicts(), TOP_ALERT_COLUMNS),
            "alerted_charts": dg.MetadataValue.path(str(charts_path)),
            "alerted_charts_preview": dg.MetadataValue.md(png_markdown(thumbnail_png(charts, 480), "alerted tickers")),
            **table_metadata(scores, scores.height, table_name="warehouse.main.market_scan"),
        }
    )
