"""Screener metrics on synthetic scores with known answers, and the probe plots."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss

from screener_ssl.probe import bootstrap as bt
from screener_ssl.probe import metrics as m
from screener_ssl.probe import report as rp
from screener_ssl.probe import plots


def _labels(n: int, prevalence: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < prevalence).astype(np.int8)


# --------------------------------------------------------------------------- AUPRC


def test_perfect_random_and_inverted_scores_bracket_auprc():
    y = _labels(4000, 0.1, seed=1)
    rng = np.random.default_rng(2)
    perfect = bt.auprc_with_ci(y, y + 0.01 * rng.random(y.size), n_boot=50)
    random = bt.auprc_with_ci(y, rng.random(y.size), n_boot=50)
    inverted = bt.auprc_with_ci(y, -(y + 0.01 * rng.random(y.size)), n_boot=50)
    prevalence = y.mean()
    assert perfect["auprc"] == pytest.approx(1.0)
    assert random["prevalence"] == pytest.approx(prevalence)
    assert abs(random["auprc"] - prevalence) < 0.03
    # Inverted: every negative ranks above every positive.
    assert inverted["auprc"] < prevalence
    assert perfect["n_pos"] == int(y.sum())


def test_auprc_agrees_with_sklearn_and_ci_brackets_it():
    y = _labels(1500, 0.2, seed=3)
    rng = np.random.default_rng(4)
    score = y * 0.8 + rng.normal(size=y.size)
    out = bt.auprc_with_ci(y, score, n_boot=100, seed=0)
    assert out["auprc"] == pytest.approx(average_precision_score(y, score), abs=1e-12)
    assert out["ci_low"] < out["auprc"] < out["ci_high"]
    assert out["n_boot_used"] == 100
    json.dumps(out)  # plain Python types only


def test_bootstrap_resample_ap_equals_sklearn_on_the_resample():
    # Rounded scores make many ties: the weighted fast path must collapse them as sklearn does.
    y = _labels(700, 0.1, seed=30)
    score = np.round(y + np.random.default_rng(31).normal(size=700), 1)
    sorted_scores = bt._SortedScores(y, score)
    rng = np.random.default_rng(32)
    for _ in range(20):
        idx = rng.integers(0, 700, size=700)
        fast = sorted_scores.average_precision(np.bincount(idx, minlength=700))
        assert fast == pytest.approx(average_precision_score(y[idx], score[idx]), abs=1e-12)
    assert math.isnan(sorted_scores.average_precision(np.where(y == 1, 0, 1)))


def test_bootstrap_ci_narrows_with_more_data():
    widths = []
    for n in (400, 6400):
        y = _labels(n, 0.15, seed=5)
        score = y * 1.0 + np.random.default_rng(6).normal(size=n)
        out = bt.auprc_with_ci(y, score, n_boot=100, seed=1)
        widths.append(out["ci_high"] - out["ci_low"])
    assert widths[1] < 0.5 * widths[0]


def test_bootstrap_is_seeded():
    y = _labels(500, 0.2, seed=7)
    score = np.random.default_rng(8).random(500) + y
    a = bt.auprc_with_ci(y, score, n_boot=40, seed=3)
    b = bt.auprc_with_ci(y, score, n_boot=40, seed=3)
    c = bt.auprc_with_ci(y, score, n_boot=40, seed=4)
    assert a == b
    assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])


def test_no_positives_gives_nan_not_exception_and_resamples_without_positives_are_skipped():
    out = bt.auprc_with_ci(np.zeros(50, int), np.arange(50.0), n_boot=10)
    assert math.isnan(out["auprc"]) and out["defined"] is False
    assert out["reason"] == "no positive labels"
    # One positive in 30 rows: about (29/30)^30 = 36% of resamples have none.
    y = np.zeros(30, int)
    y[5] = 1
    sparse = bt.auprc_with_ci(y, np.arange(30.0), n_boot=100, seed=0)
    assert 0 < sparse["n_boot_used"] < 100


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        bt.auprc_with_ci(np.array([0, 2, 1]), np.zeros(3))
    with pytest.raises(ValueError, match="score: expected 3 scores"):
        bt.auprc_with_ci(np.array([0, 1, 1]), np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \[N\], found shape \(2, 2\)"):
        bt.auprc_with_ci(np.zeros((2, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        bt.auprc_with_ci(np.array([0, 1]), np.array([0.1, np.nan]))


def test_macro_ci_uses_joint_resamples_and_skips_patterns_without_positives():
    rng = np.random.default_rng(9)
    y = np.stack([_labels(800, 0.2, 10), _labels(800, 0.1, 11), np.zeros(800, int)], axis=1)
    score = y + rng.normal(size=y.shape)
    out = bt.macro_auprc_with_ci(y, score, n_boot=60, seed=0)
    expected = np.mean([average_precision_score(y[:, p], score[:, p]) for p in (0, 1)])
    assert out["auprc"] == pytest.approx(expected)
    assert out["n_patterns_used"] == 2
    assert out["ci_low"] < out["auprc"] < out["ci_high"]
    # Joint resampling of two identical columns: the macro CI equals the single CI.
    twin = np.stack([y[:, 0], y[:, 0]], axis=1)
    twin_score = np.stack([score[:, 0], score[:, 0]], axis=1)
    single = bt.auprc_with_ci(y[:, 0], score[:, 0], n_boot=60, seed=0)
    joint = bt.macro_auprc_with_ci(twin, twin_score, n_boot=60, seed=0)
    assert joint["ci_low"] == pytest.approx(single["ci_low"])
    assert joint["ci_high"] == pytest.approx(single["ci_high"])


# --------------------------------------------------------------------------- threshold and alerts


def test_threshold_at_precision_reaches_target_on_val_and_is_lowest():
    y = _labels(3000, 0.2, seed=12)
    score = y * 1.5 + np.random.default_rng(13).normal(size=y.size)
    out = m.threshold_at_precision(y, score, 0.8)
    assert out["achievable"] is True
    alert = score >= out["threshold"]
    precision = y[alert].mean()
    assert precision >= 0.8
    assert precision == pytest.approx(out["achieved_precision"])
    assert out["recall"] == pytest.approx(y[alert].sum() / y.sum())
    # Every lower candidate threshold misses the target.
    lower = np.unique(score[score < out["threshold"]])
    assert all(y[score >= t].mean() < 0.8 for t in lower[-50:])


def test_threshold_falls_back_to_max_precision_when_target_unreachable():
    y = np.array([1, 0, 1, 1, 0, 0])
    score = np.array([0.9, 0.95, 0.8, 0.7, 0.6, 0.1])  # precision 0, 1/2, 2/3, 3/4, 3/5, 1/2
    out = m.threshold_at_precision(y, score, 0.9)
    assert out["achievable"] is False
    assert out["threshold"] == 0.7
    assert out["achieved_precision"] == pytest.approx(3 / 4)
    assert math.isnan(m.threshold_at_precision(np.zeros(4, int), np.arange(4.0))["threshold"])


def test_perfect_scores_recall_one_at_threshold():
    y = _labels(1000, 0.1, seed=14)
    score = y.astype(float)
    thr = m.threshold_at_precision(y, score, 0.8)
    alerts = m.alerts_at_threshold(y, score, thr["threshold"], n_ticker_days=1000)
    assert alerts["recall"] == 1.0 and alerts["precision"] == 1.0
    assert alerts["alerts"] == int(y.sum())
    assert alerts["alerts_per_day_per_ticker"] == pytest.approx(y.sum() / 1000)


def test_alerts_at_threshold_counts():
    y = np.array([1, 1, 0, 0, 1, 0])
    score = np.array([0.9, 0.2, 0.8, 0.1, 0.7, 0.3])
    out = m.alerts_at_threshold(y, score, 0.5, n_ticker_days=3)
    assert out == {
        "alerts": 3,
        "alerts_per_day_per_ticker": 1.0,
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "true_alerts": 2,
        "n_pos": 3,
    }
    none = m.alerts_at_threshold(y, score, 2.0, n_ticker_days=3)
    assert none["alerts"] == 0 and math.isnan(none["precision"]) and none["recall"] == 0.0
    with pytest.raises(ValueError, match="n_ticker_days"):
        m.alerts_at_threshold(y, score, 0.5, n_ticker_days=0)


# --------------------------------------------------------------------------- earliest detection


def test_prefix_decision_rows_values():
    start = np.array([10, 100, 0])
    end = np.array([19, 129, 0])  # lengths 10, 30, 1
    got = m.prefix_decision_rows(start, end)
    expected = np.array(
        [
            [12, 14, 16, 18, 20],  # 10 + round(f * 10)
            [106, 112, 118, 124, 130],  # 100 + round(f * 30)
            [0, 0, 1, 1, 1],  # 0 + round(f * 1), halves round up
        ]
    )
    np.testing.assert_array_equal(got, expected)
    assert (got[:, -1] == end + 1).all()
    assert (got <= (end + 1)[:, None]).all()
    assert (np.diff(got, axis=1) >= 0).all()


def test_prefix_decision_rows_rejects_bad_events():
    with pytest.raises(ValueError, match="event 1: end_idx 3 < start_idx 5"):
        m.prefix_decision_rows(np.array([0, 5]), np.array([4, 3]))
    with pytest.raises(ValueError, match="fracs"):
        m.prefix_decision_rows(np.array([0]), np.array([4]), fracs=(0.0, 1.0))


def test_earliest_detection_curve_recall():
    event_scores = {
        1.0: np.array([0.9, 0.8, 0.7, 0.6]),
        0.2: np.array([0.1, 0.6, 0.2, 0.3]),
        0.6: np.array([0.5, 0.7, 0.4, 0.55]),
    }
    curve = m.earliest_detection_curve(event_scores, threshold=0.5)
    assert list(curve) == [0.2, 0.6, 1.0]
    assert curve == {0.2: 0.25, 0.6: 0.75, 1.0: 1.0}
    assert math.isnan(m.earliest_detection_curve({0.2: np.array([])}, 0.5)[0.2])


# --------------------------------------------------------------------------- stability, calibration


def test_stability_spread():
    scores = np.array([[0.5, 0.5, 0.5], [0.0, 1.0, 0.5], [0.2, 0.4, 0.3]])
    out = m.stability(scores)
    stds = scores.std(axis=1)
    assert out["mean_std"] == pytest.approx(stds.mean())
    assert out["median_std"] == pytest.approx(np.median(stds))
    assert out["p90_std"] == pytest.approx(np.quantile(stds, 0.9))
    assert out["n_windows"] == 3 and out["n_aug"] == 3
    with pytest.raises(ValueError, match=r"\[N, K\] with K >= 2"):
        m.stability(np.zeros((4, 1)))


def test_ece_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(15)
    prob = rng.random(20000)
    y = (rng.random(prob.size) < prob).astype(int)
    good = m.calibration(y, prob)
    overconfident = m.calibration(y, np.clip((prob - 0.5) * 3 + 0.5, 0, 1) ** 2)
    assert good["ece"] < 0.02
    assert overconfident["ece"] > 0.1
    assert good["brier"] == pytest.approx(brier_score_loss(y, prob))
    assert sum(b["count"] for b in good["bins"]) == y.size
    assert len(good["bins"]) == 15
    assert all(b["lo"] <= b["mean_pred"] <= b["hi"] for b in good["bins"])
    json.dumps(good)


def test_calibration_known_bins_and_range_check():
    y = np.array([0, 1, 1, 1])
    prob = np.array([0.1, 0.1, 0.9, 0.9])
    out = m.calibration(y, prob, n_bins=2)
    assert [b["count"] for b in out["bins"]] == [2, 2]
    # Bin 1: predicted 0.1, observed 0.5; bin 2: predicted 0.9, observed 1.0.
    assert out["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    with pytest.raises(ValueError, match=r"prob: probabilities must lie in \[0, 1\]"):
        m.calibration(y, prob + 0.5)


# --------------------------------------------------------------------------- reports


def test_screener_report_assembles_per_pattern_and_macro():
    patterns = ["double_top", "bull_flag", "cup_and_handle"]
    rng = np.random.default_rng(16)
    y_val = np.stack([_labels(600, 0.2, 20), _labels(600, 0.2, 21), _labels(600, 0.2, 22)], axis=1)
    y_test = np.stack([_labels(600, 0.2, 23), _labels(600, 0.2, 24), np.zeros(600, int)], axis=1)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    score_val = sig(2 * y_val + rng.normal(size=y_val.shape) - 1)
    score_test = sig(2 * y_test + rng.normal(size=y_test.shape) - 1)
    event_scores = {"double_top": {0.2: rng.random(10), 1.0: rng.random(10) + 0.5}}
    scores_aug = {"bull_flag": rng.random((20, 4))}
    report = rp.screener_report(
        patterns=patterns,
        y_val=y_val,
        score_val=score_val,
        y_test=y_test,
        score_test=score_test,
        n_ticker_days=600,
        event_scores=event_scores,
        scores_aug=scores_aug,
        n_boot=30,
    )
    per = report["per_pattern"]
    assert set(per) == set(patterns)
    assert per["cup_and_handle"]["auprc"]["defined"] is False
    assert per["double_top"]["calibration"] is not None  # scores in [0, 1] double as probs
    assert per["bull_flag"]["earliest_detection"] is None
    mac = report["macro"]
    assert mac["patterns"] == ["double_top", "bull_flag"]
    assert mac["auprc"] == pytest.approx(
        np.mean([per[p]["auprc"]["auprc"] for p in ("double_top", "bull_flag")])
    )
    assert mac["ci_low"] < mac["auprc"] < mac["ci_high"]
    assert mac["earliest_detection"] == per["double_top"]["earliest_detection"]
    assert mac["stability_mean_std"] == per["bull_flag"]["stability"]["mean_std"]
    json.dumps(report)
    with pytest.raises(ValueError, match=r"y_test: expected \[N, 3\]"):
        rp.screener_report(
            patterns=patterns,
            y_val=y_val,
            score_val=score_val,
            y_test=y_test[:, :2],
            score_test=score_test,
            n_ticker_days=600,
        )


# --------------------------------------------------------------------------- plots


def _is_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_plots_return_png_bytes_and_write_files(tmp_path):
    rng = np.random.default_rng(17)
    y = _labels(300, 0.2, 25)
    score = y + rng.normal(size=300)
    cal = m.calibration(y, 1 / (1 + np.exp(-score)))
    pngs = {
        "pr": plots.pr_curves_png(
            {"double_top": (y, score), "empty": (np.zeros(5, int), np.zeros(5))}
        ),
        "early": plots.earliest_detection_png({"vicreg": {0.2: 0.1, 0.6: 0.4, 1.0: float("nan")}}),
        "rel": plots.reliability_png({"double_top": cal, "bull_flag": cal["bins"]}),
        "bar": plots.auprc_bar_png(
            [
                {"label": "a", "auprc": 0.3, "ci_low": 0.25, "ci_high": 0.35},
                {"label": "b", "auprc": math.nan, "ci_low": math.nan, "ci_high": math.nan},
                {"label": "c", "auprc": 0.5, "ci_low": 0.4, "ci_high": 0.6},
            ],
            path=tmp_path / "plots" / "bar.png",
        ),
    }
    assert all(_is_png(p) for p in pngs.values()), {k: p[:8] for k, p in pngs.items()}
    assert (tmp_path / "plots" / "bar.png").read_bytes() == pngs["bar"]
    md = plots.png_markdown(pngs["bar"], "leaderboard")
    assert md.startswith("![leaderboard](data:image/png;base64,iVBORw0KGgo")
    with pytest.raises(ValueError, match="not a PNG"):
        plots.png_markdown(b"GIF89a", "x")
    with pytest.raises(ValueError, match="row 0 lacks keys"):
        plots.auprc_bar_png([{"label": "a", "auprc": 0.1}])


def test_the_leaderboards_bar_chart_keeps_the_tables_rank_order():
    rows = [  # ranked by val: the second has the best test AUPRC
        {"label": "a", "auprc": 0.3, "ci_low": 0.2, "ci_high": 0.4},
        {"label": "nan", "auprc": math.nan, "ci_low": math.nan, "ci_high": math.nan},
        {"label": "b", "auprc": 0.6, "ci_low": 0.5, "ci_high": 0.7},
        {"label": "c", "auprc": 0.1, "ci_low": 0.0, "ci_high": 0.2},
    ]
    assert [r["label"] for r in plots.bar_order(rows, ranked=True)] == ["a", "b", "c", "nan"]
    assert [r["label"] for r in plots.bar_order(rows)] == ["b", "a", "c", "nan"]


def test_thumbnail_is_a_smaller_png_of_at_most_the_width_asked():
    from PIL import Image

    rng = np.random.default_rng(3)
    y = _labels(400, 0.2, 25)
    png = plots.pr_curves_png({f"p{i}": (y, y + rng.normal(size=400)) for i in range(5)})
    thumb = plots.thumbnail_png(png, max_width=320)
    assert _is_png(thumb) and len(thumb) < len(png) / 3
    with Image.open(io.BytesIO(png)) as full, Image.open(io.BytesIO(thumb)) as small:
        assert small.width == 320 and abs(small.height / small.width - full.height / full.width) < 0.01
    with pytest.raises(ValueError, match="not a PNG"):
        plots.thumbnail_png(b"GIF89a")


# --------------------------------------------------------------------------- block bootstrap and paired comparisons


def _ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float) -> np.ndarray:
    """Stationary unit-variance AR(1) along the last axis, ``[A, T]``."""
    shocks = rng.standard_normal(shape)
    out = np.empty(shape)
    out[:, 0] = shocks[:, 0]
    for t in range(1, shape[1]):
        out[:, t] = rho * out[:, t - 1] + math.sqrt(1 - rho**2) * shocks[:, t]
    return out


def _autocorrelated_toy(seed: int, n_tickers: int, n_days: int, rho: float = 0.9) -> tuple[np.ndarray, ...]:
    """A screener in miniature: events positive on 5 consecutive days, scores = signal + AR(1) noise
    of the ticker + a market factor shared by every ticker. Returns y, score, ticker_id, day (all [N])."""
    rng = np.random.default_rng(seed)
    start = rng.random((n_tickers, n_days)) < 0.01
    y = np.zeros((n_tickers, n_days), dtype=bool)
    for k in range(5):
        y[:, k:] |= start[:, : n_days - k]
    score = 1.2 * y + _ar1(rng, (n_tickers, n_days), rho) + 0.7 * _ar1(rng, (1, n_days), rho)
    ticker_id = np.repeat(np.arange(n_tickers), n_days)
    day = np.tile(np.arange(n_days), n_tickers)
    return y.ravel().astype(np.int8), score.ravel(), ticker_id, day


def test_block_bootstrap_covers_the_truth_where_the_window_bootstrap_does_not():
    # Truth: the AUPRC of the same process on a sample ~400x larger than one replication.
    y_big, s_big, _, _ = _autocorrelated_toy(10_000, 300, 3000)
    truth = average_precision_score(y_big, s_big)
    covered = {"ticker_time_block": 0, "window": 0}
    n_reps = 60
    for rep in range(n_reps):
        y, score, ticker_id, day = _autocorrelated_toy(rep, 12, 240)
        designs = {
            "ticker_time_block": bt.BootstrapDesign(ticker_id, day, block_days=20),
            "window": bt.BootstrapDesign.window(y.shape[0]),
        }
        for scheme, design in designs.items():
            out = bt.auprc_with_ci(y, score, n_boot=100, seed=rep, design=design)
            covered[scheme] += out["ci_low"] <= truth <= out["ci_high"]
    coverage = {k: v / n_reps for k, v in covered.items()}
    assert coverage["ticker_time_block"] >= 0.85, coverage
    assert coverage["window"] < 0.85, coverage  # the naive bootstrap is too narrow for overlapping windows
    print(f"95% CI coverage over {n_reps} replications: {coverage}")


def test_bootstrap_design_draws_whole_tickers_and_blocks():
    ticker_id = np.repeat([5, 7, 9], 60)
    day = np.tile(np.arange(60), 3)
    design = bt.BootstrapDesign(ticker_id, day, block_days=20)
    assert design.describe() == {
        "scheme": "ticker_time_block", "n_rows": 180, "block_days": 20, "n_tickers": 3, "n_blocks": 3,
    }
    w = design.draw(np.random.default_rng(0)).reshape(3, 3, 20)  # [ticker, block, day in block]
    assert (w == w[:, :, :1]).all()  # every day of a (ticker, block) cell shares its weight
    assert w[:, :, 0].sum() == 9  # 3 tickers drawn x 3 blocks drawn
    with pytest.raises(ValueError, match="scheme"):
        bt.BootstrapDesign(ticker_id, day, scheme="rows")
    with pytest.raises(ValueError, match="180 rows"):
        bt.auprc_with_ci(np.r_[1, np.zeros(9, int)], np.zeros(10), design=design)


def test_paired_difference_separates_runs_that_overlapping_intervals_cannot():
    y, score, ticker_id, day = _autocorrelated_toy(3, 12, 240)
    design = bt.BootstrapDesign(ticker_id, day)
    rng = np.random.default_rng(0)
    better = score + 0.35 * y + 0.05 * rng.standard_normal(y.shape[0])  # same errors, a bit more signal
    y2, a2, b2 = y[:, None], better[:, None], score[:, None]
    ci_a = bt.macro_auprc_with_ci(y2, a2, n_boot=200, design=design)
    ci_b = bt.macro_auprc_with_ci(y2, b2, n_boot=200, design=design)
    assert ci_a["ci_low"] < ci_b["ci_high"]  # unpaired intervals overlap ...
    paired = bt.paired_macro_difference(y2, a2, b2, design=design, n_boot=200)
    assert paired["verdict"] == "better" and paired["ci_low"] > 0  # ... the paired difference does not
    assert paired["diff"] == pytest.approx(ci_a["auprc"] - ci_b["auprc"])
    assert bt.paired_macro_difference(y2, b2, a2, design=design, n_boot=200)["verdict"] == "worse"
    assert bt.paired_macro_difference(y2, b2, b2, design=design, n_boot=200)["verdict"] == "tie"


def test_alert_budget_threshold_and_unreachable_patterns_raise_no_alerts():
    rng = np.random.default_rng(0)
    score_val = rng.random(10_000)
    budget = m.threshold_at_budget(score_val, alerts_per_1000=5.0)
    assert budget["k"] == 50 and budget["val_alerts_per_1000"] == pytest.approx(5.0)
    y = _labels(4000, 0.05, seed=2)
    noise = rng.random(4000)  # precision 0.8 is unreachable for a random score
    report = rp.pattern_report(
        y_val=y, score_val=noise, y_test=y, score_test=noise, n_ticker_days=4000, n_boot=10,
        event_scores={0.5: rng.random(30) + 0.5, 1.0: rng.random(30) + 1.0},
    )
    assert report["threshold"]["achievable"] is False
    assert report["alerts"] == {
        "alerts": 0, "alerts_per_day_per_ticker": 0.0, "precision": report["alerts"]["precision"],
        "recall": 0.0, "true_alerts": 0, "n_pos": int(y.sum()), "reachable": False,
    }
    assert math.isnan(report["alerts"]["precision"])
    assert report["earliest_detection"][1.0] == 1.0  # events scored above every negative are all found
    assert report["earliest_detection_auprc"][1.0] == 1.0
    assert 0.0 < report["earliest_detection_auprc"][0.5] < 1.0
    assert report["val_auprc"] == pytest.approx(average_precision_score(y, noise))
    good = y + 0.01 * rng.random(4000)
    reachable = rp.pattern_report(y_val=y, score_val=good, y_test=y, score_test=good, n_ticker_days=4000, n_boot=10)
    mac = rp.macro({"a": report, "b": reachable})
    assert mac["reachable"] == "1 of 2 reachable" and mac["precision"] == reachable["alerts"]["precision"]


def test_paired_comparison_joins_prediction_frames_on_ticker_and_decision_row():
    import polars as pl

    from screener_ssl.probe.compare import paired_comparison

    y, score, ticker_id, day = _autocorrelated_toy(4, 10, 200)
    rng = np.random.default_rng(1)
    base = pl.DataFrame(
        {
            "ticker": [f"T{t}" for t in ticker_id],
            "date": (np.datetime64("2021-01-01") + day).astype("datetime64[D]"),
            "split": ["test"] * y.shape[0],
            "decision_row": np.arange(y.shape[0], dtype=np.int64),
            "label_p": y,
        }
    )
    run_a = base.with_columns(score_p=pl.Series(score + 0.4 * y + 0.05 * rng.standard_normal(y.shape[0])))
    run_b = base.with_columns(score_p=pl.Series(score)).sample(fraction=1.0, shuffle=True, seed=0)  # order differs
    out = paired_comparison(run_a, run_b.head(1800), n_boot=200)
    assert out["rows_shared"] == 1800 and out["verdict"] == "better" and out["bootstrap"]["block_days"] == 20
    assert paired_comparison(run_b, run_a, n_boot=200)["verdict"] == "worse"
    with pytest.raises(ValueError, match="different labels"):
        paired_comparison(run_a, run_b.with_columns(label_p=1 - pl.col("label_p")), n_boot=10)
    with pytest.raises(ValueError, match="share no test rows"):
        paired_comparison(run_a, run_b.with_columns(split=pl.lit("val")), n_boot=10)


def test_vectorized_bootstrap_matches_one_resample_at_a_time(monkeypatch):
    """Blocks of resamples scored at once give each resample's AP, and CIs independent of the block size."""
    y = _labels(900, 0.1, seed=40)
    score = np.round(y + np.random.default_rng(41).normal(size=900), 1)  # ties
    sorted_scores = bt._SortedScores(y, score)
    rng = np.random.default_rng(42)
    draws = np.stack([np.bincount(rng.integers(0, 900, size=900), minlength=900) for _ in range(6)])
    draws[2] = np.where(y == 1, 0, 1)  # no positive drawn
    batch = sorted_scores.average_precisions(draws)
    for k in (0, 1, 3, 4, 5):
        idx = np.repeat(np.arange(900), draws[k])
        assert batch[k] == pytest.approx(average_precision_score(y[idx], score[idx]), abs=1e-12)
    assert math.isnan(batch[2])
    ticker_id, day = np.repeat(np.arange(9), 100), np.tile(np.arange(100), 9)
    design = bt.BootstrapDesign(ticker_id, day, block_days=10)
    y2 = np.stack([y, _labels(900, 0.05, seed=43)], axis=1)
    s2 = np.stack([score, y2[:, 1] + np.random.default_rng(44).normal(size=900)], axis=1)
    one = bt.pooled_macro_comparison(y2, [s2], [s2.copy()], design=design, n_boot=50)
    wide = (bt.auprc_with_ci(y, score, n_boot=50, design=design), bt.macro_auprc_with_ci(y2, s2, n_boot=50, design=design),
            bt.pooled_macro_comparison(y2, [s2], design=design, n_boot=50))
    monkeypatch.setattr(bt, "BOOT_BLOCK_VALUES", 900 * 7)  # blocks of 7 resamples (the last one of 1)
    narrow = (bt.auprc_with_ci(y, score, n_boot=50, design=design), bt.macro_auprc_with_ci(y2, s2, n_boot=50, design=design),
              bt.pooled_macro_comparison(y2, [s2], design=design, n_boot=50))
    def same(a: dict, b: dict) -> bool:  # NaN where undefined (no group b) counts as equal
        return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)

    assert all(same(a, b) for a, b in zip(wide, narrow, strict=True))
    assert one["diff"] == 0.0 and one["ci_low"] == one["ci_high"] == 0.0 and one["verdict"] == "tie"


def test_pooled_comparisons_sharing_a_memo_reuse_each_runs_resamples_and_give_the_same_results(monkeypatch):
    """A run's resampled macro AUPRC is computed once per key and reused; every result equals the unshared one."""
    ticker_id, day = np.repeat(np.arange(6), 100), np.tile(np.arange(100), 6)
    design = bt.BootstrapDesign(ticker_id, day, block_days=10)
    y = np.stack([_labels(600, 0.1, seed=50), _labels(600, 0.08, seed=51)], axis=1)
    runs = {name: y + np.random.default_rng(seed).normal(scale=noise, size=y.shape)
            for name, seed, noise in (("a", 52, 0.5), ("b", 53, 1.0), ("c", 54, 2.0))}
    memo: dict = {}
    calls = []
    original = bt._macro_resamples

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("a", None)]
    plain = [bt.pooled_macro_comparison(y, [runs[x]], None if z is None else [runs[z]], design=design, n_boot=40)
             for x, z in pairs]
    monkeypatch.setattr(bt, "_macro_resamples", counted)
    shared = [bt.pooled_macro_comparison(y, [runs[x]], None if z is None else [runs[z]], design=design, n_boot=40,
                                        memo=memo, keys_a=[x], keys_b=None if z is None else [z])
              for x, z in pairs]
    assert len(calls) == 3 and len(memo) == 3  # one per run, not one per comparison
    for a, b in zip(plain, shared, strict=True):
        assert a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)
