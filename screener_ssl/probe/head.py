"""The probe head: one-vs-rest classifiers per pattern on standardized frozen embeddings.

A :class:`ProbeHead` maps embeddings ``[n, D]`` to probabilities ``[n, P]``, one
independent binary head per pattern, plus the per-pattern alert thresholds chosen
on val (``NaN`` = no threshold reached the target precision: that pattern never
alerts). It is stored as one JSON file, ``probe_head.json``, so a market scan can
load it without torch and the file can be read by eye.

Prediction is plain numpy in float64, for both kinds; the MLP is trained with
torch but its weights are stored and applied as float64 arrays, so a save/load
round trip gives bit-identical probabilities.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.special import expit

from screener_ssl.store.artifacts import atomic_write_json

HEAD_FILE = "probe_head.json"
HEAD_FORMAT_VERSION = 1
HeadKind = Literal["logistic", "mlp"]
HEAD_KINDS: tuple[str, ...] = ("logistic", "mlp")
MLP_STEPS = 300
MLP_BATCH = 512
MLP_LR = 3e-3
MLP_WEIGHT_DECAY = 1e-4
LOGISTIC_MAX_ITER = 500
WIDE_HEAD_DIM = 2048  # wider embeddings fit the logistic head with the BLAS threads of the process
SCORE_BLOCK_ROWS = 4096  # rows standardized (float64) and scored at a time


class ProbeHead:
    """One-vs-rest heads per pattern on standardized embeddings, with the val thresholds.

    Attributes:
        patterns: the P pattern names, in the column order of every ``[n, P]`` array.
        kind: "logistic" (``sigmoid(z @ coef[p] + intercept[p])``) or "mlp"
            (``sigmoid(relu(z @ w1[p] + b1[p]) @ w2[p] + b2[p])``), ``z`` the
            standardized embedding.
        embed_dim: D, the embedding width the head was fitted on.
        mean, scale: ``[D]`` standardization (StandardScaler fitted on train).
        coef: ``[P, D]``, intercept: ``[P]`` (logistic only; None for mlp).
        mlp: dict(w1 [P, D, H], b1 [P, H], w2 [P, H], b2 [P]) (mlp only).
        constant: pattern -> probability predicted for every window, for a
            pattern whose train labels were all one class (no head could be fitted).
        thresholds: pattern -> alert threshold; NaN = no threshold reaches the
            target precision on val -> no alerts.
        target_precision: the precision the thresholds were chosen for.
        embedding: how the embeddings it was fitted on were made (pooling, normalization,
            encoder; :func:`screener_ssl.ssl.encoder.embedding_settings`), set by the probe;
            None for a head fitted outside it.
    """

    def __init__(
        self,
        *,
        patterns: Sequence[str],
        kind: HeadKind,
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray | None = None,
        intercept: np.ndarray | None = None,
        mlp: Mapping[str, np.ndarray] | None = None,
        constant: Mapping[str, float] | None = None,
        thresholds: Mapping[str, float] | None = None,
        target_precision: float = 0.8,
        fit_info: Mapping | None = None,
        source: str | None = None,
        embedding: Mapping | None = None,
    ) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        if kind not in HEAD_KINDS:
            raise ValueError(f"probe head kind must be one of {HEAD_KINDS}, found {kind!r}")
        self.kind = kind
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.embed_dim = int(self.mean.shape[0])
        n_patterns = len(self.patterns)
        where = source or "probe head"
        if self.mean.shape != (self.embed_dim,) or self.scale.shape != (self.embed_dim,):
            raise ValueError(f"{where}: mean/scale must both be [D], found {self.mean.shape} and {self.scale.shape}")
        if not (np.isfinite(self.scale).all() and (self.scale > 0).all()):
            raise ValueError(f"{where}: standardize scale must be finite and positive")
        self.coef = self.intercept = None
        self.mlp: dict[str, np.ndarray] | None = None
        if kind == "logistic":
            if coef is None or intercept is None:
                raise ValueError(f"{where}: a logistic head needs coef and intercept")
            self.coef = np.asarray(coef, dtype=np.float64).reshape(n_patterns, self.embed_dim)
            self.intercept = np.asarray(intercept, dtype=np.float64).reshape(n_patterns)
        else:
            if mlp is None:
                raise ValueError(f"{where}: an mlp head needs its weights (w1, b1, w2, b2)")
            self.mlp = _check_mlp(mlp, n_patterns, self.embed_dim, where)
        self.constant = {str(k): float(v) for k, v in (constant or {}).items()}
        unknown = set(self.constant) - set(self.patterns)
        if unknown:
            raise ValueError(f"{where}: constant heads for unknown patterns {sorted(unknown)}")
        self.thresholds: dict[str, float] = {p: float("nan") for p in self.patterns}
        for name, value in (thresholds or {}).items():
            if name not in self.thresholds:
                raise KeyError(f"{where}: threshold for unknown pattern {name!r}; patterns are {self.patterns}")
            self.thresholds[name] = float("nan") if value is None else float(value)
        self.target_precision = float(target_precision)
        self.fit_info = dict(fit_info or {})
        self.source = source
        # How the embeddings were made (pooling, normalization, encoder): the scan embeds the same way.
        self.embedding: dict | None = None if embedding is None else dict(embedding)

    # ------------------------------------------------------------------ prediction

    def _standardize(self, embeddings: np.ndarray) -> np.ndarray:
        emb = np.array(embeddings, dtype=np.float64)  # a copy: standardized in place below
        if emb.ndim != 2 or emb.shape[1] != self.embed_dim:
            where = f"probe head {self.source}" if self.source else "probe head"
            raise ValueError(
                f"{where} was fitted on embeddings of width D={self.embed_dim}, "
                f"found embeddings of shape {emb.shape}; was it fitted for another encoder?"
            )
        return _standardize_in_place(emb, self.mean, self.scale)

    def decision_function(self, embeddings: np.ndarray) -> np.ndarray:
        """Logits ``[n, P]`` float64 (constant heads give ``logit(constant)``, possibly +-inf).

        Rows are standardized and scored ``SCORE_BLOCK_ROWS`` at a time: a wide float32 matrix
        (MiniRocket's ~10,000 features for 60,000 test windows is 2.4 GB) is never copied whole to
        float64. Each row's logits do not depend on the block it is in.
        """
        n = np.shape(embeddings)[0]
        logits = np.empty((n, len(self.patterns)), dtype=np.float64)
        for start in range(0, max(n, 1), SCORE_BLOCK_ROWS):
            z = self._standardize(embeddings[start:start + SCORE_BLOCK_ROWS])  # [b, D]
            if self.kind == "logistic":
                # einsum, not a BLAS matmul: each row's sum runs in one fixed order whatever the batch, so
                # a window scores bit for bit the same in the probe and in the scan (ulp-level otherwise).
                logits[start:start + len(z)] = np.einsum("nd,pd->np", z, self.coef) + self.intercept  # [b, P]
            else:
                hidden = np.maximum(np.einsum("nd,pdh->nph", z, self.mlp["w1"]) + self.mlp["b1"], 0.0)  # [b, P, H]
                logits[start:start + len(z)] = np.einsum("nph,ph->np", hidden, self.mlp["w2"]) + self.mlp["b2"]
        for name, prob in self.constant.items():
            with np.errstate(divide="ignore"):
                logits[:, self.patterns.index(name)] = np.log(prob) - np.log1p(-prob)
        return logits

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings ``[n, D]`` -> probabilities ``[n, P]`` float64, column p = pattern p."""
        probs = expit(self.decision_function(embeddings))
        for name, prob in self.constant.items():
            probs[:, self.patterns.index(name)] = prob
        return probs

    def alerts(self, probs: np.ndarray) -> np.ndarray:
        """``[n, P]`` bool: ``probs >= threshold`` per pattern; a NaN threshold never alerts."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(self.patterns):
            raise ValueError(f"alerts: expected probabilities [n, {len(self.patterns)}], found {probs.shape}")
        thr = np.array([self.thresholds[p] for p in self.patterns], dtype=np.float64)  # [P]
        # Comparison with NaN is False: a pattern without a threshold raises no alert.
        return probs >= thr[None, :]

    def set_thresholds(self, thresholds: Mapping[str, float], target_precision: float) -> None:
        """Replace the alert thresholds (pattern -> value, NaN = no alerts) chosen on val."""
        missing = set(self.patterns) - set(thresholds)
        if missing:
            raise KeyError(f"set_thresholds: no threshold for patterns {sorted(missing)}")
        self.thresholds = {p: float(thresholds[p]) for p in self.patterns}
        self.target_precision = float(target_precision)

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict:
        """The ``probe_head.json`` document (NaN thresholds are written as null)."""
        doc = {
            "format_version": HEAD_FORMAT_VERSION,
            "patterns": list(self.patterns),
            "kind": self.kind,
            "embed_dim": self.embed_dim,
            "standardize": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
            "coef": None if self.coef is None else self.coef.tolist(),
            "intercept": None if self.intercept is None else self.intercept.tolist(),
            "constant": dict(self.constant),
            "thresholds": dict(self.thresholds),
            "target_precision": self.target_precision,
            "fit_info": self.fit_info,
            "embedding": self.embedding,
        }
        if self.mlp is not None:
            doc["mlp"] = {k: v.tolist() for k, v in self.mlp.items()}
        return doc

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/probe_head.json`` atomically; returns its path."""
        return atomic_write_json(Path(directory) / HEAD_FILE, self.to_json())

    @classmethod
    def load(cls, directory: str | Path) -> "ProbeHead":
        """Read ``<directory>/probe_head.json`` (or the file itself); errors name the file and key."""
        path = Path(directory)
        if path.is_dir() or not path.name.endswith(".json"):
            path = path / HEAD_FILE
        if not path.exists():
            raise FileNotFoundError(f"no probe head at {path}; run the probe (probe_metrics) first")
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable probe head JSON ({err})") from err
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(doc).__name__}")
        required = ("patterns", "kind", "embed_dim", "standardize", "thresholds", "target_precision")
        missing = [k for k in required if k not in doc]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        try:
            std = doc["standardize"]
            head = cls(
                patterns=doc["patterns"],
                kind=doc["kind"],
                mean=np.asarray(std["mean"], dtype=np.float64),
                scale=np.asarray(std["scale"], dtype=np.float64),
                coef=None if doc.get("coef") is None else np.asarray(doc["coef"], dtype=np.float64),
                intercept=None if doc.get("intercept") is None else np.asarray(doc["intercept"], dtype=np.float64),
                mlp=(
                    None
                    if doc.get("mlp") is None
                    else {k: np.asarray(v, dtype=np.float64) for k, v in doc["mlp"].items()}
                ),
                constant=doc.get("constant") or {},
                thresholds=doc["thresholds"],
                target_precision=doc["target_precision"],
                fit_info=doc.get("fit_info") or {},
                source=str(path),
                embedding=doc.get("embedding"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid probe head ({err})") from err
        if head.embed_dim != int(doc["embed_dim"]):
            raise ValueError(
                f"{path}: embed_dim {doc['embed_dim']} disagrees with the standardize mean of width {head.embed_dim}"
            )
        return head


def _check_mlp(mlp: Mapping[str, np.ndarray], n_patterns: int, embed_dim: int, where: str) -> dict[str, np.ndarray]:
    out = {k: np.asarray(mlp[k], dtype=np.float64) for k in ("w1", "b1", "w2", "b2") if k in mlp}
    missing = {"w1", "b1", "w2", "b2"} - set(out)
    if missing:
        raise ValueError(f"{where}: mlp weights lack {sorted(missing)}")
    hidden = out["w1"].shape[-1] if out["w1"].ndim == 3 else -1
    expected = {
        "w1": (n_patterns, embed_dim, hidden),
        "b1": (n_patterns, hidden),
        "w2": (n_patterns, hidden),
        "b2": (n_patterns,),
    }
    for key, shape in expected.items():
        if out[key].shape != shape:
            raise ValueError(f"{where}: mlp {key} must have shape {shape} (P, D, H), found {out[key].shape}")
    return out


# --------------------------------------------------------------------------- fitting


def _standardize_in_place(emb: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(emb - mean) / scale`` written over ``emb`` (float64), block by block: no temporary of its size."""
    for start in range(0, emb.shape[0], SCORE_BLOCK_ROWS):
        block = emb[start:start + SCORE_BLOCK_ROWS]
        block -= mean
        block /= scale
    return emb


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
