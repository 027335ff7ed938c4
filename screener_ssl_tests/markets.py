"""A small synthetic market built through the data layer, as the data assets build it."""

from __future__ import annotations

from pathlib import Path

from screener_ssl.data import dataset as ds
from screener_ssl.data.synthetic import SyntheticMarketConfig
from screener_ssl.data.windows import WindowSpec


def synthetic_dataset(root: Path, spec: WindowSpec, n_tickers: int, n_days: int, seed: int = 0,
                      difficulty: float = 0.2) -> ds.Dataset:
    """Bars -> features -> windows -> labels under ``root``; the loaded, labelled dataset."""
    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=n_tickers, n_days=n_days, seed=seed,
                                                            difficulty=difficulty))
    ds.build_features(root, spec.volume_lookback)
    ds.build_windowed_dataset(root, spec)
    ds.build_labels(root, "synthetic", spec)
    return ds.load_dataset(root)
