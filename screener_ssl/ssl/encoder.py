"""A trained backbone plus what it needs to embed new data; saved as ``encoder.pt`` + ``encoder.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from screener_ssl.data.windows import ZSCORE_CLIP, ZSCORE_EPS
from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone, build_backbone
from screener_ssl.store.artifacts import atomic_torch_save, atomic_write_json, to_jsonable

if TYPE_CHECKING:
    from screener_ssl.data.dataset import Dataset

Normalization = Literal["expanding_zscore", "none"]
# How a per-timestep embedding becomes the embedding at t: the step itself ("last"), or a
# running max / mean over every visible step up to t (TS2Vec's full-series max pooling, prefix-only).
Pooling = Literal["last", "max", "mean"]
POOLINGS: tuple[str, ...] = ("last", "max", "mean")


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


def causal_pool(h: torch.Tensor, visible: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Running pooling of ``h [B, T, D]`` over visible steps ``visible [B, T]`` (bool) up to each t.

    Step t of the result depends on steps ``<= t`` only. Steps before the first visible one
    (left padding) stay 0; a masked step inside the window is skipped, not counted.
    """
    assert h.dim() == 3 and visible.shape == h.shape[:2], f"h {tuple(h.shape)} and visible {tuple(visible.shape)}"
    if pooling == "last":
        return h
    vis = visible.unsqueeze(-1)  # [B, T, 1]
    if pooling == "max":
        pooled = torch.where(vis, h, torch.full_like(h, float("-inf"))).cummax(dim=1).values
        return torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))
    if pooling == "mean":
        count = vis.to(h.dtype).cumsum(dim=1)  # [B, T, 1]
        total = torch.where(vis, h, torch.zeros_like(h)).cumsum(dim=1)
        return total / count.clamp(min=1.0)
    raise ValueError(f"pooling must be one of {POOLINGS}, found {pooling!r}")


class Encoder:
    """Embeds ``[N, T, C]`` arrays with a frozen backbone; ``encode(X)[:, t]`` depends only on ``X[:, :t+1]``.

    ``pooling`` (default for every call; each call may override it): "last" = the backbone's
    embedding at t, "max"/"mean" = a running max/mean of it over every visible step up to t.
    """

    def __init__(
        self,
        backbone: SSLBackbone,
        normalization: Normalization,
        meta: dict[str, Any] | None = None,
        pooling: Pooling = "last",
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, found {pooling!r}")
        self.backbone = backbone.eval()
        self.normalization = normalization
        self.meta = dict(meta or {})
        self.pooling = pooling

    def with_pooling(self, pooling: Pooling) -> "Encoder":
        """The same frozen backbone with another default pooling."""
        return Encoder(self.backbone, self.normalization, self.meta, pooling=pooling)

    def to(self, device: str | torch.device) -> "Encoder":
        """Move the backbone to ``device``; :meth:`encode_prepared` then sends each batch there."""
        self.backbone.to(device)
        return self

    @property
    def device(self) -> torch.device:
        first = next(self.backbone.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        """What a probe records about this encoder."""
        return {
            "backbone": self.backbone.config.model_dump(mode="json"),
            "pooling": self.pooling,
            "n_parameters": int(sum(p.numel() for p in self.backbone.parameters())),
        }

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
    def encode(
        self, X: np.ndarray, per_timestep: bool = False, batch_size: int = 256, pooling: Pooling | None = None
    ) -> np.ndarray:
        """``X float [N, T, C]`` (NaN = missing) -> ``[N, D]`` at the last step, or ``[N, T, D]``."""
        x, observed = self.prepare(X)
        return self.encode_prepared(x, observed, per_timestep=per_timestep, batch_size=batch_size, pooling=pooling)

    @torch.inference_mode()
    def encode_prepared(
        self,
        x: np.ndarray,
        observed: np.ndarray,
        per_timestep: bool = False,
        batch_size: int = 256,
        pooling: Pooling | None = None,
    ) -> np.ndarray:
        """Already-normalized ``x, observed [N, T, C]`` -> embeddings (no further normalization)."""
        pooling = pooling or self.pooling
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, found {pooling!r}")
        device = self.device
        on_cuda = device.type == "cuda"
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))
            ob = torch.from_numpy(np.ascontiguousarray(observed[i : i + batch_size]))
            if device.type != "cpu":
                if on_cuda:
                    xb, ob = xb.pin_memory(), ob.pin_memory()
                xb, ob = xb.to(device, non_blocking=True), ob.to(device, non_blocking=True)
            if pooling == "last" and not per_timestep:
                # pooled(): the last step alone, through the backbone's cheaper form where it has one.
                out.append(self.backbone.pooled(xb, ob))
                continue
            h = self.backbone(xb, ob)
            if pooling != "last":
                h = causal_pool(h, ob.any(dim=-1), pooling)  # a step is visible when any channel is
            out.append(h if per_timestep else h[:, -1])
        if not out:
            shape = (0, x.shape[1], self.embed_dim) if per_timestep else (0, self.embed_dim)
            return np.zeros(shape, dtype=np.float32)
        # Off the CPU the batches stay on the device and come back in one copy.
        return torch.cat(out, dim=0).float().cpu().numpy()

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
                "pooling": self.pooling,
                "meta": self.meta,
            },
        )
        return directory


def load_encoder(directory: str | Path) -> Encoder:
    """The encoder saved in ``directory``: a backbone :class:`Encoder`, or a fitted MiniRocket."""
    directory = Path(directory)
    spec_path = directory / "encoder.json"
    if not spec_path.exists():
        raise FileNotFoundError(f"no encoder at {directory} (missing encoder.json)")
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"encoder spec {spec_path} is corrupt ({err}); rematerialize the run") from err
    if spec.get("kind") == "minirocket":
        from screener_ssl.ssl.minirocket import load_minirocket

        return load_minirocket(directory)
    backbone = build_backbone(BackboneConfig.model_validate(spec["backbone"]), int(spec["input_channels"]))
    weights = directory / "encoder.pt"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        backbone.load_state_dict(state)
    except Exception as err:  # truncated, garbage, or weights of another backbone
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"encoder weights {weights} cannot be loaded ({first_line}); rematerialize the run") from err
    return Encoder(backbone, spec["normalization"], spec.get("meta"), pooling=spec.get("pooling", "last"))


# --------------------------------------------------------------------------- what a probe head was fitted on


def embedding_settings(encoder: Any) -> dict[str, Any]:
    """How ``encoder`` turns a gathered window into the embedding a probe head is fitted on.

    Recorded beside the head (``probe_head.json``, key ``embedding``) by the probe and checked by
    the scan (:func:`encoder_for_head`): the pooling, the normalization, the widths and the
    encoder's own description (backbone config or fitted transform, parameter count). JSON-ready.
    """
    described = encoder.describe()
    settings = {
        "pooling": getattr(encoder, "pooling", described.get("pooling", "last")),
        "normalization": encoder.normalization,
        "input_channels": int(encoder.input_channels),
        "embed_dim": int(encoder.embed_dim),
        "encoder": described,
    }
    return json.loads(json.dumps(to_jsonable(settings)))


def encoder_for_head(encoder: Any, recorded: dict[str, Any] | None, where: str) -> Any:
    """``encoder`` set to embed exactly as recorded for a probe head (its pooling); raises naming what differs.

    ``recorded``: the head's :func:`embedding_settings`; ``where``: the head file, for the message.
    """
    if not isinstance(recorded, dict) or "pooling" not in recorded:
        raise ValueError(
            f"{where} records no embedding settings (pooling, normalization, encoder): it cannot say which "
            "embedding its head was fitted on; rerun the probe (probe_metrics) for this run"
        )
    pooling = recorded["pooling"]
    if pooling != getattr(encoder, "pooling", "last"):
        encoder = encoder.with_pooling(pooling)
    actual = embedding_settings(encoder)
    differing = sorted(k for k in set(actual) | set(recorded) if actual.get(k) != recorded.get(k))
    if differing:
        detail = "; ".join(f"{k}: head {recorded.get(k)!r}, encoder {actual.get(k)!r}" for k in differing)
        raise ValueError(f"{where} was fitted on another embedding than this encoder gives ({detail})")
    return encoder


# --------------------------------------------------------------------------- the one embed path


def embed_decisions(
    encoder: Encoder,
    dataset: "Dataset",
    decision_row: np.ndarray,
    ticker_start: np.ndarray,
    batch_size: int = 1024,
    clock: dict | None = None,
) -> np.ndarray:
    """Embeddings ``[n, D]`` float32 at global ``decision_row [n]`` (first row of each ticker: ``ticker_start [n]``).

    ``clock``, when given, accumulates ``embed_seconds`` and ``windows_embedded`` (compute cost).
    """
    started = time.perf_counter()
    decision_row = np.asarray(decision_row, dtype=np.int64)
    ticker_start = np.asarray(ticker_start, dtype=np.int64)
    out = np.empty((decision_row.shape[0], encoder.embed_dim), dtype=np.float32)
    for i in range(0, decision_row.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        x, observed = dataset.windows_at(decision_row[sl], ticker_start[sl])
        out[sl] = encoder.encode_prepared(x, observed, batch_size=batch_size)
    if clock is not None:
        clock["embed_seconds"] = clock.get("embed_seconds", 0.0) + time.perf_counter() - started
        clock["windows_embedded"] = clock.get("windows_embedded", 0) + int(decision_row.shape[0])
    return out


def embed_positions(
    encoder: Encoder, dataset: "Dataset", positions: np.ndarray, batch_size: int = 1024, clock: dict | None = None
) -> np.ndarray:
    """Embeddings ``[n, D]`` at the decision row of the windows at index ``positions``."""
    positions = np.asarray(positions, dtype=np.int64)
    return embed_decisions(
        encoder, dataset, dataset.index.decision_row[positions], dataset.ticker_start(positions), batch_size, clock
    )
