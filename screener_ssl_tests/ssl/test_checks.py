"""Encoder health checks: collapse and the end-to-end no-lookahead check (which can fail)."""

from __future__ import annotations

import numpy as np

from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.checks import collapse_report, effective_rank, no_lookahead_report
from screener_ssl.ssl.encoder import Encoder
from screener_ssl_tests.conftest import random_walk_bars

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)


def _encoder():
    return Encoder(build_backbone(BackboneConfig(embed_dim=8, hidden_dim=8, n_layers=2), 6), normalization="none")


def test_collapse_report_flags_collapsed_and_passes_healthy():
    rng = np.random.default_rng(0)
    healthy = rng.normal(size=(512, 16))
    assert not collapse_report(healthy)["collapsed"]
    assert effective_rank(healthy) > 12
    constant = np.ones((512, 16)) + 1e-9 * rng.normal(size=(512, 16))
    assert collapse_report(constant)["collapsed"]
    rank_one = np.outer(rng.normal(size=512), rng.normal(size=16))
    report = collapse_report(rank_one)
    assert report["collapsed"] and report["effective_rank"] < 1.5


def test_no_lookahead_check_passes_on_the_real_pipeline():
    report = no_lookahead_report(_encoder(), random_walk_bars(n_tickers=3, n_days=120), SPEC, n_windows=12)
    assert report["passed"] and report["windows_checked"] == 12


def test_no_lookahead_check_fails_when_the_decision_bar_leaks():
    # Declaring the close-derived return as known at the open is a lookahead the check must catch.
    leaky = SPEC.model_copy(update={"open_known_features": ("gap", "log_return")})
    report = no_lookahead_report(_encoder(), random_walk_bars(n_tickers=3, n_days=120), leaky, n_windows=12)
    assert not report["passed"] and report["max_abs_embedding_change"] > 0
