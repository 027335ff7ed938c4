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

Saved as ``encoder.json`` (``kind: "minirocket"``, the config and the transform's fitted
scalars) + ``minirocket.npz`` (its fitted arrays: channel combinations, dilations, features
per dilation, biases), read with ``allow_pickle=False``; loading rebuilds the aeon transform
from them and checks every array against what a fit of that config produces (shapes, dtypes,
the dilations, channel indices in range), so a crafted file runs no code and cannot send the
transform's kernels outside their arrays.
"""

from __future__ import annotations

import io
import json
import resource
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from screener_ssl.store.artifacts import atomic_write_bytes, atomic_write_json

ENCODER_KIND = "minirocket"
STATE_FILE = "minirocket.npz"
LEGACY_STATE_FILE = "minirocket.pkl"  # older runs pickled the transform: never loaded
STATE_FORMAT = "screener_ssl.minirocket/1"
# The aeon attributes holding a fitted transform's arrays, per transform (tuples of arrays).
STATE_ATTRIBUTES: dict[str, tuple[str, ...]] = {"minirocket": ("parameters",), "multirocket": ("parameter", "parameter1")}
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
        parts = [getattr(self.transform_, a, None) or () for a in STATE_ATTRIBUTES[self.config.transform]]
        return int(sum(np.asarray(a).size for a in _flatten(parts)))

    def with_pooling(self, pooling: str) -> "MiniRocketEncoder":
        if pooling != "last":
            raise ValueError(f"MiniRocket features summarize the whole window; pooling {pooling!r} does not apply")
        return self

    def to(self, device: str) -> "MiniRocketEncoder":
        """MiniRocket's kernels run on the CPU (numba); any other device is refused."""
        if str(device) != "cpu":
            raise ValueError(f"MiniRocket runs on the CPU only, found device {device!r}")
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
            n_jobs=transform_threads(cfg.n_jobs),
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
        arrays, state = _transform_state(self.transform_, self.config)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(directory / STATE_FILE, buffer.getvalue())
        atomic_write_json(
            directory / "encoder.json",
            {
                "kind": ENCODER_KIND,
                "minirocket": self.config.model_dump(mode="json"),
                "input_channels": self.input_channels,
                "embed_dim": self.embed_dim,
                "normalization": self.normalization,
                "pooling": self.pooling,
                "state": state,
                "meta": self.meta,
                "cost": self.cost,
            },
        )
        return directory


def _transform_state(transform, config: MiniRocketConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A fitted aeon transform as plain arrays (``<attribute>.<i>``) and JSON scalars."""
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, int] = {}
    for attribute in STATE_ATTRIBUTES[config.transform]:
        parts = getattr(transform, attribute)
        layout[attribute] = len(parts)
        for i, part in enumerate(parts):
            arrays[f"{attribute}.{i}"] = np.ascontiguousarray(part)
    meta = transform.metadata_
    state = {
        "format": STATE_FORMAT,
        "file": STATE_FILE,
        "layout": layout,
        "n_channels": int(meta["n_channels"]),
        "n_timepoints": int(meta["n_timepoints"]),
        "n_kernels_": int(getattr(transform, "n_kernels_", config.n_kernels)),
    }
    return arrays, state


class MiniRocketStateError(ValueError):
    """A MiniRocket state file that cannot be loaded safely; the message names the file and what is wrong."""


def _read_state_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``path`` (an ``.npz``), never unpickling: object arrays and pickles are refused."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise MiniRocketStateError(f"{path} is not an .npz archive of arrays")
            return {name: archive[name] for name in archive.files}
    except MiniRocketStateError:
        raise
    except Exception as err:  # a pickle (refused by allow_pickle=False), garbage, a truncated archive
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MiniRocketStateError(f"{path} cannot be loaded safely ({type(err).__name__}: {first_line})") from err


def _expected_parts(
    transform: str, n_channels: int, n_timepoints: int, config: MiniRocketConfig, difference: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The dilations and features per dilation a fit of ``config`` on ``[N, n_channels, n_timepoints]`` produces."""
    if transform == "minirocket":
        from aeon.transformations.collection.convolution_based._minirocket import _fit_dilations

        return _fit_dilations(n_timepoints, max(config.n_kernels, 84), config.max_dilations_per_kernel)
    from aeon.transformations.collection.convolution_based._multirocket import _fit_dilations

    # MultiRocket fits its second set on the first difference: one step shorter.
    return _fit_dilations(n_timepoints - int(difference), config.n_kernels, config.max_dilations_per_kernel)


def _check_parts(
    parts: list[np.ndarray], where: str, n_channels: int, expected: tuple[np.ndarray, np.ndarray]
) -> None:
    """Raise :class:`MiniRocketStateError` unless ``parts`` are the arrays a fit would have produced."""
    n_kernels = 84
    dilations, per_dilation = expected
    if len(parts) == 5:
        per_combination, channel_indices, got_dilations, got_per_dilation, biases = parts
        if per_combination.dtype != np.int32 or channel_indices.dtype != np.int32:
            raise MiniRocketStateError(f"{where}: channel arrays must be int32")
        if per_combination.shape != (n_kernels * len(dilations),):
            raise MiniRocketStateError(
                f"{where}: {per_combination.shape} channel combinations, expected ({n_kernels * len(dilations)},)"
            )
        if per_combination.min() < 1 or per_combination.max() > min(n_channels, 9):
            raise MiniRocketStateError(f"{where}: channels per combination must lie in [1, {min(n_channels, 9)}]")
        if channel_indices.shape != (int(per_combination.sum()),):
            raise MiniRocketStateError(
                f"{where}: {channel_indices.shape[0]} channel indices, the combinations use {int(per_combination.sum())}"
            )
        if channel_indices.size and (channel_indices.min() < 0 or channel_indices.max() >= n_channels):
            raise MiniRocketStateError(f"{where}: channel indices must lie in [0, {n_channels})")
    elif len(parts) == 3 and n_channels == 1:
        got_dilations, got_per_dilation, biases = parts
    else:
        raise MiniRocketStateError(f"{where}: {len(parts)} arrays, expected 5 (or 3 for one channel)")
    if got_dilations.dtype != np.int32 or not np.array_equal(got_dilations, dilations):
        raise MiniRocketStateError(f"{where}: dilations {got_dilations.tolist()} differ from the config's {dilations.tolist()}")
    if got_per_dilation.dtype != np.int32 or not np.array_equal(got_per_dilation, per_dilation):
        raise MiniRocketStateError(f"{where}: features per dilation differ from the config's {per_dilation.tolist()}")
    n_biases = n_kernels * int(per_dilation.sum())
    if biases.dtype != np.float32 or biases.shape != (n_biases,) or not np.isfinite(biases).all():
        raise MiniRocketStateError(f"{where}: biases must be {n_biases} finite float32 values, found {biases.dtype} {biases.shape}")


def transform_threads(n_jobs: int) -> int:
    """Threads for the aeon transform: ``n_jobs`` (-1 or 0 = every core), at most what numba may start.

    A process that caps numba (``NUMBA_NUM_THREADS``, as the demo's workers do) would otherwise make
    aeon's ``numba.set_num_threads`` fail; the features do not depend on the thread count.
    """
    import numba
    from aeon.utils.validation import check_n_jobs

    return max(1, min(check_n_jobs(-1 if n_jobs == 0 else n_jobs), numba.config.NUMBA_NUM_THREADS))


def _rebuild_transform(directory: Path, spec: dict[str, Any], config: MiniRocketConfig):
    """The fitted aeon transform from ``minirocket.npz`` + the state recorded in ``encoder.json``."""
    from aeon.transformations.collection.convolution_based import MiniRocket, MultiRocket
    from aeon.utils.validation import check_n_jobs

    where = directory / "encoder.json"
    state = spec.get("state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        legacy = " (it holds a pickled minirocket.pkl, which is never loaded)" if (directory / LEGACY_STATE_FILE).exists() else ""
        raise MiniRocketStateError(
            f"{where} records no MiniRocket state ({STATE_FORMAT}){legacy}; rematerialize this run's pretrained_encoder"
        )
    path = directory / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no MiniRocket state at {path}; rematerialize this run's pretrained_encoder")
    try:
        n_channels, n_timepoints = int(state["n_channels"]), int(state["n_timepoints"])
        layout = {str(k): int(v) for k, v in state["layout"].items()}
        n_kernels_ = int(state["n_kernels_"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise MiniRocketStateError(f"{where}: invalid MiniRocket state ({err!r})") from err
    expected_channels = int(spec["input_channels"]) * (2 if config.include_mask else 1)
    if n_channels != expected_channels or n_timepoints < MIN_SERIES_LENGTH:
        raise MiniRocketStateError(
            f"{where}: state for {n_channels} channels x {n_timepoints} steps, expected {expected_channels} channels "
            f"and >= {MIN_SERIES_LENGTH} steps"
        )
    attributes = STATE_ATTRIBUTES[config.transform]
    if set(layout) != set(attributes):
        raise MiniRocketStateError(f"{where}: state holds {sorted(layout)}, a {config.transform} has {list(attributes)}")
    arrays = _read_state_arrays(path)
    names = {f"{a}.{i}" for a, n in layout.items() for i in range(n)}
    if set(arrays) != names:
        raise MiniRocketStateError(f"{path}: arrays {sorted(arrays)}, expected {sorted(names)}")
    cls = MiniRocket if config.transform == "minirocket" else MultiRocket
    transform = cls(
        n_kernels=config.n_kernels,
        max_dilations_per_kernel=config.max_dilations_per_kernel,
        n_jobs=transform_threads(config.n_jobs),
        random_state=config.seed,
    )
    for k, attribute in enumerate(attributes):
        parts = [arrays[f"{attribute}.{i}"] for i in range(layout[attribute])]
        expected = _expected_parts(config.transform, n_channels, n_timepoints, config, difference=k == 1)
        _check_parts(parts, f"{path} [{attribute}]", n_channels, expected)
        setattr(transform, attribute, tuple(parts))
    if config.transform == "minirocket":
        if n_kernels_ != max(config.n_kernels, 84):
            raise MiniRocketStateError(f"{where}: n_kernels_ {n_kernels_} disagrees with the config's {config.n_kernels}")
        transform.n_kernels_ = n_kernels_
    else:
        transform.random_state_ = config.seed
    transform._n_jobs = check_n_jobs(transform_threads(config.n_jobs))
    transform.metadata_ = {
        "multivariate": n_channels > 1,
        "missing_values": False,
        "unequal_length": False,
        "n_cases": 0,
        "n_channels": n_channels,
        "n_timepoints": n_timepoints,
    }
    transform.is_fitted = True
    return transform


def _flatten(items) -> list:
    out = []
    for item in items:
        if isinstance(item, (tuple, list)):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def load_minirocket(directory: str | Path) -> MiniRocketEncoder:
    """Load a :class:`MiniRocketEncoder` saved by :meth:`MiniRocketEncoder.save`; nothing is unpickled."""
    directory = Path(directory)
    spec_path = directory / "encoder.json"
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"encoder spec {spec_path} is unreadable ({err}); rematerialize the run") from err
    if not isinstance(spec, dict) or spec.get("kind") != ENCODER_KIND:
        raise ValueError(f"{spec_path} is not a MiniRocket encoder (kind={spec.get('kind') if isinstance(spec, dict) else None!r})")
    try:
        config = MiniRocketConfig.model_validate(spec["minirocket"])
        input_channels = int(spec["input_channels"])
        embed_dim = int(spec["embed_dim"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{spec_path}: invalid MiniRocket spec ({err})") from err
    enc = MiniRocketEncoder(config, input_channels, spec.get("meta"))
    enc.transform_ = _rebuild_transform(directory, spec, config)
    biases = sum(getattr(enc.transform_, a)[-1].shape[0] for a in STATE_ATTRIBUTES[config.transform])
    produced = biases * (1 if config.transform == "minirocket" else 4)  # MultiRocket: 4 pooling operators
    if produced != embed_dim:
        raise MiniRocketStateError(f"{spec_path}: embed_dim {embed_dim}, the state produces {produced} features")
    enc._embed_dim = embed_dim
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
