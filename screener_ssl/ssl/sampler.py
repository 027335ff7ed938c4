"""Batches of windows for pretraining, gathered on the fly from the window index.

Index-level randomness (which windows, t*, crop lengths) uses a numpy Generator;
value-level augmentation uses a torch Generator. Both are seeded and their state
is part of a checkpoint, so a resumed run continues the same stream.

A predictive objective asks for ``future_bars`` > 0: each batch then also carries the
bars t*+1 .. t*+H (targets only, never part of a view) in ``extras``, and only windows
whose future stays inside the candidate set's own span of their ticker are drawn, so
when the candidates are the train split the future bars are train bars too.

The feature array lives on the sampler's device (the CPU, or wherever :meth:`WindowSampler.to`
put it: copied there once). The host draws every index from the numpy stream; the gather, the
decision-time censoring, the visible-bar z-score and the augmentations run on the device as
batched tensor ops (:class:`GatheredRows`, :func:`zscore_observed_tensor`), with the
augmentation generator on the device too: on a GPU a batch is equal in distribution to the
CPU's for the same seed (same windows, crops and censoring; other noise draws).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from screener_ssl.data.windows import ZSCORE_CLIP, ZSCORE_EPS, WindowSpec
from screener_ssl.ssl.augment import AugmentConfig, augment_view, sample_crop_lengths, sample_decision_offsets
from screener_ssl.ssl.batch import SSLBatch, View


def zscore_observed_tensor(x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """:func:`~screener_ssl.data.windows.zscore_observed` on tensors (any device): per-window,
    per-channel z-score of ``x [B, T, C]`` (zero where not observed) from the observed cells only."""
    count = observed.sum(dim=1, keepdim=True).to(torch.float32).clamp_min(1.0)
    mean = x.sum(dim=1, keepdim=True) / count
    centered = torch.where(observed, x - mean, torch.zeros((), dtype=x.dtype, device=x.device))
    var = (centered * centered).sum(dim=1, keepdim=True) / count
    return (centered / (torch.sqrt(var) + ZSCORE_EPS)).clamp(-ZSCORE_CLIP, ZSCORE_CLIP)


@dataclass(frozen=True)
class GatheredRows:
    """The feature rows of B windows ending at their t*, gathered once; views are masks over them.

    ``view(lengths, decision_known)`` equals ``gather_windows(values, start, decision_row, W,
    lengths=lengths, open_known=...)`` (to the float rounding of the z-score's sums): a crop only
    hides the oldest bars and the censoring only hides cells of the last bar, so neither needs
    another gather. All tensors live on the device of the gathered feature array.
    """

    x: torch.Tensor  # float32 [B, W, C], raw feature values (NaN kept; padding rows repeat t*)
    present: torch.Tensor  # bool [B, W, C]: inside the ticker's history and finite
    back: torch.Tensor  # int64 [W]: bars before t* at each position (W-1 .. 0)

    def view(
        self, lengths: torch.Tensor, decision_known: torch.Tensor, normalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """lengths int64 [B] bars kept up to t*; decision_known bool [B, C] cells kept on bar t*."""
        observed = self.present & (self.back[None, :] < lengths[:, None])[:, :, None]
        observed[:, -1, :] &= decision_known
        x = torch.where(observed, self.x, torch.zeros((), dtype=self.x.dtype, device=self.x.device))
        return (zscore_observed_tensor(x, observed) if normalize else x), observed


def gather_window_rows(
    values: torch.Tensor, ticker_start: torch.Tensor, decision_row: torch.Tensor, window: int
) -> GatheredRows:
    """values float32 [N, C]; ticker_start, decision_row int64 [B] on its device -> the rows of each window, once."""
    batch, n_channels = decision_row.shape[0], values.shape[1]
    back = torch.arange(window - 1, -1, -1, dtype=torch.int64, device=values.device)
    rows = decision_row[:, None] - back[None, :]  # [B, W]
    in_ticker = rows >= ticker_start[:, None]
    rows = torch.where(in_ticker, rows, decision_row[:, None])
    x = values.index_select(0, rows.reshape(-1)).reshape(batch, window, n_channels)
    return GatheredRows(x=x, present=in_ticker[:, :, None] & torch.isfinite(x), back=back)


class WindowSampler:
    """Draws SSL batches from windows ``(ticker_start, decision_row)`` of a feature array."""

    def __init__(
        self,
        values: np.ndarray,
        ticker_start: np.ndarray,
        decision_row: np.ndarray,
        spec: WindowSpec,
        augment: AugmentConfig,
        n_views: int,
        batch_size: int,
        seed: int,
        neighbors_per_anchor: int = 0,
        neighbor_radius: int = 0,
        normalize: bool = True,
        future_bars: int = 0,
    ) -> None:
        """values: float32 [N, C]; ticker_start, decision_row: int64 [M] for the candidate windows.

        ``future_bars`` > 0: hand over the H bars after t* as ``extras`` and keep only candidates
        whose decision row + H does not pass the last candidate row of their ticker.
        """
        if len(decision_row) == 0:
            raise ValueError("no windows to sample from (the training split is empty)")
        assert ticker_start.shape == decision_row.shape
        if future_bars < 0:
            raise ValueError(f"future_bars must be >= 0, got {future_bars}")
        if future_bars > spec.embargo:
            # Defence in depth beside the candidate filter below: no future can jump a whole embargo.
            raise ValueError(
                f"a prediction horizon of {future_bars} bars exceeds the embargo of {spec.embargo} bars "
                f"between splits; the embargo must cover the horizon (widen it or shorten the horizon)"
            )
        self.values = values
        self.ticker_start = np.asarray(ticker_start, dtype=np.int64)
        self.decision_row = np.asarray(decision_row, dtype=np.int64)
        self.future_bars = int(future_bars)
        if self.future_bars > 0:
            keep = future_inside_candidates(self.ticker_start, self.decision_row, self.future_bars)
            if not keep.any():
                raise ValueError(
                    f"no candidate window has {self.future_bars} future bars inside its split "
                    f"({len(decision_row)} candidates); shorten the prediction horizon"
                )
            self.ticker_start, self.decision_row = self.ticker_start[keep], self.decision_row[keep]
        self.spec = spec
        self.augment = augment
        self.n_views = n_views
        self.batch_size = batch_size
        self.neighbors_per_anchor = neighbors_per_anchor
        self.neighbor_radius = neighbor_radius
        self.open_known = spec.open_known_mask
        self.normalize = normalize  # False when values are already causally normalized
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.to("cpu")

    def to(self, device: torch.device | str) -> "WindowSampler":
        """Sample on ``device`` from now on: the feature array goes there once, batches are born there.

        On the CPU the array is shared, not copied. The augmentation generator is created on the
        device from the seed (move the sampler before its first batch; a checkpoint restores the
        generator's state as usual, on the device it was written on).
        """
        device = torch.device(device)
        self.device = device
        with warnings.catch_warnings():
            # A read-only (memory-mapped) store: the sampler only ever reads it.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self._values = torch.from_numpy(np.ascontiguousarray(self.values, dtype=np.float32)).to(device)
        self._open_known = torch.from_numpy(np.asarray(self.open_known, dtype=bool)).to(device)
        self.gen = torch.Generator(device=device).manual_seed(self.seed)
        return self

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])

    def _choose(self) -> np.ndarray:
        m = len(self.decision_row)
        if self.neighbors_per_anchor <= 0:
            return self.rng.integers(0, m, size=self.batch_size)
        group = self.neighbors_per_anchor + 1
        n_anchor = max(self.batch_size // group, 1)
        anchors = self.rng.integers(0, m, size=n_anchor)
        shifts = self.rng.integers(-self.neighbor_radius, self.neighbor_radius + 1, size=(n_anchor, group - 1))
        # Neighbours are nearby entries of the (ticker, row)-sorted index: usually the same ticker.
        neighbors = np.clip(anchors[:, None] + shifts, 0, m - 1)
        picks = np.concatenate([anchors[:, None], neighbors], axis=1).reshape(-1)
        return picks[: self.batch_size] if len(picks) >= self.batch_size else np.resize(picks, self.batch_size)

    def _draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """The host's part of a batch, from the numpy stream: (ticker start, t*, keep t* whole, crop lengths per view)."""
        picks = self._choose()
        window = self.spec.window_max
        start = self.ticker_start[picks]
        drop = sample_decision_offsets(self.rng, len(picks), window, self.augment)
        decision_row = np.maximum(self.decision_row[picks] - drop, start)  # t*: bars after it removed
        keep_whole = self.rng.random(len(picks)) >= self.augment.censor_last_prob
        crops = [
            sample_crop_lengths(self.rng, len(picks), window, self.spec.crop_lengths, self.augment)
            for _ in range(max(self.n_views, 1))
        ]
        return start, decision_row, keep_whole, crops

    def sample(self) -> SSLBatch:
        """One batch: indices drawn on the host, windows built on ``self.device`` (one host -> device copy)."""
        start, decision_row, keep_whole, crops = self._draw()
        device, window = self.device, self.spec.window_max
        drawn = np.stack([start, decision_row, keep_whole.astype(np.int64), *crops]).astype(np.int64)
        drawn_t = torch.from_numpy(drawn)
        if device.type == "cuda":
            drawn_t = drawn_t.pin_memory()
        drawn_t = drawn_t.to(device, non_blocking=True)
        start_t, row_t, keep_t, crops_t = drawn_t[0], drawn_t[1], drawn_t[2].bool(), drawn_t[3:]
        # Each window's rows are gathered once; every view is a crop + censoring mask over them.
        rows = gather_window_rows(self._values, start_t, row_t, window)
        decision_known = keep_t[:, None] | self._open_known[None, :]  # [B, C]
        extras: dict[str, torch.Tensor] = {}
        if self.future_bars > 0:
            raw_x, clean_obs = rows.view(crops_t[0], decision_known, False)
            future = gather_window_rows(self._values, start_t, row_t + self.future_bars, self.future_bars)
            future_x, future_obs = future.view(
                torch.full_like(row_t, self.future_bars), torch.ones_like(decision_known), False
            )
            if self.normalize:
                future_x = _future_zscore_tensor(raw_x, clean_obs, future_x, future_obs)
                clean_x = zscore_observed_tensor(raw_x, clean_obs)
            else:
                clean_x = raw_x
            extras = {"future_x": future_x, "future_observed": future_obs}
        else:
            clean_x, clean_obs = rows.view(crops_t[0], decision_known, self.normalize)
        views = []
        for v in range(self.n_views):
            if v == 0:
                x, obs = clean_x, clean_obs
            else:
                x, obs = rows.view(crops_t[v], decision_known, self.normalize)
            views.append(View(*augment_view(x, obs, self.augment, self.gen)))
        return SSLBatch(
            views=views,
            clean=View(clean_x, clean_obs),
            ticker_id=start_t,  # a ticker's first feature row identifies it uniquely within the store
            decision_row=row_t,
            extras=extras,
        )


def _future_zscore_tensor(raw_x, obs, future_x, future_obs) -> torch.Tensor:
    """The H bars after t* ``[B, H, C]`` z-scored with the clean window's own statistics (its observed
    cells up to t*), so a target keeps its level relative to the context; no statistic reads the future."""
    count = obs.sum(dim=1, keepdim=True).to(torch.float32).clamp_min(1.0)
    mean = raw_x.sum(dim=1, keepdim=True) / count
    zero = torch.zeros((), dtype=raw_x.dtype, device=raw_x.device)
    centered = torch.where(obs, raw_x - mean, zero)
    std = torch.sqrt((centered * centered).sum(dim=1, keepdim=True) / count)
    future_z = ((future_x - mean) / (std + ZSCORE_EPS)).clamp(-ZSCORE_CLIP, ZSCORE_CLIP)
    return torch.where(future_obs, future_z, zero)


def future_inside_candidates(ticker_start: np.ndarray, decision_row: np.ndarray, horizon: int) -> np.ndarray:
    """bool [M]: candidates whose ``decision_row + horizon`` does not pass their ticker's last candidate row.

    Rows of a ticker are consecutive bars and a split is a contiguous date range, so a future
    that ends at or before a candidate of the same split stays inside that split.
    """
    tickers, inverse = np.unique(ticker_start, return_inverse=True)
    last = np.full(len(tickers), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, inverse, decision_row)
    return decision_row + horizon <= last[inverse]
