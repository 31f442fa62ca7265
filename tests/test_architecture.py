"""The layering of docs/ARCHITECTURE.md, enforced: imports run one way, no cycles, small modules.

The import graph is read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` of an ``edgekit`` module, at module level or inside functions (a lazy import is still an
arrow), except those under ``if TYPE_CHECKING:``.

    cli → package API → {converters, benchmark, runtimes}
    converters → {benchmark, runtimes, sources, core};  benchmark → {runtimes, core}
    runtimes → core;  sources → core;
    core = errors, specs, fidelity, goals, retrieval, onnxfile, artifact, provenance, paths, staging, cpu, _version,
           text, corpus
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgekit"
CORE = {"errors", "specs", "fidelity", "goals", "retrieval", "onnxfile", "artifact", "provenance", "paths", "staging",
        "cpu", "_version", "text", "corpus"}  # fmt: skip
ROOMS = {"runtimes", "sources", "converters", "benchmark", "cli"}
MAX_LINES = 400
# (importing room or "core", imported room): arrows that would run upward or sideways
FORBIDDEN = {
    ("runtimes", "converters"), ("runtimes", "benchmark"), ("runtimes", "sources"), ("runtimes", "cli"),
    ("benchmark", "converters"), ("benchmark", "sources"), ("benchmark", "cli"),
    ("sources", "converters"), ("sources", "benchmark"), ("sources", "runtimes"), ("sources", "cli"),
    ("converters", "cli"),
    *(("core", room) for room in ROOMS),
    *((room, "root") for room in ("core", "runtimes", "sources", "converters", "benchmark")),  # no room calls up
}  # fmt: skip


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def imports_of(path: Path, root: Path = PACKAGE) -> Iterator[str]:
    """The edgekit modules ``path`` imports (``from edgekit.x import y`` yields ``edgekit.x.y`` if that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == root.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            if base.split(".")[0] != root.name:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if _is_module(sub, root) else base


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(p, root): set(imports_of(p, root)) for p in sorted(root.rglob("*.py"))}


def room_of(module: str) -> str:
    """``"core"`` for a core module, the room (sub-package) a module is in, else ``"root"``: the package API."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in CORE:
        return "core"
    return parts[1] if parts[1] in ROOMS else "root"


def forbidden_arrows(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if (room_of(a), room_of(b)) in FORBIDDEN and room_of(a) != room_of(b)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# --- the rules, on edgekit -------------------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_imports_run_one_way() -> None:
    assert forbidden_arrows(import_graph()) == []


def private_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a ``_private`` module from outside the package that holds it (``_version`` is core, public)."""
    bad = []
    for module, targets in graph.items():
        for name in targets:
            parts = name.split(".")
            private = [i for i, p in enumerate(parts) if i and p.startswith("_") and not p.startswith("__")]
            private = [i for i in private if parts[i] != "_version"]
            owner = ".".join(parts[: private[0]]) if private else module
            if module != owner and not module.startswith(owner + "."):
                bad.append(f"{module} -> {name}")
    return sorted(bad)


def test_no_module_imports_another_packages_private_module() -> None:
    assert private_imports(import_graph()) == []


def test_modules_stay_small() -> None:
    big = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}, f"split modules over {MAX_LINES} lines"


# --- the checker catches what it should --------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "edgekit"
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


@pytest.mark.parametrize(
    ("files", "arrow"),
    [
        ({"runtimes/base.py": "from edgekit.converters import pipeline\n", "converters/pipeline.py": ""},
         "edgekit.runtimes.base -> edgekit.converters.pipeline"),
        ({"specs.py": "def f():\n    from edgekit.runtimes import base\n", "runtimes/base.py": ""},
         "edgekit.specs -> edgekit.runtimes.base"),
        ({"artifact.py": "from edgekit import __version__\n"}, "edgekit.artifact -> edgekit"),
        ({"converters/x.py": "from edgekit.api import load\n", "api.py": ""}, "edgekit.converters.x -> edgekit.api"),
        ({"benchmark/run.py": "from ..sources import x\n", "sources/x.py": ""},
         "edgekit.benchmark.run -> edgekit.sources.x"),
    ],
)  # fmt: skip
def test_checker_finds_an_upward_import(tmp_path: Path, files: dict[str, str], arrow: str) -> None:
    pkg = _write(tmp_path, {"__init__.py": "", **files})
    assert arrow in forbidden_arrows(import_graph(pkg))


def test_checker_finds_a_private_import(tmp_path: Path) -> None:
    files = {"__init__.py": "", "sources/_util.py": "", "sources/a.py": "from edgekit.sources import _util\n",
             "converters/b.py": "from edgekit.sources._util import x\n"}  # fmt: skip
    pkg = _write(tmp_path, files)
    assert private_imports(import_graph(pkg)) == ["edgekit.converters.b -> edgekit.sources._util"]


def test_checker_finds_a_cycle_and_ignores_type_checking(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "converters/a.py": "from edgekit.converters import b\n",
        "converters/b.py": "def f():\n    import edgekit.converters.a\n",
        "converters/c.py": "import typing\nif typing.TYPE_CHECKING:\n    from edgekit.converters import a\n",
    })  # fmt: skip
    graph = import_graph(pkg)
    assert cycles(graph) == [["edgekit.converters.a", "edgekit.converters.b"]]
    assert graph["edgekit.converters.c"] == set()
