"""A trained backbone plus what it needs to embed new data; saved as ``encoder.pt`` + ``encoder.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from screener_ssl.data.windows import ZSCORE_CLIP, ZSCORE_EPS
from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone, build_backbone
from screener_ssl.tracking.artifacts import atomic_torch_save, atomic_write_json

if TYPE_CHECKING:
    from screener_ssl.data.dataset import Dataset

Normalization = Literal["expanding_zscore", "none"]


def expanding_zscore(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Causal z-score of ``X [N, T, C]`` (NaN = missing): step t uses mean/std of observed X[:, :t+1].

    Returns (z float32 [N, T, C] with 0 where missing, observed bool [N, T, C]).
    """
    assert X.ndim == 3, f"X must be [N, T, C], found shape {X.shape}"
    observed = np.isfinite(X)
    x = np.where(observed, X, 0.0).astype(np.float64)
    count = np.cumsum(observed, axis=1)
    s1 = np.cumsum(x, axis=1)
    s2 = np.cumsum(x * x, axis=1)
    safe = np.maximum(count, 1)
    mean = s1 / safe
    var = np.maximum(s2 / safe - mean * mean, 0.0)
    z = np.where(observed & (count > 1), (x - mean) / (np.sqrt(var) + ZSCORE_EPS), 0.0)
    return np.clip(z, -ZSCORE_CLIP, ZSCORE_CLIP).astype(np.float32), observed


class Encoder:
    """Embeds ``[N, T, C]`` arrays with a frozen backbone; ``encode(X)[:, t]`` depends only on ``X[:, :t+1]``."""

    def __init__(self, backbone: SSLBackbone, normalization: Normalization, meta: dict[str, Any] | None = None):
        self.backbone = backbone.eval()
        self.normalization = normalization
        self.meta = dict(meta or {})

    @property
    def input_channels(self) -> int:
        return self.backbone.input_channels

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    def prepare(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 3 or X.shape[2] != self.input_channels:
            raise ValueError(f"X must be [N, T, {self.input_channels}], found shape {X.shape}")
        if self.normalization == "expanding_zscore":
            return expanding_zscore(X)
        observed = np.isfinite(X)
        return np.where(observed, X, 0.0).astype(np.float32), observed

    @torch.inference_mode()
    def encode(self, X: np.ndarray, per_timestep: bool = False, batch_size: int = 256) -> np.ndarray:
        """``X float [N, T, C]`` (NaN = missing) -> ``[N, D]`` at the last step, or ``[N, T, D]``."""
        x, observed = self.prepare(X)
        return self.encode_prepared(x, observed, per_timestep=per_timestep, batch_size=batch_size)

    @torch.inference_mode()
    def encode_prepared(
        self, x: np.ndarray, observed: np.ndarray, per_timestep: bool = False, batch_size: int = 256
    ) -> np.ndarray:
        """Already-normalized ``x, observed [N, T, C]`` -> embeddings (no further normalization)."""
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))
            ob = torch.from_numpy(np.ascontiguousarray(observed[i : i + batch_size]))
            h = self.backbone(xb, ob)
            out.append((h if per_timestep else h[:, -1]).numpy())
        if not out:
            shape = (0, x.shape[1], self.embed_dim) if per_timestep else (0, self.embed_dim)
            return np.zeros(shape, dtype=np.float32)
        return np.concatenate(out, axis=0)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(directory / "encoder.pt", self.backbone.state_dict())
        atomic_write_json(
            directory / "encoder.json",
            {
                "backbone": self.backbone.config.model_dump(mode="json"),
                "input_channels": self.input_channels,
                "normalization": self.normalization,
                "meta": self.meta,
            },
        )
        return directory


def load_encoder(directory: str | Path) -> Encoder:
    directory = Path(directory)
    spec_path = directory / "encoder.json"
    if not spec_path.exists():
        raise FileNotFoundError(f"no encoder at {directory} (missing encoder.json)")
    spec = json.loads(spec_path.read_text())
    backbone = build_backbone(BackboneConfig.model_validate(spec["backbone"]), int(spec["input_channels"]))
    state = torch.load(directory / "encoder.pt", map_location="cpu", weights_only=True)
    backbone.load_state_dict(state)
    return Encoder(backbone, spec["normalization"], spec.get("meta"))


# --------------------------------------------------------------------------- the one embed path


def embed_decisions(
    encoder: Encoder, dataset: "Dataset", decision_row: np.ndarray, ticker_start: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Embeddings ``[n, D]`` float32 at global ``decision_row [n]`` (first row of each ticker: ``ticker_start [n]``)."""
    decision_row = np.asarray(decision_row, dtype=np.int64)
    ticker_start = np.asarray(ticker_start, dtype=np.int64)
    out = np.empty((decision_row.shape[0], encoder.embed_dim), dtype=np.float32)
    for i in range(0, decision_row.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        x, observed = dataset.windows_at(decision_row[sl], ticker_start[sl])
        out[sl] = encoder.encode_prepared(x, observed, batch_size=batch_size)
    return out


def embed_positions(encoder: Encoder, dataset: "Dataset", positions: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Embeddings ``[n, D]`` at the decision row of the windows at index ``positions``."""
    positions = np.asarray(positions, dtype=np.int64)
    return embed_decisions(
        encoder, dataset, dataset.index.decision_row[positions], dataset.ticker_start(positions), batch_size
    )
