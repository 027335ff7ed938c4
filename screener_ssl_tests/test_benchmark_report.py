"""The README's performance table is the one benchmarks/report.py renders from the saved JSON."""

from __future__ import annotations

import importlib.util
import json
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
