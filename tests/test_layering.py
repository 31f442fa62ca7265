"""The arrows of DESIGN.md, checked on the source: runtimes depend only on the core, the core on no room, and no
module reaches into another package's private module. Imports inside functions count too: a lazy import is
still a dependency."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgekit"
CORE = ("edgekit.errors", "edgekit.specs", "edgekit.onnxfile", "edgekit.artifact", "edgekit._version", "edgekit.text")
ROOMS = ("edgekit.runtimes", "edgekit.converters", "edgekit.benchmark", "edgekit.sources", "edgekit.cli")
# being rewritten into the edgekit/cli/ package elsewhere; they import edgekit.cli._errors until then
_CLI_MODULES = ("edgekit.cli", "edgekit.distill_cli", "edgekit.benchmark.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> every edgekit module it imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        found[_module_name(path)] = {n for n in names if n == "edgekit" or n.startswith("edgekit.")}
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


IMPORTS = _imports()


@pytest.mark.parametrize("module", sorted(m for m in IMPORTS if _within(m, ("edgekit.runtimes",))))
def test_runtimes_depend_only_on_the_core(module):
    rooms = (*(r for r in ROOMS if r != "edgekit.runtimes"), "edgekit.distill_cli")
    bad = sorted(n for n in IMPORTS[module] if _within(n, rooms) or n == "edgekit")
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_room(module):
    bad = sorted(n for n in IMPORTS[module] if _within(n, (*ROOMS, "edgekit.distill_cli")) or n == "edgekit")
    assert not bad, f"{module} imports {bad}"


def test_no_module_imports_another_packages_private_module():
    bad = []
    for module, names in IMPORTS.items():
        if module in _CLI_MODULES:
            continue
        for name in names:
            parts = name.split(".")
            private = [i for i, p in enumerate(parts) if i and p.startswith("_") and not p.startswith("__")]
            private = [i for i in private if parts[i] != "_version"]  # the one private-looking core module
            if private and not module.startswith(".".join(parts[: private[0]]) + "."):
                bad.append(f"{module} -> {name}")
    assert not bad, bad


def test_the_public_loading_path_imports_no_heavy_package():
    code = (
        "import sys, edgekit; edgekit.load; edgekit.Session; edgekit.Manifest\n"
        "import edgekit.runtimes.loading, edgekit.runtimes.openvino, edgekit.runtimes.tensorrt\n"
        "print(','.join(m for m in ('torch', 'openvino', 'onnxruntime', 'tensorrt', 'transformers')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
