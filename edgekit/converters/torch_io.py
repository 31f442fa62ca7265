"""Moving feeds between numpy and torch, running a module, and making inputs at other sizes.

Shared by export (probing which dims can vary), validation (torch reference) and bench (torch baseline).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import ExportError
from edgekit.specs import TensorSpec

if TYPE_CHECKING:
    import torch


def to_numpy_feeds(feeds: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in feeds.items()}


def to_torch_feeds(feeds: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}


def flatten_outputs(result: Any) -> list[torch.Tensor]:
    """A module's return value as a flat list of tensors (tensor, tuple/list, dict or ModelOutput)."""
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, Mapping):
        return [t for v in result.values() for t in flatten_outputs(v)]
    if isinstance(result, list | tuple):
        return [t for v in result for t in flatten_outputs(v)]
    if result is None:
        return []
    raise ExportError(f"model returned {type(result).__name__}; edgekit exports tensors, tuples or dicts of tensors")


def output_keys(result: Any) -> list[str] | None:
    """Names for outputs when the module returns a flat dict of tensors."""
    import torch

    if isinstance(result, Mapping) and all(isinstance(v, torch.Tensor) for v in result.values()):
        return [str(k) for k in result]
    return None


def call_args(module: torch.nn.Module, feeds: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional args when the feeds are a prefix of ``forward``'s parameters, else keyword args.

    Positional calls work for modules that accept no keywords (``ExportedProgram.module()``, TorchScript);
    keywords keep a call right when the feeds skip an optional parameter in the middle.
    """
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return tuple(feeds.values()), {}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in params if p.kind in positional]
    if not names and any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return tuple(feeds.values()), {}
    if set(feeds) <= set(names):
        ordered = sorted(feeds, key=names.index)
        if ordered == names[: len(ordered)]:
            return tuple(feeds[k] for k in ordered), {}
    return (), dict(feeds)


def run_torch(module: torch.nn.Module, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Run ``module(**feeds)`` under ``inference_mode`` and return float outputs by name as numpy."""
    import torch

    args, kwargs = call_args(module, to_torch_feeds(feeds))
    with torch.inference_mode():
        result = module(*args, **kwargs)
    tensors = flatten_outputs(result)
    if len(tensors) != len(names):
        raise ExportError(f"model returned {len(tensors)} outputs, expected {len(names)} ({', '.join(names)})")
    return {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=True)}


def value_ranges(feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """Inclusive value range of each integer feed, so resized inputs stay in the range the model saw."""
    return {
        k: (int(v.min()), int(v.max()))
        for k, v in feeds.items()
        if v.dtype.kind in "iub" and v.size and v.dtype != bool
    }


def feeds_at_sizes(
    specs: Sequence[TensorSpec],
    example: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    int_ranges: Mapping[str, tuple[int, int]],
    seed: int,
) -> dict[str, np.ndarray]:
    """Fresh random feeds shaped like ``example`` with symbolic dims set to ``sizes``.

    Floats keep the example's mean and spread; integers stay in ``int_ranges`` (else the example's range).
    """
    rng = np.random.default_rng(seed)
    ranges = {**value_ranges(example), **int_ranges}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        ref = example[spec.name]
        shape = tuple(
            sizes.get(d, ref.shape[i]) if isinstance(d, str) else ref.shape[i] for i, d in enumerate(spec.shape)
        )
        if ref.dtype.kind == "f":
            std = float(ref.std()) if ref.size > 1 else 1.0
            out[spec.name] = (rng.standard_normal(shape) * (std or 1.0) + float(ref.mean())).astype(ref.dtype)
        elif ref.dtype == bool:
            out[spec.name] = (
                rng.integers(0, 2, shape).astype(bool) if ref.any() != ref.all() else np.full(shape, ref.flat[0])
            )
        else:
            lo, hi = ranges.get(spec.name, (0, 1))
            out[spec.name] = rng.integers(lo, hi + 1, shape).astype(ref.dtype)
    return out
