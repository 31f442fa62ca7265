"""One SDPA attention layer with a boolean key-padding mask, masked-mean pooled: what Hugging Face encoders
export to with ``attn_implementation="sdpa"`` (the exporters wrap its softmax in a NaN guard)."""

from __future__ import annotations

import torch
from torch import nn


class SdpaEncoder(nn.Module):
    """input_ids int64[batch, seq], attention_mask int64[batch, seq] -> float32[batch, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.qkv = nn.Linear(16, 48)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 8).permute(2, 0, 3, 1, 4)
        keep = attention_mask[:, None, None, :].bool()
        h = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        h = h.transpose(1, 2).reshape(x.shape)
        w = attention_mask[..., None].to(h.dtype)
        return (h * w).sum(1) / w.sum(1).clamp(min=1e-9)


def make() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 7))
    return SdpaEncoder().eval(), (ids, torch.ones_like(ids))
