"""The README's Python example runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0].replace("/tmp/my_encoder", str(tmp_path / "enc"))
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "enc" / "encoder.pt").exists()


def test_readme_promises_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_readme_shows_the_partition_form_of_the_probe_command_first_and_the_every_partition_command():
    text = README.read_text()
    first = re.search(r"dagster asset materialize [^\n]*--select probe_metrics[^\n]*", text)
    assert first and '--partition "' in first.group(0), "the first probe_metrics command must name its partition"
    assert "screener-ssl materialize --select probe_metrics" in text
