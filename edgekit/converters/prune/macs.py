"""MAC counts for attention modules Torch-Pruning's counter does not know: their matmuls are real work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.converters.prune.common import Counter
from edgekit.converters.prune.transformer import PrunedMultiheadAttention, is_bert_self_attention

if TYPE_CHECKING:
    from torch import nn


def attention_counters(model: nn.Module) -> dict[type, Counter]:
    """MAC counters for the attention modules the counter does not know (their matmuls are real work)."""
    counters: dict[type, Counter] = {PrunedMultiheadAttention: _pruned_mha_macs}
    for m in model.modules():
        if is_bert_self_attention(m):
            counters[type(m)] = _bert_attention_macs
    return counters


def _attention_core(heads: int, head_dim: int, q_len: int, k_len: int) -> int:
    """QK^T, softmax and AV, as Torch-Pruning counts them for nn.MultiheadAttention."""
    return heads * (q_len * k_len * head_dim + q_len * k_len + q_len * k_len * head_dim)


def _bert_attention_macs(module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
    hidden = inputs[0]
    batch, seq, width = hidden.shape[0], hidden.shape[1], hidden.shape[-1]
    inner = module.all_head_size
    macs = 3 * seq * (width * inner + inner) + _attention_core(
        module.num_attention_heads, module.attention_head_size, seq, seq
    )
    module.__flops__ += int(macs * batch)


def _pruned_mha_macs(module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
    """The nn.MultiheadAttention formula of Torch-Pruning's counter with the pruned inner width."""
    query, key = inputs[0], inputs[1]
    seq_axis = 1 if module.batch_first or query.dim() == 2 else 0
    batch = 1 if query.dim() == 2 else query.shape[1 - seq_axis]
    q_len, k_len, width = query.shape[seq_axis], key.shape[seq_axis], query.shape[-1]
    inner = module.num_heads * module.head_dim
    macs = q_len * inner + (q_len + 2 * k_len) * width * inner + (q_len + 2 * k_len) * inner
    macs += _attention_core(module.num_heads, module.head_dim, q_len, k_len) + q_len * inner * width + q_len * width
    module.__flops__ += int(macs * batch)
