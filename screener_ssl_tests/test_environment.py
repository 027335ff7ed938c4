"""The process environment is read in one module: ``screener_ssl/store/environment.py``.

Every setting comes from the settings resource, which reads the ``SCREENER_SSL_*`` variables
through that module; the rest of the package receives values, not the environment. This test
walks the package's source and fails on any other environment access (``os.environ``,
``os.getenv``, ``os.putenv``, ``os.unsetenv``, ``os.environb``, or importing one of them from ``os``).
``benchmarks/`` and ``scripts/`` are outside the package and may read it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "screener_ssl"
READER = PACKAGE / "store" / "environment.py"
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(source: str, filename: str = "<source>") -> list[int]:
    """Lines of ``source`` that touch the process environment."""
    tree = ast.parse(source, filename=filename)
    os_names = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {alias.asname or alias.name for alias in node.names if alias.name == "os"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in ENV_NAMES for a in node.names):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Attribute) and node.attr in ENV_NAMES
              and isinstance(node.value, ast.Name) and node.value.id in os_names):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_only_the_environment_module_reads_the_environment():
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py")) if path != READER
        for line in environment_reads(path.read_text(), str(path))
    ]
    assert offenders == [], f"environment read outside {READER.relative_to(REPO)}: {offenders}"
    assert environment_reads(READER.read_text()), "the environment module no longer reads the environment"


def test_the_check_sees_every_spelling_of_an_environment_read():
    assert environment_reads("import os\nx = os.environ.get('A')\n") == [2]
    assert environment_reads("import os as o\nx = o.getenv('A')\n") == [2]
    assert environment_reads("from os import environ\n") == [1]
    assert environment_reads("import os\nos.environ['A'] = '1'\n") == [2]
    assert environment_reads("import os\nn = os.cpu_count()\ndef f(environ):\n    return environ.get('A')\n") == []
