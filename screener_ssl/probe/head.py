"""The probe head: one-vs-rest classifiers per pattern on standardized frozen embeddings.

A :class:`ProbeHead` maps embeddings ``[n, D]`` to probabilities ``[n, P]``, one
independent binary head per pattern, plus the per-pattern alert thresholds chosen
on val (``NaN`` = no threshold reached the target precision: that pattern never
alerts). It is stored as one JSON file, ``probe_head.json``, so a market scan can
load it without torch and the file can be read by eye.

Prediction is plain numpy in float64, for both kinds, standardizing and scoring
``SCORE_BLOCK_ROWS`` rows at a time; the MLP is trained with torch
(:mod:`screener_ssl.probe.head_fit` fits both kinds) but its weights are stored and
applied as float64 arrays, so a save/load round trip gives bit-identical probabilities.
"""

from __future__ import annotations

import json
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


# --------------------------------------------------------------------------- standardization (the fit writes over its copy)


def _standardize_in_place(emb: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(emb - mean) / scale`` written over ``emb`` (float64), block by block: no temporary of its size."""
    for start in range(0, emb.shape[0], SCORE_BLOCK_ROWS):
        block = emb[start:start + SCORE_BLOCK_ROWS]
        block -= mean
        block /= scale
    return emb
