"""The data pipeline's steps, as plain functions over a data root.

Each step reads what the previous one wrote and writes its own directory
atomically. The Dagster assets in ``screener_ssl.defs.data`` are thin wrappers
around these; a notebook can call them directly.

Layout under the data root::

    bars/bars.parquet, bars/quarantine.parquet, bars/source_events.parquet, bars/bars.json
    datasets/shape_features/   values.npy offsets.npy dates.npy meta.json
    datasets/windowed/         window_index.npz splits.json dataset.json
    datasets/labels/           labels.npy events.parquet unmatched.parquet labels.json
    warehouse.duckdb           tables bars, bars_quarantine, label_events
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from screener_ssl.data.bars import bars_content_hash, read_bars, validate_bars
from screener_ssl.data.contracts import PATTERNS
from screener_ssl.data.features import FeatureStore, compute_shape_features
from screener_ssl.data.labels import EventRows, label_matrix, locate_events, prevalence_by_split
from screener_ssl.data.synthetic import SyntheticMarketConfig, generate_market
from screener_ssl.data.windows import WindowIndex, WindowSpec, build_window_index
from screener_ssl.fingerprint import fingerprint
from screener_ssl.tracking.artifacts import atomic_dir, atomic_write_json

FEATURES_DIR = Path("datasets/shape_features")
WINDOWED_DIR = Path("datasets/windowed")
LABELS_DIR = Path("datasets/labels")
BARS_DIR = Path("bars")
WAREHOUSE = "warehouse.duckdb"


def write_duckdb_tables(db_path: Path, tables: dict[str, pl.DataFrame]) -> None:
    """Replace each table in one transaction (DuckDB allows one writer process at a time)."""
    import duckdb

    db_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(db_path)) as con:
        con.execute("BEGIN TRANSACTION")
        for name, frame in tables.items():
            arrow = frame.to_arrow()  # noqa: F841  (referenced by name in the SQL below)
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM arrow')
        con.execute("COMMIT")


# --------------------------------------------------------------------------- bars


@dataclass(frozen=True)
class BarsReport:
    counts: dict[str, int]
    content_hash: str
    n_tickers: int
    first_date: str
    last_date: str
    source: str


def ingest_bars(data_root: Path, source: str, synthetic: SyntheticMarketConfig) -> BarsReport:
    """Read bars from ``source`` ('synthetic' or a Parquet/CSV file or folder), validate, write."""
    if source == "synthetic":
        market = generate_market(synthetic)
        raw, events = market.bars, market.events
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"the bars source {path} does not exist")
        raw, events = read_bars(path), None
    result = validate_bars(raw)
    if result.clean.height == 0:
        raise ValueError(f"every bar from {source} was rejected: {result.counts}")
    content_hash = bars_content_hash(result.clean)
    report = BarsReport(
        counts=result.counts,
        content_hash=content_hash,
        n_tickers=result.clean.get_column("ticker").n_unique(),
        first_date=str(result.clean.get_column("date").min()),
        last_date=str(result.clean.get_column("date").max()),
        source=source if source != "synthetic" else f"synthetic:{synthetic.model_dump_json()}",
    )
    with atomic_dir(data_root / BARS_DIR, overwrite=True) as tmp:
        result.clean.write_parquet(tmp / "bars.parquet")
        result.quarantine.write_parquet(tmp / "quarantine.parquet")
        if events is not None:
            events.write_parquet(tmp / "source_events.parquet")
        atomic_write_json(tmp / "bars.json", report.__dict__)
    write_duckdb_tables(
        data_root / WAREHOUSE, {"bars": result.clean, "bars_quarantine": result.quarantine}
    )
    return report


def load_clean_bars(data_root: Path) -> pl.DataFrame:
    path = data_root / BARS_DIR / "bars.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no validated bars at {path}; ingest the bars first (ingest_bars)")
    return pl.read_parquet(path)


def bars_report(data_root: Path) -> dict:
    return json.loads((data_root / BARS_DIR / "bars.json").read_text())


# --------------------------------------------------------------------------- features and windows


def build_features(data_root: Path, volume_lookback: int) -> tuple[FeatureStore, str]:
    bars = load_clean_bars(data_root)
    store = compute_shape_features(bars, volume_lookback=volume_lookback)
    version = fingerprint({"bars": bars_report(data_root)["content_hash"], "volume_lookback": volume_lookback})
    with atomic_dir(data_root / FEATURES_DIR, overwrite=True) as tmp:
        store.save(tmp)
        atomic_write_json(tmp / "version.json", {"data_version": version, "volume_lookback": volume_lookback})
    return store, version


def dataset_fingerprint(spec: WindowSpec, bars_hash: str) -> str:
    """Same spec and bars -> same fingerprint; any spec field or any bar value changed -> different."""
    return fingerprint({"spec": spec.model_dump(mode="json"), "bars": bars_hash})


def build_windowed_dataset(data_root: Path, spec: WindowSpec) -> tuple[WindowIndex, dict]:
    store = FeatureStore.load(data_root / FEATURES_DIR)
    if spec.volume_lookback != json.loads((data_root / FEATURES_DIR / "version.json").read_text())["volume_lookback"]:
        raise ValueError("shape_features were computed with another volume_lookback than the window spec; rebuild them")
    index = build_window_index(store, spec)
    bars_hash = bars_report(data_root)["content_hash"]
    info = {
        "spec": spec.model_dump(mode="json"),
        "spec_fingerprint": spec.fingerprint(),
        "bars_hash": bars_hash,
        "dataset_fingerprint": dataset_fingerprint(spec, bars_hash),
        "windows": index.counts(),
        "split_bounds": index.split_bounds,
        "n_tickers": store.n_tickers,
        "n_bars": int(store.values.shape[0]),
    }
    with atomic_dir(data_root / WINDOWED_DIR, overwrite=True) as tmp:
        index.save(tmp)
        atomic_write_json(tmp / "dataset.json", info)
    return index, info


# --------------------------------------------------------------------------- labels


def resolve_label_events(data_root: Path, source: str) -> tuple[pl.DataFrame, tuple[str, ...], str]:
    """(events, patterns, description) for 'synthetic', 'talib', 'chart[:p1,p2,...]' or a label file."""
    if source == "synthetic":
        path = data_root / BARS_DIR / "source_events.parquet"
        if not path.exists():
            raise ValueError(
                "labels source 'synthetic' needs the synthetic market's ground truth, but the bars came "
                "from a file; use the labels source 'talib' or a label file"
            )
        return pl.read_parquet(path), PATTERNS, "synthetic ground truth"
    if source == "talib":
        from screener_ssl.data.label_sources import TALIB_PATTERNS, talib_events

        return talib_events(load_clean_bars(data_root)), tuple(TALIB_PATTERNS), "TA-Lib candlestick functions"
    if source == "chart" or source.startswith("chart:"):
        from screener_ssl.data.chart_patterns import chart_pattern_events, parse_chart_source

        config = parse_chart_source(source)
        events = chart_pattern_events(load_clean_bars(data_root), config)
        return events, config.patterns, f"ta-patterns chart detectors ({config.mode}): {', '.join(config.patterns)}"
    from screener_ssl.data.label_sources import read_label_events

    events = read_label_events(Path(source))
    return events, tuple(sorted(events.get_column("pattern").unique().to_list())), f"label file {source}"


def build_labels(data_root: Path, source: str, spec: WindowSpec) -> dict:
    store = FeatureStore.load(data_root / FEATURES_DIR)
    index = WindowIndex.load(data_root / WINDOWED_DIR)
    events, patterns, description = resolve_label_events(data_root, source)
    located = locate_events(events, store, patterns)
    labels = label_matrix(located, store, index, spec.label_horizon)
    info = {
        "source": description,
        "patterns": list(patterns),
        "label_horizon": spec.label_horizon,
        "events": located.events.height,
        "events_per_pattern": {
            p: int((located.events.get_column("pattern") == p).sum()) for p in patterns
        },
        "unmatched_events": located.unmatched.height,
        "unmatched_reasons": located.unmatched.group_by("reason").len().to_dicts() if located.unmatched.height else [],
        "prevalence": prevalence_by_split(labels, index, patterns),
        "data_version": fingerprint(
            {"dataset": json.loads((data_root / WINDOWED_DIR / "dataset.json").read_text())["dataset_fingerprint"],
             "events": int(events.hash_rows().sum()) if events.height else 0, "source": source}
        ),
    }
    with atomic_dir(data_root / LABELS_DIR, overwrite=True) as tmp:
        np.save(tmp / "labels.npy", labels)
        located.events.write_parquet(tmp / "events.parquet")
        located.unmatched.write_parquet(tmp / "unmatched.parquet")
        atomic_write_json(tmp / "labels.json", info)
    write_duckdb_tables(data_root / WAREHOUSE, {"label_events": located.events})
    return info


# --------------------------------------------------------------------------- loading everything


@dataclass(frozen=True)
class Dataset:
    """What pretraining and probing read: features, windows, labels and their fingerprints."""

    store: FeatureStore
    index: WindowIndex
    spec: WindowSpec
    info: dict
    labels: np.ndarray | None  # uint8 [M, P]
    patterns: tuple[str, ...]
    events: EventRows | None

    @property
    def dataset_fingerprint(self) -> str:
        return self.info["dataset_fingerprint"]

    def ticker_start(self, positions: np.ndarray) -> np.ndarray:
        return self.store.offsets[:-1][self.index.ticker_id[positions]]

    def windows(self, positions: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Censored windows ``x float32 [n, window_max, C], observed bool [n, window_max, C]`` of index ``positions``.

        The one way windows are read (training batches, probe, finetune, checks, scan): each ends at
        its window's ``decision_row`` with only the open-known fields of that bar. ``values`` replaces
        the feature array (same layout; causality tests perturb a copy).
        """
        positions = np.asarray(positions, dtype=np.int64)
        return self.windows_at(self.index.decision_row[positions], self.ticker_start(positions), values)

    def windows_at(
        self, decision_row: np.ndarray, ticker_start: np.ndarray, values: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`windows` for decisions outside the index: global ``decision_row [n]`` with ``ticker_start [n]``."""
        return self.spec.gather(self.store.values if values is None else values, ticker_start, decision_row)


def load_dataset(data_root: Path, with_labels: bool = True) -> Dataset:
    info_path = data_root / WINDOWED_DIR / "dataset.json"
    if not info_path.exists():
        raise FileNotFoundError(f"no windowed dataset at {info_path.parent}; build it first (build_windowed_dataset)")
    info = json.loads(info_path.read_text())
    spec = WindowSpec.model_validate(info["spec"])
    store = FeatureStore.load(data_root / FEATURES_DIR)
    index = WindowIndex.load(data_root / WINDOWED_DIR)
    labels, patterns, events = None, (), None
    if with_labels:
        label_info_path = data_root / LABELS_DIR / "labels.json"
        if not label_info_path.exists():
            raise FileNotFoundError(f"no labels at {label_info_path.parent}; build them first (build_labels)")
        label_info = json.loads(label_info_path.read_text())
        labels = np.load(data_root / LABELS_DIR / "labels.npy")
        if labels.shape[0] != len(index):
            raise ValueError(
                f"labels have {labels.shape[0]} rows but the window index has {len(index)}; "
                "rebuild the labels (build_labels)"
            )
        patterns = tuple(label_info["patterns"])
        events = EventRows(
            events=pl.read_parquet(data_root / LABELS_DIR / "events.parquet"),
            unmatched=pl.read_parquet(data_root / LABELS_DIR / "unmatched.parquet"),
            patterns=patterns,
        )
    return Dataset(store=store, index=index, spec=spec, info=info, labels=labels, patterns=patterns, events=events)
