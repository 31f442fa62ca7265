"""A text model that takes a shortcut when the attention mask is all ones, as some real models do.

``if attention_mask.all(): ...`` is data-dependent Python control flow: a traced export bakes in whichever
branch the example took. With an all-ones example mask the exported model ignores the mask altogether, which
every all-ones test input confirms as correct. Only padded inputs show the difference.
"""

from __future__ import annotations

import torch
from torch import nn


class SkipsFullMask(nn.Module):
    """Mean-pooled token embeddings: input_ids int64[batch, seq], attention_mask int64[batch, seq] -> [batch, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)
        if bool(attention_mask.all()):  # the shortcut: no masking needed when nothing is padded
            return hidden.mean(dim=1) * attention_mask.amax(dim=1, keepdim=True).to(hidden.dtype)  # (x 1)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


def make() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    ids = torch.randint(1, 100, (2, 10), dtype=torch.int64)
    return SkipsFullMask().eval(), (ids, torch.ones(2, 10, dtype=torch.int64))
