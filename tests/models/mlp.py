"""A tiny MLP: the smallest model every stage must handle (Linear/ReLU/Linear on x: float32[batch, 16])."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Two linear layers with a ReLU between them."""

    def __init__(self, in_features: int = 16, hidden: int = 32, out_features: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def make() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The MLP in eval mode and one example batch of 2."""
    torch.manual_seed(0)
    model = MLP().eval()
    return model, (torch.randn(2, 16),)
