"""Data-aware importance for transformer FFN neurons and attention heads: how much each adds to its layer's output.

Weight magnitude cannot see that a neuron with large weights rarely fires, or fires only on padding. On real
text, what a unit contributes to the residual stream is its activation times its outgoing weights: for FFN
neuron j, the root mean square over tokens of a_j (after the intermediate activation) times the norm of the
down projection's column j; for a head, the root mean square over tokens of the norm of its context vector
through its slice of the output projection. Both are the RMS size of the vector the unit adds to the output.
The RMS beat the mean of |a_j| on MiniLM at half the FFN (cosine to the unpruned model before distillation
0.810 vs 0.788 on corpus evaluation text, 0.780 vs 0.750 on generated sentences): a neuron that fires rarely
but strongly matters more than its mean says. Padding tokens (``attention_mask`` 0) do not count. The model
runs with autograd on (nothing is trained) because torch's fused encoder fast path, taken under ``no_grad``,
skips the very layers the hooks watch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from edgekit.converters.prune.common import failing_layer, run_module
from edgekit.converters.prune.transformer import HeadUnit, PrunedMultiheadAttention, Units
from edgekit.errors import InputError

MASK = "attention_mask"


def activation_scores(
    model: nn.Module, units: Units, data: Iterable[dict[str, torch.Tensor]], *, heads: bool, ffn: bool
) -> dict[str, torch.Tensor]:
    """Per FFN (keyed by its up projection's name) one score per neuron, per attention unit (keyed by its name)
    one score per head, each the RMS size of the unit's contribution to the output on ``data``."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, float] = {}
    state: dict[str, torch.Tensor | None] = {MASK: None}
    swapped = _unpacked(units.attention) if heads else []
    handles = []
    try:
        if ffn:
            handles += [u.down.register_forward_pre_hook(_ffn_hook(u.up_name, state, sums, counts)) for u in units.ffn]
        if heads:
            handles += [_head_out(u, swapped).register_forward_pre_hook(_head_hook(u, state, sums, counts))
                        for u in units.attention]  # fmt: skip
        batches = _run(model, data, state)
    finally:
        for h in handles:
            h.remove()
        _restore(swapped)
    if batches == 0:
        raise InputError("activation importance got no data batches")
    scores = {k: (v / max(counts[k], 1.0)).sqrt() for k, v in sums.items()}  # RMS over real tokens
    if ffn:
        for u in units.ffn:
            if u.up_name not in scores:
                raise InputError(f"activation importance: FFN {u.name!r} never ran on the data")
            scores[u.up_name] = scores[u.up_name] * u.down.weight.detach().norm(dim=0)
    return scores


def _run(model: nn.Module, data: Iterable[dict[str, torch.Tensor]], state: dict[str, Any]) -> int:
    """Every batch through the model with autograd on (no fused fast path) and nothing kept but the hooks' sums."""
    batches = 0
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(True)
        for batch in data:
            state[MASK] = batch.get(MASK)
            with failing_layer(model, "computing activation importance"), torch.enable_grad():
                run_module(model, batch)
            batches += 1
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
    return batches


def _token_weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """1 for real tokens, 0 for padding, shaped like ``x``'s leading axes (batch-first or sequence-first)."""
    lead = tuple(x.shape[:-1])
    if mask is not None and x.ndim == 3:
        if tuple(mask.shape) == lead:
            return mask.to(x.dtype)
        if tuple(mask.T.shape) == lead:
            return mask.T.to(x.dtype)
    return torch.ones(lead, dtype=x.dtype)


def _add(sums: dict[str, torch.Tensor], counts: dict[str, float], key: str, total: torch.Tensor, n: float) -> None:
    sums[key] = sums[key] + total if key in sums else total
    counts[key] = counts.get(key, 0.0) + n


def _ffn_hook(key: str, state: dict[str, Any], sums: dict, counts: dict) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        w = _token_weights(x, state[MASK])
        _add(sums, counts, key, (x * x * w.unsqueeze(-1)).reshape(-1, x.shape[-1]).sum(0), float(w.sum()))

    return hook


def _head_hook(unit: HeadUnit, state: dict[str, Any], sums: dict, counts: dict) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        ctx = args[0].detach()
        per_head = ctx.unflatten(-1, (unit.heads, unit.head_dim))  # [..., heads, head_dim]
        weight = module.weight.detach().unflatten(1, (unit.heads, unit.head_dim))  # [out, heads, head_dim]
        squares = torch.einsum("...hd,ohd->...ho", per_head, weight).square().sum(dim=-1)  # [..., heads]
        w = _token_weights(ctx, state[MASK])
        _add(sums, counts, unit.name, (squares * w.unsqueeze(-1)).reshape(-1, unit.heads).sum(0), float(w.sum()))

    return hook


def _unpacked(attention: list[HeadUnit]) -> list[tuple[HeadUnit, PrunedMultiheadAttention]]:
    """nn.MultiheadAttention never calls its out_proj module: for scoring, swap in the same attention with all
    heads kept (it computes the same) so the output projection's input can be watched."""
    swapped = []
    for unit in attention:
        if unit.style == "mha" and unit.parent is not None:
            stand_in = PrunedMultiheadAttention(unit.attention, list(range(unit.heads))).eval()
            setattr(unit.parent[0], unit.parent[1], stand_in)
            swapped.append((unit, stand_in))
    return swapped


def _head_out(unit: HeadUnit, swapped: list[tuple[HeadUnit, PrunedMultiheadAttention]]) -> nn.Module:
    for u, stand_in in swapped:
        if u is unit:
            return stand_in.out_proj
    return unit.out


def _restore(swapped: list[tuple[HeadUnit, PrunedMultiheadAttention]]) -> None:
    for unit, _ in swapped:
        assert unit.parent is not None
        setattr(unit.parent[0], unit.parent[1], unit.attention)
