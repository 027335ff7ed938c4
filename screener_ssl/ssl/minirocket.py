"""MiniRocket / MultiRocket as a fitted feature extractor with the :class:`Encoder` contract.

The non-deep reference every time-series representation is measured against
(Dempster, Schmidt & Webb, "MiniRocket", KDD 2021; Tan et al., "MultiRocket",
2022), through aeon's implementation
(``aeon.transformations.collection.convolution_based``). It is fitted on
train windows and then embeds exactly what the probe hands any encoder: the
censored, per-window normalized ``x, observed [N, T, C]`` of
:func:`screener_ssl.data.windows.gather_windows` (decision bar open-only,
nothing after it). Its input is the backbone input of
:meth:`SSLBackbone.model_inputs`: values zeroed where unobserved, then the
observed mask as channels, so "censored" and "zero" stay distinguishable.

Each feature is a function of one whole window, so causality is inherited
from the window gather; ``screener_ssl_tests/ssl/test_minirocket.py`` proves
it by perturbing the future and the decision bar's non-open fields.

Saved as ``encoder.json`` (``kind: "minirocket"``) + ``minirocket.pkl`` (the
fitted aeon transform, pickled: load only run directories you wrote).
"""

from __future__ import annotations

import json
import pickle
import resource
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from screener_ssl.tracking.artifacts import atomic_write_bytes, atomic_write_json

ENCODER_KIND = "minirocket"
STATE_FILE = "minirocket.pkl"
MIN_SERIES_LENGTH = 9  # aeon's MiniRocket needs at least 9 time points


class MiniRocketConfig(BaseModel):
    """How the transform is built and fitted; recorded verbatim in the run's artifacts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transform: Literal["minirocket", "multirocket"] = "minirocket"
    # MiniRocket rounds down to a multiple of 84 (10,000 -> 9,996 features); MultiRocket emits
    # 8 features per kernel (4 pooling operators on the series and on its first difference).
    n_kernels: int = Field(10_000, ge=84, le=100_000)
    max_dilations_per_kernel: int = Field(32, ge=1, le=128)
    fit_windows: int = Field(10_000, ge=2)  # train windows the biases are fitted on (seeded subsample)
    include_mask: bool = True  # the observed mask as extra channels (the backbones see it too)
    chunk_size: int = Field(1024, ge=1, le=65_536)  # windows per transform call: bounded working memory
    n_jobs: int = Field(-1, ge=-1, le=256)  # threads of the transform's fit and transform; -1 = every core
    seed: int = Field(0, ge=0)


def _peak_rss_mb() -> float:
    """The process's resident-set high-water mark so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class MiniRocketEncoder:
    """A fitted MiniRocket/MultiRocket transform that embeds windows like :class:`Encoder` does.

    ``encode_prepared(x, observed) -> float32 [N, D]``, one row per window,
    computed ``chunk_size`` windows at a time. ``cost`` records fit and
    transform seconds, windows transformed and the process's peak RSS.
    """

    normalization = "none"  # windows arrive normalized by the gather, as for every probed encoder
    pooling = "last"  # one feature vector per whole window: there are no steps to pool

    def __init__(self, config: MiniRocketConfig, input_channels: int, meta: dict[str, Any] | None = None):
        if input_channels < 1:
            raise ValueError(f"input_channels must be >= 1, found {input_channels}")
        self.config = config
        self._input_channels = int(input_channels)
        self.meta = dict(meta or {})
        self.transform_ = None
        self._embed_dim: int | None = None
        self.cost: dict[str, float] = {"fit_seconds": 0.0, "transform_seconds": 0.0, "windows_transformed": 0}

    # ------------------------------------------------------------------ contract shared with Encoder

    @property
    def input_channels(self) -> int:
        return self._input_channels

    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:
            raise RuntimeError("MiniRocketEncoder is not fitted; call fit_prepared first")
        return self._embed_dim

    @property
    def n_parameters(self) -> int:
        """Fitted numbers (dilations, feature counts, biases; channel picks for multivariate input)."""
        if self.transform_ is None:
            return 0
        params = getattr(self.transform_, "parameters", None)
        if params is None:
            return 0
        arrays = params if isinstance(params, tuple) else (params,)
        return int(sum(np.asarray(a).size for a in _flatten(arrays)))

    def with_pooling(self, pooling: str) -> "MiniRocketEncoder":
        if pooling != "last":
            raise ValueError(f"MiniRocket features summarize the whole window; pooling {pooling!r} does not apply")
        return self

    def describe(self) -> dict[str, Any]:
        """What the probe records about this encoder in place of a backbone config."""
        return {"kind": ENCODER_KIND, **self.config.model_dump(mode="json"), "n_parameters": self.n_parameters}

    def _series(self, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """``x, observed [N, T, C]`` -> aeon's ``float32 [N, C', T]`` with C' = 2C (or C without the mask)."""
        if x.shape != observed.shape or x.ndim != 3:
            raise ValueError(f"x {x.shape} and observed {observed.shape} must both be [N, T, C]")
        if x.shape[2] != self.input_channels:
            raise ValueError(f"x must be [N, T, {self.input_channels}], found shape {x.shape}")
        if x.shape[1] < MIN_SERIES_LENGTH:
            raise ValueError(f"MiniRocket needs windows of >= {MIN_SERIES_LENGTH} steps, found {x.shape[1]}")
        values = np.where(observed, x, 0.0).astype(np.float32)
        if self.config.include_mask:
            values = np.concatenate([values, observed.astype(np.float32)], axis=2)
        return np.ascontiguousarray(values.transpose(0, 2, 1))

    def fit_prepared(self, x: np.ndarray, observed: np.ndarray) -> "MiniRocketEncoder":
        """Fit the kernels' dilations and biases on train windows ``x, observed [N, T, C]``."""
        from aeon.transformations.collection.convolution_based import MiniRocket, MultiRocket

        cfg = self.config
        if x.shape[0] < 2:
            raise ValueError(f"MiniRocket needs >= 2 train windows to fit, found {x.shape[0]}")
        cls = MiniRocket if cfg.transform == "minirocket" else MultiRocket
        started = time.perf_counter()
        self.transform_ = cls(
            n_kernels=cfg.n_kernels,
            max_dilations_per_kernel=cfg.max_dilations_per_kernel,
            n_jobs=cfg.n_jobs if cfg.n_jobs != 0 else -1,  # 0 reads as "every core" too
            random_state=cfg.seed,
        )
        series = self._series(x, observed)
        self.transform_.fit(series)
        self.cost["fit_seconds"] = time.perf_counter() - started
        self.cost["fit_windows"] = int(x.shape[0])
        self._embed_dim = int(self._transform(series[:2]).shape[1])
        self.cost["peak_rss_mb"] = _peak_rss_mb()
        return self

    def _transform(self, series: np.ndarray) -> np.ndarray:
        out = self.transform_.transform(series)
        return np.asarray(out, dtype=np.float32)

    def encode_prepared(
        self, x: np.ndarray, observed: np.ndarray, per_timestep: bool = False, batch_size: int | None = None
    ) -> np.ndarray:
        """Already-normalized ``x, observed [N, T, C]`` -> features ``float32 [N, D]``, in chunks."""
        if per_timestep:
            raise ValueError("MiniRocket summarizes a whole window; it has no per-timestep embedding")
        if self.transform_ is None:
            raise RuntimeError("MiniRocketEncoder is not fitted; call fit_prepared first")
        n = x.shape[0]
        out = np.empty((n, self.embed_dim), dtype=np.float32)
        chunk = self.config.chunk_size
        started = time.perf_counter()
        for i in range(0, n, chunk):
            out[i : i + chunk] = self._transform(self._series(x[i : i + chunk], observed[i : i + chunk]))
        self.cost["transform_seconds"] += time.perf_counter() - started
        self.cost["windows_transformed"] += int(n)
        self.cost["peak_rss_mb"] = _peak_rss_mb()
        return out

    def encode(self, X: np.ndarray, per_timestep: bool = False, batch_size: int | None = None) -> np.ndarray:
        """Raw ``X float [N, T, C]`` (NaN = missing) -> ``[N, D]``; no normalization beyond zero-filling."""
        X = np.asarray(X, dtype=np.float32)
        observed = np.isfinite(X)
        return self.encode_prepared(np.where(observed, X, 0.0), observed, per_timestep=per_timestep)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        if self.transform_ is None:
            raise RuntimeError("MiniRocketEncoder is not fitted; nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / STATE_FILE, pickle.dumps(self.transform_, protocol=pickle.HIGHEST_PROTOCOL))
        atomic_write_json(
            directory / "encoder.json",
            {
                "kind": ENCODER_KIND,
                "minirocket": self.config.model_dump(mode="json"),
                "input_channels": self.input_channels,
                "embed_dim": self.embed_dim,
                "normalization": self.normalization,
                "meta": self.meta,
                "cost": self.cost,
            },
        )
        return directory


def _flatten(items) -> list:
    out = []
    for item in items:
        if isinstance(item, (tuple, list)):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def load_minirocket(directory: str | Path) -> MiniRocketEncoder:
    """Load a :class:`MiniRocketEncoder` saved by :meth:`MiniRocketEncoder.save`."""
    directory = Path(directory)
    spec = json.loads((directory / "encoder.json").read_text())
    if spec.get("kind") != ENCODER_KIND:
        raise ValueError(f"{directory}/encoder.json is not a MiniRocket encoder (kind={spec.get('kind')!r})")
    state = directory / STATE_FILE
    if not state.exists():
        raise FileNotFoundError(f"no MiniRocket state at {state}")
    enc = MiniRocketEncoder(MiniRocketConfig.model_validate(spec["minirocket"]), int(spec["input_channels"]), spec.get("meta"))
    enc.transform_ = pickle.loads(state.read_bytes())
    enc._embed_dim = int(spec["embed_dim"])
    enc.cost = dict(spec.get("cost") or enc.cost)
    return enc


def fit_minirocket_on_dataset(dataset, config: MiniRocketConfig, meta: dict[str, Any] | None = None) -> MiniRocketEncoder:
    """Fit on a seeded subsample of ``dataset``'s train windows, gathered as the probe gathers them."""
    from screener_ssl.data.windows import gather_windows

    train_pos = dataset.index.rows_of("train")
    if train_pos.shape[0] < 2:
        raise ValueError("the train split has fewer than 2 windows; MiniRocket cannot be fitted")
    rng = np.random.default_rng(config.seed)
    if train_pos.shape[0] > config.fit_windows:
        train_pos = np.sort(rng.choice(train_pos, size=config.fit_windows, replace=False))
    x, observed = gather_windows(
        dataset.store.values,
        dataset.ticker_start(train_pos),
        dataset.index.decision_row[train_pos],
        dataset.spec.window_max,
        open_known=dataset.spec.open_known_mask,
    )
    enc = MiniRocketEncoder(config, dataset.spec.n_features, meta)
    return enc.fit_prepared(x, observed)
