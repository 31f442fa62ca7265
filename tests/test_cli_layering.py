"""The CLI is a thin layer on top: no library module imports it, and importing it pulls in no heavy package."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"
HEAVY = ("torch", "openvino", "onnxruntime", "tensorrt", "transformers")


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, by absolute name (``from edgekit import cli`` counts as ``edgekit.cli``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_library_module_imports_the_cli() -> None:
    cli = PACKAGE / "cli"
    entry_points = {PACKAGE / "__main__.py"}
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if cli not in path.parents and path not in entry_points
        for name in _imports(path)
        if name == "edgekit.cli" or name.startswith("edgekit.cli.")
    ]
    assert offenders == []


def test_importing_the_cli_imports_no_heavy_package() -> None:
    code = f"import sys, edgekit.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
