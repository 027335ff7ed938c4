"""The README's performance table is the one benchmarks/report.py renders from the saved JSON."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _report_module():
    spec = importlib.util.spec_from_file_location("benchmark_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_matches_the_saved_documents():
    report = _report_module()
    assert report.main(["--check"]) == 0, "README.md is stale: run python benchmarks/report.py"


def test_the_table_changes_with_the_documents_and_names_the_missing_gpu(tmp_path):
    report = _report_module()
    results = tmp_path / "results"
    results.mkdir()
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        (results / path.name).write_text(path.read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    assert report.main(["--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "GPU figures have not been measured" in text
    first = sorted(results.glob("*.json"))[0]
    document = json.loads(first.read_text())
    document["host"]["load_average"] = [42.5, 0, 0]
    first.write_text(json.dumps(document))
    assert report.main(["--results", str(results), "--readme", str(readme), "--check"]) == 1
    report.main(["--results", str(results), "--readme", str(readme)])
    assert "| 42.5 |" in readme.read_text()


def test_a_readme_without_the_marked_block_is_refused():
    report = _report_module()
    with pytest.raises(ValueError, match="exactly one"):
        report.rewrite("no markers here", "table")


def test_full_point_and_cuda_smoke_documents_render(tmp_path):
    """The GPU check's documents (benchmarks/gpu_check.sh) become table rows, device column included."""
    report = _report_module()
    host = {"load_average": [0.5, 0, 0], "cpu_model": "test CPU"}
    full = {
        "benchmark": "full_point", "device": "cuda",
        "config": {"partition": "vicreg|full-s0", "steps": 4000, "declared_steps": 4000, "reduced": False,
                   "batch_size": 128, "threads": 2},
        "seconds": {"train_plus_probe": 61.2, "train_loop": 40.1, "probe": 15.3},
        "train_windows_per_s": 12800.0, "probe": {"macro_auprc": 0.297}, "peak_rss_mb": 2100.0, "host": host,
    }
    smoke = {
        "benchmark": "cuda_smoke", "device": "cuda", "config": {"steps": 4, "threads": 2},
        "summary": {"entries": 19, "failed": ["x"], "all_ok": False}, "host": host,
        "sampler_check": {"batch_size": 256, "same_windows": True, "clean_max_abs_diff": 2e-7, "ok": True},
    }
    table = report.render([{**full, "_file": "full_point.json"}, {**smoke, "_file": "cuda_smoke.json"}])
    assert "| `full_point` | 4,000 × 128 | vicreg\\|full-s0: train + probe, end to end | 61 s (train loop 40 s" in table
    # The partition key's pipe is escaped: every row has the header's ten cells.
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert {len(re.split(r"(?<!\\)\|", row)) for row in rows} == {12}
    assert "| cuda | `full_point.json` |" in table
    assert "18 / 19 ok (failed: x) | all | **no** |" in table
    assert "device sampler vs CPU sampler, same seed | windows equal, clean values within 2.0e-07" in table
    assert "GPU figures have not been measured" not in table


def test_the_benchmarks_run_without_dagster():
    """Benchmark scripts and the library parts they call import with Dagster made unimportable;
    the sweep (and the probe settings it validates) loads without matplotlib too."""
    import subprocess
    import sys

    code = (
        "import importlib, sys; sys.modules['dagster'] = None; sys.path.insert(0, 'benchmarks')\n"
        "for m in ('screener_ssl.runs.pretrain', 'screener_ssl.runs.sweep', 'screener_ssl.probe.probe',"
        " 'screener_ssl.ssl.trainer', 'screener_ssl.ssl.objectives', 'screener_ssl.scan.scan',"
        " 'screener_ssl.data.dataset', 'screener_ssl.ssl.encoder', 'full_point', 'cuda_smoke',"
        " 'pretrain_throughput', 'build_dataset', 'scan_latency', 'render_throughput', 'report'):\n"
        "    importlib.import_module(m)\n"
        "from screener_ssl.ssl.objectives.base import objective_names; objective_names()\n"
        "for m in [k for k in sys.modules if k == 'matplotlib' or k.startswith('matplotlib.')]: del sys.modules[m]\n"
        "sys.modules['matplotlib'] = None\n"
        "for m in [k for k in sys.modules if k.startswith('screener_ssl.probe')]: del sys.modules[m]\n"
        "from screener_ssl.runs.sweep import load_sweep; load_sweep().point('vicreg', 'full-s0')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
