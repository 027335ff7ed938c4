"""ProbeHead: fitting, constant heads, alerts semantics, persistence and its error messages."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from screener_ssl.probe.head import HEAD_FILE, ProbeHead
from screener_ssl.probe.head_fit import fit_probe_head

PATTERNS = ("alpha", "beta", "never")


def toy_embeddings(n: int = 3000, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[n, D]`` embeddings with offset/scale; pattern alpha = linear in dims 0-1, beta = XOR-like, never = 0."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)) * np.linspace(0.5, 5.0, dim) + 3.0  # not standardized on purpose
    z0, z1 = (emb[:, 0] - 3.0) / 0.5, (emb[:, 1] - 3.0) / (0.5 + 4.5 / (dim - 1))
    y = np.zeros((n, len(PATTERNS)), dtype=np.uint8)
    y[:, 0] = z0 + 0.3 * rng.normal(size=n) > 1.5
    y[:, 1] = (z0 * z1 > 1.0) & (rng.random(n) < 0.9)
    return emb, y


@pytest.fixture(scope="module")
def toy() -> tuple[np.ndarray, np.ndarray]:
    return toy_embeddings()


@pytest.fixture(scope="module")
def heads(toy) -> dict[str, ProbeHead]:
    emb, y = toy
    return {kind: fit_probe_head(emb, y, PATTERNS, kind=kind, seed=0) for kind in ("logistic", "mlp")}


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_fitted_head_separates_an_informative_pattern(heads, kind) -> None:
    emb, y = toy_embeddings(seed=1)  # fresh windows from the same law
    probs = heads[kind].predict_proba(emb)
    assert probs.shape == (emb.shape[0], len(PATTERNS)) and probs.dtype == np.float64
    assert ((probs >= 0) & (probs <= 1)).all()
    assert average_precision_score(y[:, 0], probs[:, 0]) > 0.8
    if kind == "mlp":
        # The non-linear head learns what a linear one cannot.
        assert average_precision_score(y[:, 1], probs[:, 1]) > 2 * average_precision_score(
            y[:, 1], heads["logistic"].predict_proba(emb)[:, 1]
        )


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_pattern_without_train_positive_gets_a_constant_zero_head(heads, kind) -> None:
    head = heads[kind]
    assert head.constant == {"never": 0.0}
    assert head.fit_info["constant_patterns"] == ["never"]
    probs = head.predict_proba(toy_embeddings(n=50, seed=2)[0])
    assert (probs[:, 2] == 0.0).all()
    assert np.ptp(probs[:, 0]) > 0  # the other heads are not constant


def test_alerts_use_ge_and_a_nan_threshold_never_alerts() -> None:
    head = fit_probe_head(*toy_embeddings(n=500), PATTERNS)
    assert all(math.isnan(t) for t in head.thresholds.values())  # before val: no alerts
    probs = np.array([[0.5, 0.2, 1.0], [0.49, 0.9, 0.0], [1.0, 0.0, 0.7]])
    assert not head.alerts(probs).any()
    head.set_thresholds({"alpha": 0.5, "beta": 0.2, "never": float("nan")}, target_precision=0.7)
    expected = np.array([[True, True, False], [False, True, False], [True, False, False]])
    np.testing.assert_array_equal(head.alerts(probs), expected)
    assert head.target_precision == 0.7
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        head.alerts(probs[:, :2])
    with pytest.raises(KeyError, match="never"):
        head.set_thresholds({"alpha": 0.5, "beta": 0.2}, 0.8)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_save_load_round_trip_gives_identical_probabilities(heads, kind, tmp_path) -> None:
    head = heads[kind]
    head.set_thresholds({"alpha": 0.31, "beta": float("nan"), "never": 0.5}, 0.8)
    head.save(tmp_path)
    doc = json.loads((tmp_path / HEAD_FILE).read_text())
    assert doc["kind"] == kind and doc["patterns"] == list(PATTERNS) and doc["embed_dim"] == 8
    assert len(doc["standardize"]["mean"]) == 8 and doc["thresholds"]["beta"] is None
    if kind == "logistic":
        assert np.array(doc["coef"]).shape == (3, 8) and len(doc["intercept"]) == 3
    else:
        assert np.array(doc["mlp"]["w1"]).shape == (3, 8, 64)
    loaded = ProbeHead.load(tmp_path)
    emb = toy_embeddings(n=400, seed=3)[0]
    np.testing.assert_array_equal(loaded.predict_proba(emb), head.predict_proba(emb))
    assert loaded.thresholds["alpha"] == 0.31 and math.isnan(loaded.thresholds["beta"])
    assert loaded.constant == head.constant and loaded.kind == kind
    assert not list(tmp_path.glob(".*"))  # the atomic writer left no temp file


def test_fit_is_deterministic_given_the_seed(toy) -> None:
    emb, y = toy
    a = fit_probe_head(emb[:800], y[:800], PATTERNS, kind="mlp", seed=5)
    b = fit_probe_head(emb[:800], y[:800], PATTERNS, kind="mlp", seed=5)
    c = fit_probe_head(emb[:800], y[:800], PATTERNS, kind="mlp", seed=6)
    np.testing.assert_array_equal(a.predict_proba(emb), b.predict_proba(emb))
    assert not np.array_equal(a.predict_proba(emb), c.predict_proba(emb))


def test_embed_dim_mismatch_names_the_file(heads, tmp_path) -> None:
    heads["logistic"].save(tmp_path)
    loaded = ProbeHead.load(tmp_path)
    with pytest.raises(ValueError, match=rf"{HEAD_FILE}.*D=8.*\(5, 16\)"):
        loaded.predict_proba(np.zeros((5, 16)))


def test_missing_or_corrupt_file_is_a_clear_error(heads, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=HEAD_FILE):
        ProbeHead.load(tmp_path)
    (tmp_path / HEAD_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=rf"{HEAD_FILE}.*not a readable"):
        ProbeHead.load(tmp_path)
    heads["logistic"].save(tmp_path)
    doc = json.loads((tmp_path / HEAD_FILE).read_text())
    del doc["standardize"]
    (tmp_path / HEAD_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"missing keys \['standardize'\]"):
        ProbeHead.load(tmp_path)
    heads["logistic"].save(tmp_path)
    doc = json.loads((tmp_path / HEAD_FILE).read_text())
    doc["coef"] = doc["coef"][:2]
    (tmp_path / HEAD_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"{HEAD_FILE}: invalid probe head"):
        ProbeHead.load(tmp_path)


def test_bad_inputs_are_rejected_with_the_shape() -> None:
    emb, y = toy_embeddings(n=100)
    with pytest.raises(ValueError, match=r"y_train must be \[n=100, P=2\]"):
        fit_probe_head(emb, y, PATTERNS[:2])
    emb_nan = emb.copy()
    emb_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_probe_head(emb_nan, y, PATTERNS)
    with pytest.raises(ValueError, match="kind"):
        fit_probe_head(emb, y, PATTERNS, kind="forest")
