"""A wide MLP whose latency is its two big matrix products: pruning its hidden neurons clearly speeds it up.

The tiny test models are so small that launching a kernel costs more than its arithmetic, and pruning them
hardly moves their latency; a speed-up budget needs a model where it does (x: float32[batch, 64] -> [batch, 16]).
"""

from __future__ import annotations

import torch
from torch import nn

WIDTH = 1536


def make() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The MLP in eval mode and one example batch of 32."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 16))
    return model.eval(), (torch.randn(32, 64),)
