"""A small transformer encoder: token ids and an attention mask in, one masked-mean-pooled vector out.

It has the shape of a text embedding model (int64 inputs, a padding mask, symbolic batch and seq) at a size
that converts in a second. ``make_float`` is the same encoder fed float embeddings directly.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 100
D_MODEL = 32


def _encoder() -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(D_MODEL, nhead=2, dim_feedforward=64, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9)


class TinyTextEncoder(nn.Module):
    """Embedding + learned positions + TransformerEncoder + masked mean: [batch, seq] ids -> [batch, 32]."""

    def __init__(self, vocab: int = VOCAB, max_len: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, D_MODEL)
        self.pos = nn.Parameter(torch.randn(max_len, D_MODEL) * 0.02)
        self.encoder = _encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.pos[: input_ids.shape[1]]
        hidden = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        return _masked_mean(hidden, attention_mask)


class TinyFloatEncoder(nn.Module):
    """The same encoder over float inputs x: float32[batch, seq, 32] -> [batch, 32] (mean over seq)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _encoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(dim=1)


def make() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """The token encoder in eval mode, with input_ids int64[2, 12] and an all-ones attention_mask."""
    torch.manual_seed(0)
    model = TinyTextEncoder().eval()
    input_ids = torch.randint(0, VOCAB, (2, 12), dtype=torch.int64)
    return model, (input_ids, torch.ones(2, 12, dtype=torch.int64))


def make_float() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The float encoder in eval mode, with x float32[2, 12, 32]."""
    torch.manual_seed(0)
    return TinyFloatEncoder().eval(), (torch.randn(2, 12, D_MODEL),)
