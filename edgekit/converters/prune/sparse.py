"""Unstructured and 2:4 semi-structured sparsity: zero the least important weights of Conv/Linear layers.

Masks are applied directly and are permanent (no torch.nn.utils.prune reparametrization left behind), so the
module exports as usual. Shapes never change, which is why prune.py's report says these save no dense compute.
2:4 follows NVIDIA's layout: in every 4 consecutive weights along the input-channel axis, 2 are zero.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgekit.converters.prune.common import element_scores

if TYPE_CHECKING:
    from edgekit.converters.prune.common import Grads
    from edgekit.converters.prune.options import PruneOptions

_TARGETS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def sparsify(model: nn.Module, options: PruneOptions, grads: Grads | None) -> dict[str, Any]:
    """Zero weights as ``options.kind`` says; per-layer and overall sparsity of the weights considered."""
    layers = _target_layers(model, options.ignored_layers)
    scores = {name: element_scores(m.weight, options.importance, _grad(grads, name)) for name, m in layers.items()}
    notes: list[str] = []
    if options.kind == "2:4":
        masks, skipped = _two_four_masks(layers, scores)
        if skipped:
            notes.append(f"2:4 skipped {len(skipped)} layer(s) whose input width is not a multiple of 4: {skipped}")
        if options.ratio != 0.5:
            notes.append("2:4 sparsity is always 50% of the layers it applies to; ratio is not used")
    elif options.global_pruning:
        masks = _global_masks(scores, options.ratio)
    else:
        masks = {name: _keep_top(s, options.ratio) for name, s in scores.items()}
    with torch.no_grad():
        for name, mask in masks.items():
            layers[name].weight.mul_(mask.to(layers[name].weight.dtype))
    rows = [_sparsity_row(name, m.weight) for name, m in layers.items()]
    zeros, total = sum(r["zeros"] for r in rows), sum(r["total"] for r in rows)
    return {
        "method": f"{options.kind} sparsity",
        "layers": rows,
        "sparsity": zeros / total if total else 0.0,
        "zero_weights": zeros,
        "notes": notes,
    }


def _grad(grads: Grads | None, layer: str) -> torch.Tensor | None:
    return None if grads is None else grads.get(f"{layer}.weight" if layer else "weight")


def _target_layers(model: nn.Module, ignored: tuple[str, ...]) -> dict[str, nn.Module]:
    def covered(name: str) -> bool:
        return any(name == ig or name.startswith(ig + ".") or not ig for ig in ignored)

    return {n: m for n, m in model.named_modules() if isinstance(m, _TARGETS) and not covered(n)}


def _keep_top(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Mask keeping all but the ``ratio`` lowest-scoring weights (rounded half up)."""
    k = math.floor(scores.numel() * ratio + 0.5)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        lowest = torch.argsort(scores.flatten(), stable=True)[:k]
        mask.view(-1)[lowest] = False
    return mask


def _global_masks(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """One threshold over all layers' raw scores (torch.nn.utils.prune.global_unstructured's rule)."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = _keep_top(flat, ratio)
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def _two_four_masks(
    layers: dict[str, nn.Module], scores: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    masks: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for name, s in scores.items():
        module = layers[name]
        in_axis_last = s if isinstance(module, nn.Linear) else s.movedim(1, -1)  # conv: [out, k..., in/groups]
        if in_axis_last.shape[-1] % 4:
            skipped.append(name)
            continue
        groups = in_axis_last.reshape(-1, 4)
        lowest = torch.argsort(groups, dim=1, stable=True)[:, :2]
        mask = torch.ones_like(groups, dtype=torch.bool).scatter_(1, lowest, False).view_as(in_axis_last)
        masks[name] = mask if isinstance(module, nn.Linear) else mask.movedim(-1, 1)
    return masks, skipped


def _sparsity_row(name: str, weight: torch.Tensor) -> dict[str, Any]:
    zeros, total = int((weight == 0).sum()), weight.numel()
    return {"name": name, "unit": "weights", "total": total, "zeros": zeros, "sparsity": round(zeros / total, 6)}
