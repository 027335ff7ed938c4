"""Fitting the probe head (:func:`fit_probe_head`): one-vs-rest classifiers per pattern on standardized
frozen embeddings, returned as a :class:`~screener_ssl.probe.head.ProbeHead`.

The train embeddings are copied once to float64 and standardized in place (no second matrix of the
train set's size); the logistic heads are sklearn's lbfgs with C chosen on val per pattern, the MLP
heads are trained together with torch, seeded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from screener_ssl.probe.head import HEAD_KINDS, HeadKind, ProbeHead, _standardize_in_place

MLP_STEPS = 300
MLP_BATCH = 512
MLP_LR = 3e-3
MLP_WEIGHT_DECAY = 1e-4
LOGISTIC_MAX_ITER = 500
WIDE_HEAD_DIM = 2048  # wider embeddings fit the logistic head with the BLAS threads of the process


def _standardizer(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(emb)
    # StandardScaler already maps zero-variance columns to scale 1.
    return scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)


def _fit_logistic(
    z: np.ndarray,
    y: np.ndarray,
    fitted: list[int],
    C_grid: Sequence[float],
    seed: int,
    class_weight: str | None = None,
    z_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``coef [P, D]``, ``intercept [P]`` of lbfgs logistic regressions for the patterns in ``fitted``.

    With several values in ``C_grid`` each pattern keeps the C of highest val
    AUPRC (``z_val [m, D]``, ``y_val [m, P]``; ties go to the smaller C, the
    stronger penalty). The grid is walked from small to large C with warm starts.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from threadpoolctl import threadpool_limits

    n_patterns, dim = y.shape[1], z.shape[1]
    coef = np.zeros((n_patterns, dim), dtype=np.float64)
    intercept = np.zeros(n_patterns, dtype=np.float64)
    grid = sorted(float(c) for c in C_grid)
    n_iter, unconverged, chosen, val_by_C = {}, [], {}, {}
    for p in fitted:
        model = LogisticRegression(
            C=grid[0], solver="lbfgs", max_iter=LOGISTIC_MAX_ITER, random_state=seed,
            class_weight=class_weight, warm_start=len(grid) > 1,
        )
        best: tuple[float, float, np.ndarray, float, int, bool] | None = None
        scores: dict[str, float] = {}
        for C in grid:
            model.set_params(C=C)
            # One BLAS thread on a narrow [n, D]: thread hand-offs cost more than they save (5x measured);
            # a wide one (MiniRocket's ~10,000 features) keeps the process's BLAS threads, every core it was given.
            with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1 if dim <= WIDE_HEAD_DIM else None):
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(z, y[:, p])
            failed = any(issubclass(w.category, ConvergenceWarning) for w in caught)
            score = float("nan")
            if len(grid) > 1 and y_val[:, p].any():
                score = float(average_precision_score(y_val[:, p], z_val @ model.coef_[0] + model.intercept_[0]))
            scores[repr(C)] = score
            if best is None or (not math.isnan(score) and (math.isnan(best[0]) or score > best[0])):
                best = (score, C, model.coef_[0].copy(), float(model.intercept_[0]), int(model.n_iter_[0]), failed)
        _, C_best, coef[p], intercept[p], n_iter[p], failed = best
        chosen[p] = C_best
        val_by_C[p] = scores
        if failed:
            unconverged.append(p)
    return coef, intercept, {"n_iter": n_iter, "unconverged": unconverged, "C": chosen, "val_auprc_by_C": val_by_C}


def _fit_mlp(z: np.ndarray, y: np.ndarray, hidden: int, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """P independent one-hidden-layer MLPs trained together (batched weights), BCE per pattern."""
    import torch

    threads = torch.get_num_threads()
    # One thread: these [512, P, H] steps are too small to split; a busy second core makes them 10x slower.
    torch.set_num_threads(1)
    try:
        return _train_mlp(torch, z, y, hidden, seed)
    finally:
        torch.set_num_threads(threads)


def _train_mlp(torch, z: np.ndarray, y: np.ndarray, hidden: int, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """Seeded AdamW on minibatches of ``z [n, D]``, ``y [n, P]``; returns float64 weights and a loss summary."""
    gen = torch.Generator().manual_seed(seed)
    n, dim = z.shape
    n_patterns = y.shape[1]
    # He-style init for the ReLU layer; a small output layer so the initial logits sit at the bias.
    w1 = torch.randn((n_patterns, dim, hidden), generator=gen, dtype=torch.float32) * math.sqrt(2.0 / dim)
    b1 = torch.zeros((n_patterns, hidden))
    w2 = torch.randn((n_patterns, hidden), generator=gen, dtype=torch.float32) * math.sqrt(1.0 / hidden) * 0.1
    # Start each output at the train log-odds so the first steps do not spend themselves on the bias.
    prevalence = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
    b2 = torch.tensor(np.log(prevalence / (1 - prevalence)), dtype=torch.float32)
    params = [t.requires_grad_(True) for t in (w1, b1, w2, b2)]
    opt = torch.optim.AdamW(params, lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    zt = torch.from_numpy(z.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    batch = min(MLP_BATCH, n)
    losses = []
    for _ in range(MLP_STEPS):
        idx = torch.randint(0, n, (batch,), generator=gen)
        h = torch.relu(torch.einsum("nd,pdh->nph", zt[idx], w1) + b1)  # [B, P, H]
        logits = torch.einsum("nph,ph->np", h, w2) + b2  # [B, P]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    weights = {k: v.detach().numpy().astype(np.float64) for k, v in zip(("w1", "b1", "w2", "b2"), params, strict=True)}
    return weights, {"steps": MLP_STEPS, "batch": batch, "first_loss": losses[0], "final_loss": losses[-1]}


def fit_probe_head(
    emb_train: np.ndarray,
    y_train: np.ndarray,
    patterns: Sequence[str],
    kind: HeadKind = "logistic",
    C: float | Sequence[float] = 1.0,
    mlp_hidden: int = 64,
    seed: int = 0,
    class_weight: Literal["none", "balanced"] = "none",
    emb_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> ProbeHead:
    """Fit one binary head per pattern on standardized train embeddings.

    Args:
        emb_train: ``[n, D]`` embeddings at the decision bar of train windows.
        y_train: ``[n, P]`` uint8 labels, natural prevalence (not rebalanced:
            calibration is measured on test).
        patterns: the P pattern names.
        kind: "logistic" (sklearn lbfgs, L2 strength ``1/C``) or "mlp" (one
            hidden layer of ``mlp_hidden`` units, seeded, 300 AdamW steps of BCE).
        C: one inverse L2 strength, or a grid of them: then each pattern keeps
            the C with the highest AUPRC on ``emb_val [m, D]`` / ``y_val [m, P]``
            (required for a grid). The choice is in ``fit_info["C"]``.
        class_weight: "balanced" reweights each pattern's classes to equal total
            weight in the logistic loss (probabilities then overstate prevalence).

    A pattern whose train labels are all one class gets a constant head
    predicting its train prevalence; it is listed in ``head.constant`` and in
    ``head.fit_info["constant_patterns"]``. Thresholds start NaN (no alerts)
    until :meth:`ProbeHead.set_thresholds`.
    """
    # One float64 copy, standardized in place below: the same values as ``(emb - mean) / scale``
    # without a second matrix of the train set's size.
    emb = np.array(emb_train, dtype=np.float64)
    y = np.asarray(y_train)
    patterns = tuple(patterns)
    if emb.ndim != 2:
        raise ValueError(f"emb_train must be [n, D], found shape {emb.shape}")
    if y.shape != (emb.shape[0], len(patterns)):
        raise ValueError(
            f"y_train must be [n={emb.shape[0]}, P={len(patterns)}] for patterns {patterns}, found {y.shape}"
        )
    if emb.shape[0] == 0:
        raise ValueError("fit_probe_head: no train windows")
    if not np.isfinite(emb).all():
        raise ValueError(f"emb_train: {int((~np.isfinite(emb)).sum())} values are NaN or inf")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_train: labels must be 0 or 1")
    if kind not in HEAD_KINDS:
        raise ValueError(f"probe head kind must be one of {HEAD_KINDS}, found {kind!r}")
    C_grid = [float(C)] if np.isscalar(C) else [float(c) for c in C]
    if not C_grid or any(c <= 0 for c in C_grid):
        raise ValueError(f"C must be positive (a value or a non-empty grid), found {C}")
    if class_weight not in ("none", "balanced"):
        raise ValueError(f"class_weight must be 'none' or 'balanced', found {class_weight!r}")
    if len(C_grid) > 1 and kind == "logistic":
        if emb_val is None or y_val is None:
            raise ValueError(f"a C grid {C_grid} is chosen on val: pass emb_val and y_val")
        if np.shape(emb_val)[1:] != emb.shape[1:] or np.shape(y_val) != (np.shape(emb_val)[0], len(patterns)):
            raise ValueError(
                f"emb_val/y_val must be [m, {emb.shape[1]}] / [m, {len(patterns)}], "
                f"found {np.shape(emb_val)} / {np.shape(y_val)}"
            )
    if mlp_hidden < 1:
        raise ValueError(f"mlp_hidden must be >= 1, found {mlp_hidden}")
    y = y.astype(np.uint8)
    mean, scale = _standardizer(emb)
    z = _standardize_in_place(emb, mean, scale)
    n_pos = y.sum(axis=0)
    constant = {patterns[p]: float(n_pos[p] / y.shape[0]) for p in range(len(patterns)) if n_pos[p] in (0, y.shape[0])}
    fitted = [p for p in range(len(patterns)) if patterns[p] not in constant]
    fit_info: dict = {
        "n_train": int(emb.shape[0]),
        "n_pos": {patterns[p]: int(n_pos[p]) for p in range(len(patterns))},
        "constant_patterns": sorted(constant),
        "seed": int(seed),
    }
    if kind == "logistic":
        z_val = None if emb_val is None else _standardize_in_place(np.array(emb_val, dtype=np.float64), mean, scale)
        coef, intercept, info = _fit_logistic(
            z, y, fitted, C_grid, seed, None if class_weight == "none" else class_weight, z_val,
            None if y_val is None else np.asarray(y_val),
        )
        fit_info["C_grid"] = C_grid
        fit_info["C"] = {patterns[p]: c for p, c in info["C"].items()}
        fit_info["class_weight"] = class_weight
        if len(C_grid) > 1:
            fit_info["val_auprc_by_C"] = {patterns[p]: v for p, v in info["val_auprc_by_C"].items()}
        fit_info["n_iter"] = {patterns[p]: n for p, n in info["n_iter"].items()}
        fit_info["unconverged"] = [patterns[p] for p in info["unconverged"]]
        return ProbeHead(
            patterns=patterns, kind="logistic", mean=mean, scale=scale, coef=coef, intercept=intercept,
            constant=constant, fit_info=fit_info,
        )
    weights, info = _fit_mlp(z, y, mlp_hidden, seed)
    fit_info |= {"mlp_hidden": int(mlp_hidden)} | info
    return ProbeHead(
        patterns=patterns, kind="mlp", mean=mean, scale=scale, mlp=weights, constant=constant, fit_info=fit_info
    )
