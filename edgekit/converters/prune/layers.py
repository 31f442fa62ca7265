"""Whole encoder layers dropped, chosen by what removing each one does to the output on data, not by position.

Dropping a layer is the coarsest cut: it removes a whole attention block and FFN, so it also speeds up the
attention that thinning the FFN leaves alone. Which layers a model can spare is a property of the model, not of
their position (keeping every other layer is a habit, not a measurement), so the choice is greedy and measured:
each round runs the model on data once per remaining layer with that layer skipped, and removes the one whose
absence moves the output least (mean cosine to the unpruned output). Every round's measurements go into the plan.

The layer stack is the longest ``nn.ModuleList`` whose members are all of one class and each hold an FFN edgekit
knows (Hugging Face BERT-family ``encoder.layer``, ``nn.TransformerEncoder.layers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.converters.prune.common import failing_layer, run_module
from edgekit.converters.prune.transformer import find_units
from edgekit.errors import InputError


@dataclass
class LayerStack:
    """The encoder's repeated layers: where the list lives, so it can be replaced by a shorter one."""

    name: str  # qualified name of the ModuleList, e.g. "0.auto_model.encoder.layer"
    owner: nn.Module
    attribute: str
    layers: nn.ModuleList

    def layer_name(self, index: int) -> str:
        return f"{self.name}.{index}"

    def install(self, kept: Sequence[nn.Module]) -> None:
        """Replace the stack by ``kept`` (keeping the owner's layer count, where it has one, consistent)."""
        self.layers = nn.ModuleList(kept)
        setattr(self.owner, self.attribute, self.layers)
        if isinstance(self.owner, nn.TransformerEncoder):
            self.owner.num_layers = len(kept)


def find_layer_stack(model: nn.Module) -> LayerStack | None:
    """The longest ModuleList of same-class transformer layers (each with an FFN), or None."""
    named = dict(model.named_modules())
    best: LayerStack | None = None
    for name, module in named.items():
        if not isinstance(module, nn.ModuleList) or len(module) < 2 or not name:
            continue
        if len({type(m) for m in module}) != 1 or not all(find_units(m).ffn for m in module):
            continue
        owner_name, _, attribute = name.rpartition(".")
        if best is None or len(module) > len(best.layers):
            best = LayerStack(name=name, owner=named[owner_name], attribute=attribute, layers=module)
    return best


def drop_layers(model: nn.Module, count: int, data: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Remove ``count`` layers of ``model``'s encoder in place, each round the one the output misses least.

    Returns the plan: the stack, which original layers were dropped and kept, and every round's measured mean
    cosine of the output without each candidate layer (keyed by its original index).
    """
    stack = find_layer_stack(model)
    if stack is None:
        raise InputError(
            "--drop-layers needs a transformer encoder with a list of layers edgekit knows (BERT-family, "
            "torch.nn.TransformerEncoder); this model has none"
        )
    total = len(stack.layers)
    if not 0 < count < total:
        raise InputError(f"--drop-layers must be between 1 and {total - 1} for this {total}-layer encoder, got {count}")
    if not data:
        raise InputError("--drop-layers measures each layer's effect on data and got none")
    original = list(stack.layers)
    reference = _outputs(model, data)
    kept, rounds = list(range(total)), []
    try:
        for _ in range(count):
            effects = {}
            for index in kept:
                stack.install([original[i] for i in kept if i != index])
                effects[index] = _mean_cosine(reference, _outputs(model, data))
            dropped = max(kept, key=lambda i: (effects[i], -i))  # ties: the earlier layer goes
            kept.remove(dropped)
            without = {str(i): round(v, 5) for i, v in effects.items()}
            rounds.append({"dropped": dropped, "mean_cosine_without": without})
    finally:
        stack.install([original[i] for i in kept])
    return {
        "stack": stack.name,
        "layers_before": total,
        "dropped": sorted(r["dropped"] for r in rounds),
        "kept": kept,
        "rounds": rounds,
        "mean_cosine_after": rounds[-1]["mean_cosine_without"][str(rounds[-1]["dropped"])],
        "samples": sum(_rows(b) for b in data),
        "chosen_by": "greedy: each round drops the layer whose absence moves the output least (mean cosine)",
    }


def layer_pairs(stack_name: str, kept: Sequence[int]) -> list[tuple[str, str]]:
    """(student layer, teacher layer) names for intermediate-layer losses: student layer j is teacher ``kept[j]``."""
    return [(f"{stack_name}.{j}", f"{stack_name}.{t}") for j, t in enumerate(kept)]


def _rows(feeds: dict[str, torch.Tensor]) -> int:
    return len(next(iter(feeds.values())))


def _outputs(model: nn.Module, data: Sequence[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """The first output per batch, one flattened row per sample (padding included: same inputs both sides)."""
    rows = []
    with failing_layer(model, "measuring a layer's effect"), torch.no_grad():
        for feeds in data:
            out = run_module(model, feeds)[0].float()
            rows.append(out.reshape(out.shape[0], -1))
    return rows


def _mean_cosine(reference: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    cos = [F.cosine_similarity(r, g, dim=1, eps=1e-12) for r, g in zip(reference, got, strict=True)]
    return float(torch.cat(cos).mean())
