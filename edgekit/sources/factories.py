"""Sources that are Python code: ``FILE.py:FUNCTION`` or ``package.module:FUNCTION`` returning a model."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import SourceError, one_line
from edgekit.provenance import file_sha256, split_factory
from edgekit.sources._util import eval_mode
from edgekit.sources.examples import named_examples
from edgekit.sources.loaded import LoadedSource

if TYPE_CHECKING:
    import torch

_MODULE_COUNTER = itertools.count()


def load_factory(text: str) -> LoadedSource:
    target, func = split_factory(text) or ("", "")
    if target.endswith(".py"):
        file = Path(target).expanduser().resolve()
        if not file.is_file():
            raise SourceError(f"source file {file} does not exist")
        with _on_sys_path(file.parent):
            module = _import_file(file)
            result = _call_factory(_lookup(module, func, str(file)), f"{file}:{func}")
        ref, sha = f"{file}:{func}", file_sha256(file)
    else:
        module = _import_module(target)
        result = _call_factory(_lookup(module, func, f"module {target!r}"), text)
        origin = getattr(module, "__file__", None)
        ref, sha = text, (file_sha256(Path(origin)) if origin else None)
    model, raw_examples = _split_result(result, ref)
    examples, names = named_examples(model, raw_examples, ref)
    return LoadedSource(
        module=eval_mode(model),
        example_inputs=examples,
        kind="python",
        ref=ref,
        sha256=sha,
        input_names=names,
        metadata={"architecture": type(model).__name__},
    )


@contextlib.contextmanager
def _on_sys_path(directory: Path) -> Iterator[None]:
    """Let a factory file import its neighbours while it loads, without leaving its directory on sys.path."""
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _import_file(file: Path) -> Any:
    """Import ``file`` under a fresh module name (kept in sys.modules so its classes pickle and deepcopy)."""
    stem = re.sub(r"\W", "_", file.stem)
    name = f"_edgekit_source_{stem}_{next(_MODULE_COUNTER)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise SourceError(f"cannot import {file}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise SourceError(f"cannot import {file}: {one_line(exc)}") from exc
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise SourceError(f"cannot import module {name!r}: {one_line(exc)}") from exc


def _lookup(module: Any, func: str, where: str) -> Any:
    obj = module
    for part in func.split("."):
        if not hasattr(obj, part):
            defined = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            hint = f" (it defines: {', '.join(sorted(defined)[:10])})" if defined else ""
            raise SourceError(f"function {func!r} not found in {where}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SourceError(f"{func!r} in {where} is a {type(obj).__name__}, not a function")
    return obj


def _call_factory(factory: Any, label: str) -> Any:
    try:
        return factory()
    except Exception as exc:
        raise SourceError(f"factory {label} raised {one_line(exc)}") from exc


def _split_result(result: Any, label: str) -> tuple[torch.nn.Module, Any]:
    """``(module, examples)`` from what a factory returned: a module, or a (module, example_inputs) pair."""
    from torch import nn

    if isinstance(result, nn.Module):
        return result, None
    if isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], nn.Module):
        return result[0], result[1]
    raise SourceError(
        f"factory {label} returned {type(result).__name__}, not an nn.Module or (nn.Module, example_inputs)"
    )
