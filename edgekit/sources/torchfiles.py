"""Sources that are single torch files: an exported program (.pt2), TorchScript, or a pickled module."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import SourceError, one_line
from edgekit.provenance import file_sha256
from edgekit.sources._util import eval_mode
from edgekit.sources.examples import forward_names, named_examples
from edgekit.sources.loaded import LoadedSource

if TYPE_CHECKING:
    import torch


def load_exported_program(path: Path) -> LoadedSource:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise SourceError(f"cannot read {path} as an exported program (.pt2): {one_line(exc)}") from exc
    module = program.module()
    examples, names = None, forward_names(module)
    if program.example_inputs is not None:
        args, kwargs = program.example_inputs
        raw = {**dict(zip(names, args, strict=False)), **kwargs} if kwargs else tuple(args)
        examples, names = named_examples(module, raw, str(path))
    return _file_source(
        path,
        module,
        "exported_program",
        type(module).__name__,
        examples=examples,
        names=names,
        dynamic_dims=_program_dynamic_dims(program, names),
    )


def _program_dynamic_dims(program: Any, names: list[str]) -> dict[str, dict[int, str]] | None:
    """Symbolic axes of the program's user inputs: one name per symbol, "batch" for the first input's axis 0."""
    import torch
    from torch.export.graph_signature import InputKind

    user = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if len(user) != len(names):
        return None
    symbols: dict[str, str] = {}
    dims: dict[str, dict[int, str]] = {}
    for name, node_name in zip(names, user, strict=True):
        value = nodes[node_name].meta.get("val")
        for axis, size in enumerate(getattr(value, "shape", ())):
            if isinstance(size, torch.SymInt):
                default = "batch" if not symbols and axis == 0 else f"{name}_dim{axis}"
                dims.setdefault(name, {})[axis] = symbols.setdefault(str(size), default)
    return dims or None


def load_torchscript(path: Path) -> LoadedSource:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise SourceError(f"cannot read {path} as a TorchScript file: {one_line(exc)}") from exc
    return _file_source(path, module, "torchscript", module.original_name)


def load_pickle(path: Path, *, allow_pickle: bool) -> LoadedSource:
    """A full pickled module; refuses state_dicts (no architecture) and, unless allowed, arbitrary pickles."""
    import pickle

    import torch

    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # garbage, not a pickle of classes torch refuses to import
            raise SourceError(f"cannot read {path} as a PyTorch file: {one_line(exc)}") from exc
        if not allow_pickle:
            raise SourceError(
                f"{path} is a pickled model; loading it runs arbitrary code: pass --allow-pickle if you trust it"
            ) from None
        content = _load_full_pickle(path)
    except Exception as exc:
        raise SourceError(f"cannot read {path} as a PyTorch file: {one_line(exc)}") from exc
    module = _module_from_pickle(content, path)
    return _file_source(path, module, "pickle", type(module).__name__)


def _file_source(
    path: Path,
    module: torch.nn.Module,
    kind: str,
    architecture: str,
    *,
    examples: dict[str, torch.Tensor] | None = None,
    names: list[str] | None = None,
    dynamic_dims: dict[str, dict[int, str]] | None = None,
) -> LoadedSource:
    """The LoadedSource for a model read from one file; without ``names``, forward's required parameters."""
    if names is None:
        _, names = named_examples(module, None, str(path))
    return LoadedSource(
        module=eval_mode(module),
        example_inputs=examples,
        kind=kind,
        ref=str(path),
        sha256=file_sha256(path),
        input_names=names,
        dynamic_dims=dynamic_dims,
        metadata={"architecture": architecture},
    )


def _load_full_pickle(path: Path) -> Any:
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as exc:
        raise SourceError(
            f"cannot unpickle {path}: the model's class is not importable here ({one_line(exc)})"
        ) from exc
    except Exception as exc:
        raise SourceError(f"cannot read {path} as a pickled model: {one_line(exc)}") from exc


def _module_from_pickle(content: Any, path: Path) -> torch.nn.Module:
    import torch

    if isinstance(content, torch.nn.Module):
        return content
    if isinstance(content, dict) and isinstance(content.get("model"), torch.nn.Module):
        return content["model"]  # a training checkpoint that stores the whole model
    if isinstance(content, dict):
        raise SourceError(
            f"{path} holds a state_dict (weights only), which has no architecture: give a FILE.py:FUNCTION "
            "that builds the model and loads it"
        )
    raise SourceError(f"{path} holds a {type(content).__name__}, not a model")
