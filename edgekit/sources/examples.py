"""Example inputs keyed by ``forward``'s parameter names, for plain and TorchScript modules alike."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from edgekit.errors import SourceError

if TYPE_CHECKING:
    import torch

_POS, _EMPTY = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty


def forward_params(model: torch.nn.Module) -> list[inspect.Parameter]:
    """``forward``'s named parameters (no self, *args or **kwargs), for plain and TorchScript modules."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        args = model.forward.schema.arguments[1:]  # the first is self, whatever its name
        return [
            inspect.Parameter(a.name, _POS, default=a.default_value if a.has_default_value() else _EMPTY) for a in args
        ]
    named = (_POS, inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in inspect.signature(model.forward).parameters.values() if p.kind in named]


def forward_names(model: torch.nn.Module) -> list[str]:
    """The names of ``forward``'s named parameters, in order."""
    return [p.name for p in forward_params(model)]


def named_examples(model: torch.nn.Module, raw: Any, label: str) -> tuple[dict[str, torch.Tensor] | None, list[str]]:
    """Key example inputs by ``forward``'s parameter names, in forward order; also the input names used."""
    import torch

    params = forward_params(model)
    names = [p.name for p in params]
    if raw is None:
        required = [p.name for p in params if p.default is inspect.Parameter.empty]
        return None, required or names
    if isinstance(raw, torch.Tensor):
        raw = (raw,)
    if isinstance(raw, (tuple, list)):
        positional = [p.name for p in params if p.kind != inspect.Parameter.KEYWORD_ONLY]
        if len(raw) > len(positional):
            raise SourceError(
                f"{label} gave {len(raw)} example inputs but {type(model).__name__}.forward takes "
                f"{len(positional)} ({', '.join(positional) or 'none'})"
            )
        raw = dict(zip(positional, raw, strict=False))  # length checked above
    if not isinstance(raw, dict):
        raise SourceError(f"{label}: example inputs must be a tuple or dict of tensors, not {type(raw).__name__}")
    return _check_examples(raw, params, model, label)


def _check_examples(
    raw: dict[str, Any], params: list[inspect.Parameter], model: torch.nn.Module, label: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    import torch

    names = [p.name for p in params]
    for key, value in raw.items():
        if key not in names:
            raise SourceError(
                f"{label}: example input {key!r} is not a parameter of {type(model).__name__}.forward "
                f"({', '.join(names) or 'none'})"
            )
        if not isinstance(value, torch.Tensor):
            raise SourceError(f"{label}: example input {key!r} is a {type(value).__name__}, not a torch.Tensor")
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in raw]
    if missing:
        raise SourceError(f"{label}: example inputs miss forward parameter {missing[0]!r}")
    ordered = {name: raw[name] for name in names if name in raw}
    return ordered, list(ordered)
