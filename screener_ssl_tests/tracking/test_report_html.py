"""The HTML report: one self-contained page, opened in headless Chromium as a researcher would."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from screener_ssl.probe.plots import auprc_bar_png
from screener_ssl.tracking.leaderboard import leaderboard, ordered_board
from screener_ssl.tracking.report_html import PROBE_PLOTS, REPORT_FILE, write_report

REPO = Path(__file__).resolve().parents[2]
PATTERNS = ("p", "q")


def _browser_class():
    """The DevTools driver scripts/screenshots.py uses for the README's screenshots."""
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("screenshots", module)  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module.Browser


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("SCREENER_SSL_REQUIRE_CHROMIUM") == "1":
        pytest.fail("SCREENER_SSL_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install -y chromium)")
    pytest.skip("no chromium on PATH (apt-get install -y chromium)")


def _png(path: Path, label: str) -> None:
    auprc_bar_png([{"label": label, "auprc": 0.4, "ci_low": 0.3, "ci_high": 0.5}], path=path, title=label)


def _models_root(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    """Runs of three objectives (one with two seeds, one with a teacher), their predictions, metrics and plots."""
    rng = np.random.default_rng(3)
    n = 8 * 120
    y = (rng.random((n, len(PATTERNS))) < 0.06).astype(np.int8)
    base = pl.DataFrame({
        "ticker": [f"T{t}" for t in np.repeat(np.arange(8), 120)],
        "date": (np.datetime64("2022-01-03") + np.tile(np.arange(120), 8)).astype("datetime64[D]"),
        "split": ["test"] * n, "decision_row": np.arange(n, dtype=np.int64),
        **{f"label_{p}": y[:, i] for i, p in enumerate(PATTERNS)},
    })
    root = tmp_path / "models"
    rows = []

    def run_dir(path: Path, signal: float, name: str) -> None:
        path.mkdir(parents=True)
        scores = {f"score_{p}": signal * y[:, i] + rng.standard_normal(n) for i, p in enumerate(PATTERNS)}
        base.with_columns(**scores).write_parquet(path / "probe_predictions.parquet")
        metrics = {"macro": {"reachable": "1 of 2 reachable"}, "per_pattern": {
            p: {"auprc": {"auprc": 0.3, "ci_low": 0.2, "ci_high": 0.4, "prevalence": 0.06},
                "alerts": {"alerts_per_day_per_ticker": 0.01, "precision": 0.8, "recall": 0.2},
                "calibration": {"ece": 0.05}} for p in PATTERNS}}
        (path / "probe_metrics.json").write_text(json.dumps(metrics))
        for plot in PROBE_PLOTS:
            _png(path / plot, f"{name} {plot}")

    spec = [("masked_recon", "base", 0, 1.0, 0.3), ("masked_recon", "base-s1", 1, 1.2, 0.32),
            ("supervised", "base", 0, 3.0, 0.5), ("chart_distill", "base", 0, 2.0, 0.4)]
    for i, (objective, variant, seed, signal, val) in enumerate(spec):
        path = root / objective / "_pretrain" / f"r{i}"
        run_dir(path, signal, objective)
        row = {"model_type": objective, "run_id": f"r{i}", "run_dir": str(path), "experiment.objective": objective,
               "experiment.variant": variant, "experiment.backbone": "tcn", "run_meta.seed": seed,
               "probe_metrics.macro.auprc": val, "probe_metrics.val.macro_auprc": val}
        if objective == "chart_distill":
            run_dir(path / "teacher", 1.5, "teacher")
            row |= {"reference.teacher.probe_metrics.macro.auprc": 0.2,
                    "reference.teacher.probe_metrics.val.macro_auprc": 0.2}
        rows.append(row)
    _png(root / "supervised" / "_pretrain" / "r2" / "label_budget_curve.png", "a budget curve")
    _png(root / "_macro_auprc_by_objective.png", "macro AUPRC")
    _png(root / "_label_efficiency.png", "label efficiency")
    board = ordered_board(leaderboard(pl.DataFrame(rows), n_boot=30)).with_columns(
        current=pl.Series([True, False, True, True])
    )
    return root, board


def test_the_report_is_one_page_with_the_board_each_rows_table_and_its_plots_embedded(tmp_path) -> None:
    root, board = _models_root(tmp_path)
    path = write_report(board, root)
    assert path == root / REPORT_FILE
    page = path.read_text()
    assert "src=\"data:image/png;base64," in page and "file:" not in page and str(root) + "/" not in page.split(
        "<h2>Each row")[0]
    # The probe's three plots of every row's run, the budget curve where it exists, the index dir's plots.
    assert page.count("<img") == 4 * 3 + 1 + 2  # (4 rows: masked_recon pools two seeds, the teacher has its own)
    assert page.index("probe_pr_curves.png") < page.index("probe_reliability.png") < page.index("label_budget_curve.png")
    assert "_label_efficiency.png" in page and "1 of 2 reachable" in page
    assert "1 of 4 rows are out of date" in page


def test_the_report_renders_in_chromium_with_every_image_loaded_and_every_parquet_row(tmp_path) -> None:
    binary = _chromium()
    root, board = _models_root(tmp_path)
    board.write_parquet(root / "_leaderboard.parquet")
    path = write_report(pl.read_parquet(root / "_leaderboard.parquet"), root)
    browser = _browser_class()(binary, 1400, 900)
    try:
        assert browser.open(path.as_uri(), "Leaderboard", timeout=60, settle=1.0)
        deadline = time.monotonic() + 30
        while True:  # an image that fails to decode is complete with naturalWidth 0
            state = browser.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            if all(done for done, _, _ in state) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(state) == 15 and all(done and w > 0 and h > 0 for done, w, h in state), state
        rows = browser.evaluate(
            "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => "
            "[r.dataset.runId, Array.from(r.cells).map(c => c.innerText)])"
        )
        header = browser.evaluate("Array.from(document.querySelectorAll('#leaderboard thead th')).map(c => c.innerText)")
        verdict = browser.evaluate(
            "Array.from(document.querySelectorAll('#verdict tbody tr')).map(r => Array.from(r.cells).map(c => c.innerText))"
        )
        # Each objective links to its run's section, which holds that run's per-pattern table.
        targets = browser.evaluate(
            "Array.from(document.querySelectorAll('#leaderboard tbody a')).map(a => "
            "[a.innerText, document.querySelector(a.getAttribute('href')).querySelector('h3').innerText])"
        )
    finally:
        browser.close()
    parquet = pl.read_parquet(root / "_leaderboard.parquet")
    assert [r[0] for r in rows] == parquet.get_column("run_id").to_list()
    assert header[:6] == ["rank", "objective", "variant", "kind", "current", "test_auprc"]
    assert [t[1] for t in targets] == [f"{i}. {o}|{v}" for i, (o, v) in enumerate(
        zip(parquet.get_column("objective"), parquet.get_column("variant")), 1)]
    assert [r[1] for r in verdict] == parquet.get_column("objective").to_list()
    assert all(re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", r[5]) for r in verdict), verdict
    for (_, cells), row in zip(rows, parquet.iter_rows(named=True), strict=True):
        assert cells[1] == row["objective"] and cells[2] == row["variant"] and cells[3] == row["kind"]
        assert cells[4] == ("yes" if row["current"] else "NO")
        assert float(cells[5]) == pytest.approx(row["auprc"], rel=1e-3)
