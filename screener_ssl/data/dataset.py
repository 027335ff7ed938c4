"""The data pipeline's steps, as plain functions over a data root.

Each step reads what the previous one wrote and writes its own directory
atomically. The Dagster assets in ``screener_ssl.defs.data`` are thin wrappers
around these; a notebook can call them directly.

Layout under the data root::

    bars/bars.parquet, bars/quarantine.parquet, bars/source_events.parquet, bars/bars.json
    datasets/shape_features/   values.npy offsets.npy dates.npy meta.json
    datasets/windowed/         window_index.npz splits.json dataset.json
    datasets/labels/           labels.npy events.parquet unmatched.parquet labels.json
    warehouse.duckdb           tables bars, bars_recent (+ _meta), bars_quarantine, label_events
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from screener_ssl.data import label_sources
from screener_ssl.data.bars import bars_content_hash, read_bars, validate_bars
from screener_ssl.data.features import FeatureStore, read_shape_features
from screener_ssl.data.labels import EventRows, label_matrix, locate_events, prevalence_by_split
from screener_ssl.data.synthetic import SyntheticMarketConfig, generate_market
from screener_ssl.data.warehouse import ConnectionFactory, LockRetry, publish_dir_and_tables, write_tables
from screener_ssl.data.windows import WindowIndex, WindowSpec, build_window_index
from screener_ssl.store.fingerprint import fingerprint
from screener_ssl.store.artifacts import atomic_dir, atomic_write_json

FEATURES_DIR = Path("datasets/shape_features")
WINDOWED_DIR = Path("datasets/windowed")
LABELS_DIR = Path("datasets/labels")
BARS_DIR = Path("bars")
WAREHOUSE = "warehouse.duckdb"


def write_duckdb_tables(
    warehouse: Path | ConnectionFactory, tables: dict[str, pl.DataFrame], retry: LockRetry | None = None
) -> None:
    """Replace each table in one transaction (DuckDB allows one writer process; a lock is retried).

    ``warehouse``: the DuckDB file or a factory of connections to it. Writing ``bars`` also
    rewrites its recent-dates slice ``bars_recent`` (what the scan reads).
    """
    write_tables(warehouse, tables, retry)


# --------------------------------------------------------------------------- bars


@dataclass(frozen=True)
class BarsReport:
    counts: dict[str, int]
    content_hash: str
    n_tickers: int
    first_date: str
    last_date: str
    source: str
    warnings: list[str] = field(default_factory=list)  # e.g. tickers quarantined past the market's end


def ingest_bars(
    data_root: Path,
    source: str,
    synthetic: SyntheticMarketConfig,
    date_format: str | None = None,
    retry: LockRetry | None = None,
    connect: ConnectionFactory | None = None,
) -> BarsReport:
    """Read bars from ``source`` ('synthetic' or a Parquet/CSV file or folder), validate, write.

    ``bars/`` and the warehouse tables ``bars``/``bars_quarantine`` change together or not at
    all (a locked warehouse is retried per ``retry``, then nothing changes). ``connect``:
    connections to the warehouse; default ``data_root / WAREHOUSE``.
    """
    if source == "synthetic":
        market = generate_market(synthetic)
        raw, events = market.bars, market.events
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"the bars source {path} does not exist")
        raw, events = read_bars(path, date_format=date_format), None
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
        warnings=list(result.warnings),
    )

    def write_files(tmp: Path) -> None:
        result.clean.write_parquet(tmp / "bars.parquet")
        result.quarantine.write_parquet(tmp / "quarantine.parquet")
        if events is not None:
            events.write_parquet(tmp / "source_events.parquet")
        atomic_write_json(tmp / "bars.json", report.__dict__)

    publish_dir_and_tables(
        data_root / BARS_DIR,
        write_files,
        connect or data_root / WAREHOUSE,
        {"bars": result.clean, "bars_quarantine": result.quarantine},
        retry,
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
    """Shape features of the validated bars, streamed from their Parquet file in row blocks.

    The bar table is never resident whole beside the feature array (peak memory is the
    store plus about one row group of bars). The features' version is the content hash of
    the very bars read: ``bars.json`` is read before and after streaming and must not change
    in between (an ingest swapping ``bars/`` meanwhile makes the build read again), so
    features never carry another market's version.
    """
    path = data_root / BARS_DIR / "bars.parquet"
    for _ in range(3):
        if not path.exists():
            raise FileNotFoundError(f"no validated bars at {path}; build the bars first")
        bars_hash = bars_report(data_root)["content_hash"]
        store = read_shape_features(path, volume_lookback=volume_lookback)
        if bars_report(data_root)["content_hash"] == bars_hash:
            break
    else:
        raise RuntimeError(f"bars under {path.parent} kept changing while features were built; retry")
    version = fingerprint({"bars": bars_hash, "volume_lookback": volume_lookback})
    with atomic_dir(data_root / FEATURES_DIR, overwrite=True) as tmp:
        store.save(tmp)
        atomic_write_json(
            tmp / "version.json",
            {"data_version": version, "volume_lookback": volume_lookback, "bars_hash": bars_hash},
        )
    return store, version


def load_features_consistently(data_root: Path) -> tuple[FeatureStore, dict]:
    """The feature store and its ``version.json``, from one and the same build.

    The directory is swapped atomically, but a store is several files: the version is read
    before and after loading and must not change in between.
    """
    version_path = data_root / FEATURES_DIR / "version.json"
    for _ in range(3):
        if not version_path.exists():
            raise FileNotFoundError(f"no shape features at {version_path.parent}; materialize shape_features first")
        before = version_path.read_text()
        store = FeatureStore.load(data_root / FEATURES_DIR)
        if version_path.read_text() == before:
            version = json.loads(before)
            if "bars_hash" not in version:
                raise ValueError(f"{version_path} predates bar versioning; materialize shape_features again")
            return store, version
    raise RuntimeError(f"shape features under {version_path.parent} kept changing while being read; retry")


def dataset_fingerprint(spec: WindowSpec, bars_hash: str) -> str:
    """Same spec and bars -> same fingerprint; any spec field or any bar value changed -> different."""
    return fingerprint({"spec": spec.model_dump(mode="json"), "bars": bars_hash})


def tickers_without_windows(store: FeatureStore, index: WindowIndex, spec: WindowSpec) -> dict:
    """Tickers that end no window (too few bars for ``min_history``, or all inside embargoes)."""
    has_window = np.zeros(store.n_tickers, dtype=bool)
    has_window[np.unique(index.ticker_id)] = True
    missing = np.flatnonzero(~has_window)
    bars = np.diff(store.offsets)
    return {
        "count": int(len(missing)),
        "min_history": spec.min_history,
        # The first few by name with their bar counts: enough to see what is wrong.
        "examples": {store.tickers[i]: int(bars[i]) for i in missing[:20]},
    }


def build_windowed_dataset(data_root: Path, spec: WindowSpec) -> tuple[WindowIndex, dict]:
    store, feature_version = load_features_consistently(data_root)
    if spec.volume_lookback != feature_version["volume_lookback"]:
        raise ValueError("shape_features were computed with another volume_lookback than the window spec; rebuild them")
    index = build_window_index(store, spec)
    # The bars the features were computed from, not whatever bars.json says now.
    bars_hash = feature_version["bars_hash"]
    info = {
        "spec": spec.model_dump(mode="json"),
        "spec_fingerprint": spec.fingerprint(),
        "bars_hash": bars_hash,
        "dataset_fingerprint": dataset_fingerprint(spec, bars_hash),
        "windows": index.counts(),
        "split_bounds": index.split_bounds,
        "n_tickers": store.n_tickers,
        "n_bars": int(store.values.shape[0]),
        "tickers_without_windows": tickers_without_windows(store, index, spec),
    }
    with atomic_dir(data_root / WINDOWED_DIR, overwrite=True) as tmp:
        index.save(tmp)
        atomic_write_json(tmp / "dataset.json", info)
    return index, info


# --------------------------------------------------------------------------- labels


def resolve_label_events(data_root: Path, source: str) -> tuple[pl.DataFrame, tuple[str, ...], str]:
    """(events, patterns, description) from the label source the setting ``source`` names
    (``<name>``, ``<name>:<argument>`` or a label file's path; see :mod:`screener_ssl.data.label_sources`)."""
    return label_sources.resolve_label_events(source, data_root / BARS_DIR, lambda: load_clean_bars(data_root))


def build_labels(
    data_root: Path, source: str, spec: WindowSpec, retry: LockRetry | None = None,
    connect: ConnectionFactory | None = None,
) -> dict:
    """Label events and the per-window label matrix; ``datasets/labels/`` and the warehouse's
    ``label_events`` change together or not at all (``connect``: as in :func:`ingest_bars`)."""
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

    def write_files(tmp: Path) -> None:
        np.save(tmp / "labels.npy", labels)
        located.events.write_parquet(tmp / "events.parquet")
        located.unmatched.write_parquet(tmp / "unmatched.parquet")
        atomic_write_json(tmp / "labels.json", info)

    publish_dir_and_tables(data_root / LABELS_DIR, write_files, connect or data_root / WAREHOUSE,
                           {"label_events": located.events}, retry)
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
