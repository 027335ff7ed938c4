"""Health checks on a trained encoder: representation collapse and end-to-end no-lookahead."""

from __future__ import annotations

import numpy as np
import polars as pl

from screener_ssl.data.features import compute_shape_features
from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.encoder import Encoder

MIN_EFFECTIVE_RANK = 3.0
MAX_DEAD_DIM_SHARE = 0.5
DEAD_DIM_STD = 1e-4


def effective_rank(embeddings) -> float:
    """exp(entropy) of the normalized singular values of centered ``embeddings [N, D]`` (Roy & Vetterli 2007).

    1 for embeddings on a line, D for an isotropic cloud, 0 when every row is the same.
    Takes a numpy array or a torch tensor (detached, computed in float64).
    """
    if hasattr(embeddings, "detach"):
        assert embeddings.dim() == 2, f"effective_rank expects [B, D], got {tuple(embeddings.shape)}"
        embeddings = embeddings.detach().cpu().double().numpy()
    centered = embeddings - embeddings.mean(axis=0, keepdims=True)
    s = np.linalg.svd(centered.astype(np.float64), compute_uv=False)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def collapse_report(embeddings: np.ndarray, objective_facts: dict[str, dict] | None = None) -> dict:
    """Per-dimension std and effective rank of ``embeddings [N, D]``, with the thresholds used.

    ``objective_facts`` (from ``Objective.collapse_facts``, e.g. codebook usage) are kept in
    the report under ``objective_facts``; any of them flagged ``collapsed`` marks the run collapsed.
    """
    std = embeddings.std(axis=0)
    rank = effective_rank(embeddings)
    dead_share = float((std < DEAD_DIM_STD).mean())
    facts = dict(objective_facts or {})
    collapsed_facts = sorted(name for name, fact in facts.items() if fact.get("collapsed"))
    return {
        "n": int(embeddings.shape[0]),
        "dim": int(embeddings.shape[1]),
        "std_min": float(std.min()),
        "std_mean": float(std.mean()),
        "std_max": float(std.max()),
        "dead_dim_share": dead_share,
        "effective_rank": rank,
        "thresholds": {
            "min_effective_rank": MIN_EFFECTIVE_RANK,
            "max_dead_dim_share": MAX_DEAD_DIM_SHARE,
            "dead_dim_std": DEAD_DIM_STD,
        },
        "objective_facts": facts,
        "collapsed_facts": collapsed_facts,
        "collapsed": bool(rank < MIN_EFFECTIVE_RANK or dead_share > MAX_DEAD_DIM_SHARE or collapsed_facts),
    }


COLLAPSE_RULES = ("std_and_rank", "rank_only")


def judge_collapse(report: dict, rule: str = "std_and_rank") -> bool:
    """Whether a :func:`collapse_report` says collapsed, under an objective's ``collapse_rule``.

    ``std_and_rank``: too low an effective rank or too many dead dimensions. ``rank_only``: the
    effective rank alone (for embeddings with channels constant by design, e.g. censored raw fields).
    """
    if rule == "std_and_rank":
        return bool(report["collapsed"])
    if rule == "rank_only":
        return bool(
            report["effective_rank"] < report["thresholds"]["min_effective_rank"] or report.get("collapsed_facts")
        )
    raise ValueError(f"unknown collapse rule {rule!r}; known: {list(COLLAPSE_RULES)}")


def _perturb_after(bars: pl.DataFrame, decision_row: int, rng: np.random.Generator) -> pl.DataFrame:
    """One ticker's bars with every bar after ``decision_row`` redrawn and the decision bar's H/L/C/V changed."""
    cols = {c: bars.get_column(c).to_numpy().copy() for c in ("open", "high", "low", "close", "volume")}
    n = bars.height
    fut = slice(decision_row + 1, n)
    k = n - decision_row - 1
    cols["open"][fut] *= np.exp(rng.normal(0, 0.2, k))
    cols["close"][fut] *= np.exp(rng.normal(0, 0.2, k))
    cols["high"][fut] = np.maximum(cols["open"][fut], cols["close"][fut]) * 1.05
    cols["low"][fut] = np.minimum(cols["open"][fut], cols["close"][fut]) * 0.95
    cols["volume"][fut] *= np.exp(rng.normal(0, 1.0, k))
    d = decision_row
    cols["close"][d] *= float(np.exp(rng.normal(0, 0.2)))
    cols["high"][d] = max(cols["open"][d], cols["close"][d]) * 1.1
    cols["low"][d] = min(cols["open"][d], cols["close"][d]) * 0.9
    cols["volume"][d] *= 5.0
    return bars.with_columns(**{c: pl.Series(c, v) for c, v in cols.items()})


def no_lookahead_report(
    encoder: Encoder, bars: pl.DataFrame, spec: WindowSpec, n_windows: int = 32, seed: int = 0
) -> dict:
    """Perturb bars after each sampled decision bar and its non-open fields; embeddings must not move.

    ``bars``: validated bars (sorted by ticker, date). Goes the whole way: bars -> features -> window -> embedding.
    """
    rng = np.random.default_rng(seed)
    tickers = bars.get_column("ticker").unique(maintain_order=True).to_list()
    base_windows, pert_windows = [], []
    for _ in range(n_windows):
        ticker = tickers[int(rng.integers(len(tickers)))]
        sub = bars.filter(pl.col("ticker") == ticker)
        if sub.height < spec.min_history + 2:
            continue
        d = int(rng.integers(spec.min_history - 1, sub.height - 1))
        base = compute_shape_features(sub, volume_lookback=spec.volume_lookback)
        pert = compute_shape_features(_perturb_after(sub, d, rng), volume_lookback=spec.volume_lookback)
        if np.array_equal(np.nan_to_num(base.values[d + 1 :]), np.nan_to_num(pert.values[d + 1 :])):
            continue  # the perturbation must really change the future for the check to mean anything
        start = np.zeros(1, dtype=np.int64)
        row = np.array([d], dtype=np.int64)
        base_windows.append(spec.gather(base.values, start, row))
        pert_windows.append(spec.gather(pert.values, start, row))
    if not base_windows:
        return {"windows_checked": 0, "max_abs_embedding_change": float("nan"), "passed": False}
    # One batched forward per side: the check costs about one batch of inference.
    ea = encoder.encode_prepared(*(np.concatenate(parts) for parts in zip(*base_windows)))
    eb = encoder.encode_prepared(*(np.concatenate(parts) for parts in zip(*pert_windows)))
    max_diff = float(np.abs(ea - eb).max())
    return {"windows_checked": len(base_windows), "max_abs_embedding_change": max_diff, "passed": bool(max_diff == 0.0)}
