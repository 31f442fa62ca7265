"""Attention heads and FFN neurons of transformer encoders, removed by slicing the projections directly.

Why not Torch-Pruning's graph here: it would also shrink the hidden size (residual stream, embeddings,
LayerNorms) unless every such layer is fenced off, and it cannot see that HF attention reshapes by head.
Heads and FFN neurons are self-contained groups whose members we know by name, so we score and slice them
ourselves (with Torch-Pruning's Linear pruning functions) and keep the module attributes consistent:

- Hugging Face BERT-family (BertSelfAttention layout: ``query``/``key``/``value`` with ``num_attention_heads``,
  ``attention_head_size``, ``all_head_size``; ``attention.output.dense``; ``intermediate.dense`` ->
  ``output.dense``). The shared ``config`` still describes the unpruned model (layers may now differ);
  the per-layer shapes live in the modules and in the plan.
- ``torch.nn.MultiheadAttention`` (packed ``in_proj``): torch computes its head size as embed_dim / num_heads,
  so fewer heads cannot live in it. A layer that loses heads gets :class:`PrunedMultiheadAttention`, same call
  signature, separate q/k/v projections of the kept heads. ``nn.TransformerEncoderLayer``'s ``linear1`` ->
  ``linear2`` is the FFN. The fused and nested-tensor fast paths are off for pruned attention (they assume the
  packed layout), so padded positions get computed values instead of the nested path's zeros, as in export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from edgekit.converters.prune.common import element_scores, layer_error
from edgekit.errors import InputError

if TYPE_CHECKING:
    from edgekit.converters.prune.common import Grads
    from edgekit.converters.prune.options import PruneOptions

_ATTENTION_WORD = "attention"


class PrunedMultiheadAttention(nn.Module):
    """nn.MultiheadAttention with some heads removed: q/k/v project to kept_heads * head_dim, not embed_dim.

    Returns ``(output, None)``: attention weights are not computed (TransformerEncoderLayer never asks).
    """

    in_proj_weight = None  # keeps TransformerEncoderLayer off its fused path, which needs the packed layout
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(self, mha: nn.MultiheadAttention, kept_heads: list[int]) -> None:
        super().__init__()
        self.embed_dim, self.head_dim, self.batch_first = mha.embed_dim, mha.head_dim, mha.batch_first
        self.num_heads, self.original_heads, self.kept_heads = len(kept_heads), mha.num_heads, tuple(kept_heads)
        self.dropout = float(mha.dropout)
        rows = _head_rows(kept_heads, self.head_dim)
        e, w, b = self.embed_dim, mha.in_proj_weight.detach(), mha.in_proj_bias
        self.q_proj = _linear(w[rows], None if b is None else b.detach()[rows])
        self.k_proj = _linear(w[e + rows], None if b is None else b.detach()[e + rows])
        self.v_proj = _linear(w[2 * e + rows], None if b is None else b.detach()[2 * e + rows])
        out_bias = mha.out_proj.bias
        self.out_proj = _linear(mha.out_proj.weight.detach()[:, rows], None if out_bias is None else out_bias.detach())

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        mask = self._additive_mask(key_padding_mask, attn_mask, q)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if unbatched:
            return out.squeeze(0), None
        return (out if self.batch_first else out.transpose(0, 1)), None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, heads * head_dim] -> [batch, heads, seq, head_dim]."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _additive_mask(
        self, key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None, q: torch.Tensor
    ) -> torch.Tensor | None:
        """Both masks as one float mask to add to the scores, as nn.MultiheadAttention merges them."""
        mask = None
        if attn_mask is not None:
            mask = _as_additive(attn_mask, q.dtype)
            if mask.dim() == 3:  # [batch * original heads, L, S]: keep the kept heads' masks
                mask = mask.unflatten(0, (-1, self.original_heads))[:, list(self.kept_heads)]
        if key_padding_mask is not None:
            padding = _as_additive(key_padding_mask, q.dtype)[:, None, None, :]
            mask = padding if mask is None else mask + padding
        return mask


def _as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads]).long()


def is_bert_self_attention(m: object) -> bool:
    """The BertSelfAttention layout (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM...), found by attributes."""
    linears = [getattr(m, n, None) for n in ("query", "key", "value")]
    if not isinstance(m, nn.Module) or not all(isinstance(x, nn.Linear) for x in linears):
        return False
    sizes = [getattr(m, n, None) for n in ("num_attention_heads", "attention_head_size", "all_head_size")]
    if not all(isinstance(s, int) for s in sizes):
        return False
    heads, head_dim, width = sizes
    return heads * head_dim == width and all(x.out_features == width for x in linears)


@dataclass
class HeadUnit:
    """One attention module's heads: where its q/k/v rows and output columns are, and how to cut it."""

    name: str
    style: str  # "bert" | "mha" | "pruned"
    attention: nn.Module
    out: nn.Linear
    projections: list[tuple[str, int]]  # (weight's parameter name, first row of this unit's q/k/v)
    out_weight: str
    heads: int
    head_dim: int
    members: list[str]
    parent: tuple[nn.Module, str] | None = None


@dataclass
class FfnUnit:
    """One FFN: the up projection's rows and the down projection's columns are its neurons."""

    name: str
    up: nn.Linear
    down: nn.Linear
    up_name: str
    down_name: str


@dataclass
class Units:
    attention: list[HeadUnit] = field(default_factory=list)
    ffn: list[FfnUnit] = field(default_factory=list)
    unknown: list[tuple[str, nn.Module, str]] = field(default_factory=list)  # attention we cannot prune


def find_units(model: nn.Module) -> Units:
    """Every head group and FFN edgekit knows how to prune, and attention modules it does not know."""
    units = Units()
    known: set[int] = set()
    named = dict(model.named_modules())
    for name, m in named.items():
        unit = _bert_heads(name, m) or _mha_heads(name, m, named)
        if unit is not None:
            units.attention.append(unit)
            known.update({id(unit.attention), id(m)})
        ffn = _ffn(name, m)
        if ffn is not None:
            units.ffn.append(ffn)
    for name, m in named.items():
        if id(m) in known or _ATTENTION_WORD not in type(m).__name__.lower() or m is model:
            continue
        if isinstance(m, nn.MultiheadAttention):
            units.unknown.append((name, m, "only self-attention with packed q/k/v of equal width and no bias_k"))
        elif not any(id(c) in known for c in m.modules()):
            units.unknown.append((name, m, "edgekit prunes heads of BERT-style and torch.nn.MultiheadAttention only"))
    return units


def _child(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _bert_heads(name: str, m: nn.Module) -> HeadUnit | None:
    inner, out = getattr(m, "self", None), getattr(getattr(m, "output", None), "dense", None)
    if not is_bert_self_attention(inner) or not isinstance(out, nn.Linear) or out.in_features != inner.all_head_size:
        return None
    s = _child(name, "self")
    qkv = [f"{s}.{p}" for p in ("query", "key", "value")]
    return HeadUnit(
        name=name, style="bert", attention=inner, out=out,
        projections=[(f"{q}.weight", 0) for q in qkv], out_weight=_child(name, "output.dense.weight"),
        heads=inner.num_attention_heads, head_dim=inner.attention_head_size,
        members=[*qkv, _child(name, "output.dense")],
    )  # fmt: skip


def _mha_heads(name: str, m: nn.Module, named: dict[str, nn.Module]) -> HeadUnit | None:
    parent_name, _, attr = name.rpartition(".")
    parent = (named[parent_name], attr) if name else None
    if isinstance(m, PrunedMultiheadAttention):
        projections = [(_child(name, f"{p}.weight"), 0) for p in ("q_proj", "k_proj", "v_proj")]
        style = "pruned"
    elif (
        isinstance(m, nn.MultiheadAttention)
        and m._qkv_same_embed_dim
        and m.in_proj_weight is not None
        and m.bias_k is None
        and not m.add_zero_attn
    ):
        e = m.embed_dim
        projections = [(_child(name, "in_proj_weight"), i * e) for i in range(3)]
        style = "mha"
    else:
        return None
    return HeadUnit(
        name=name, style=style, attention=m, out=m.out_proj, projections=projections,
        out_weight=_child(name, "out_proj.weight"), heads=m.num_heads, head_dim=m.head_dim, members=[name],
        parent=parent,
    )  # fmt: skip


def _ffn(name: str, m: nn.Module) -> FfnUnit | None:
    if isinstance(m, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
        up, down, names = m.linear1, m.linear2, ("linear1", "linear2")
    else:
        up = getattr(getattr(m, "intermediate", None), "dense", None)
        down = getattr(getattr(m, "output", None), "dense", None)
        names = ("intermediate.dense", "output.dense")
    if not isinstance(up, nn.Linear) or not isinstance(down, nn.Linear) or up.out_features != down.in_features:
        return None
    return FfnUnit(name=name, up=up, down=down, up_name=_child(name, names[0]), down_name=_child(name, names[1]))


def _touches(ignored: tuple[str, ...], members: list[str]) -> bool:
    """An ignored name covers a unit when it is one of its members, a parent of one, or inside one."""
    return any(m == ig or m.startswith(ig + ".") or ig.startswith(m + ".") or not ig for ig in ignored for m in members)


def prune_transformer(
    model: nn.Module, units: Units, options: PruneOptions, grads: Grads | None,
    activations: dict[str, torch.Tensor] | None = None,
) -> dict:  # fmt: skip
    """Remove ``options.heads`` of the heads and ``options.ffn`` of the FFN neurons; the plan's layer rows.

    ``activations`` (from :func:`edgekit.converters.prune.activation.activation_scores`) are the scores when
    importance is ``activation``: per FFN keyed by its up projection, per attention unit by its name.
    """
    ignored = options.ignored_layers
    for name, module, why in units.unknown:
        if not _touches(ignored, [name]):
            raise layer_error(name, module, f"{why}; add it to ignored_layers to leave it as is")
    params = dict(model.named_parameters())
    heads = [u for u in units.attention if not _touches(ignored, u.members)]
    ffns = [u for u in units.ffn if not _touches(ignored, [u.up_name, u.down_name])]
    rows: list[dict[str, Any]] = []
    if heads and options.heads > 0:
        scores = [_head_scores(u, params, options.importance, grads, activations) for u in heads]
        for unit, removed in zip(heads, removal_plan(scores, options.heads, options.global_pruning), strict=True):
            rows.append(_remove_heads(unit, removed))
        _disable_nested_fast_path(model)
    if ffns and options.ffn > 0:
        scores = [_ffn_scores(u, params, options.importance, grads, activations) for u in ffns]
        for unit, removed in zip(ffns, removal_plan(scores, options.ffn, options.global_pruning), strict=True):
            rows.append(_remove_neurons(unit, removed))
    notes = [
        "structured transformer pruning: whole attention heads and FFN neurons removed; hidden size unchanged",
    ]
    if any(u.style == "bert" for u in heads):
        notes.append("the model's config still gives the original head count and intermediate size")
    return {"method": "transformer heads and FFN neurons", "layers": rows, "notes": notes}


def _scores_of(name: str, params: dict[str, nn.Parameter], importance: str, grads: Grads | None) -> torch.Tensor:
    return element_scores(params[name], importance, None if grads is None else grads.get(name))


def _measured(activations: dict[str, torch.Tensor] | None, key: str) -> torch.Tensor:
    if activations is None or key not in activations:
        raise InputError(f"activation importance has no measurement for {key!r}; give data that reaches it")
    return activations[key]


def _head_scores(
    unit: HeadUnit, params: dict[str, nn.Parameter], importance: str, grads: Grads | None,
    activations: dict[str, torch.Tensor] | None,
) -> torch.Tensor:  # fmt: skip
    """Per head: measured contribution (activation), or its q/k/v rows plus output columns (Torch-Pruning's sum)."""
    if importance == "activation":
        return _measured(activations, unit.name)
    width = unit.heads * unit.head_dim
    total = torch.zeros(unit.heads)
    for weight, first in unit.projections:
        per_row = _scores_of(weight, params, importance, grads)[first : first + width].sum(dim=1)
        total += per_row.view(unit.heads, unit.head_dim).sum(dim=1)
    per_col = _scores_of(unit.out_weight, params, importance, grads).sum(dim=0)
    return total + per_col.view(unit.heads, unit.head_dim).sum(dim=1)


def _ffn_scores(
    unit: FfnUnit, params: dict[str, nn.Parameter], importance: str, grads: Grads | None,
    activations: dict[str, torch.Tensor] | None,
) -> torch.Tensor:  # fmt: skip
    if importance == "activation":
        return _measured(activations, unit.up_name)
    up = _scores_of(f"{unit.up_name}.weight", params, importance, grads).sum(dim=1)
    return up + _scores_of(f"{unit.down_name}.weight", params, importance, grads).sum(dim=0)


def removal_count(n: int, ratio: float) -> int:
    """How many of ``n`` to remove at ``ratio``: rounded half up, at least one kept."""
    return min(math.floor(n * ratio + 0.5), n - 1)


def removal_plan(scores: list[torch.Tensor], ratio: float, global_pruning: bool) -> list[list[int]]:
    """Indices to remove per layer: the lowest ``ratio`` of each layer, or of all layers ranked together (scores
    divided by their layer's mean, as Torch-Pruning normalizes) with at least one kept per layer."""
    if not global_pruning:
        return [sorted(torch.argsort(s, stable=True)[: removal_count(len(s), ratio)].tolist()) for s in scores]
    normalized = [s / s.mean().clamp_min(1e-12) for s in scores]
    ranked = sorted((float(v), li, i) for li, s in enumerate(normalized) for i, v in enumerate(s.tolist()))
    budget = math.floor(sum(len(s) for s in scores) * ratio + 0.5)
    removed: list[list[int]] = [[] for _ in scores]
    for _, li, i in ranked:
        if budget == 0:
            break
        if len(removed[li]) < len(scores[li]) - 1:
            removed[li].append(i)
            budget -= 1
    return [sorted(r) for r in removed]


def _remove_heads(unit: HeadUnit, removed: list[int]) -> dict[str, Any]:
    kept = [h for h in range(unit.heads) if h not in removed]
    row = {"name": unit.name, "unit": "heads", "before": unit.heads, "after": len(kept), "removed": removed,
           "kept": kept}  # fmt: skip
    if not removed:
        return row
    cut = _head_rows(removed, unit.head_dim).tolist()
    if unit.style == "mha":
        assert unit.parent is not None
        setattr(unit.parent[0], unit.parent[1], PrunedMultiheadAttention(unit.attention, kept))
        return row
    m = unit.attention
    for linear in (m.query, m.key, m.value) if unit.style == "bert" else (m.q_proj, m.k_proj, m.v_proj):
        tp.prune_linear_out_channels(linear, cut)
    tp.prune_linear_in_channels(unit.out, cut)
    if unit.style == "bert":
        m.num_attention_heads, m.all_head_size = len(kept), len(kept) * unit.head_dim
    else:
        m.num_heads, m.kept_heads = len(kept), tuple(m.kept_heads[h] for h in kept)
    return row


def _remove_neurons(unit: FfnUnit, removed: list[int]) -> dict[str, Any]:
    """Slice the neurons out; the row keeps which ones stayed (the plan, reproducible from the manifest)."""
    before = unit.up.out_features
    removed_set = set(removed)
    kept = [i for i in range(before) if i not in removed_set]
    if removed:
        tp.prune_linear_out_channels(unit.up, removed)
        tp.prune_linear_in_channels(unit.down, removed)
    return {"name": unit.name, "unit": "ffn_neurons", "before": before, "after": unit.up.out_features, "kept": kept}


def _disable_nested_fast_path(model: nn.Module) -> None:
    """TransformerEncoder's nested-tensor path reads the packed in_proj of its first layer."""
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder) and any(
            isinstance(layer.self_attn, PrunedMultiheadAttention) for layer in m.layers
        ):
            m.use_nested_tensor = False
