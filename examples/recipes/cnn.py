"""A small image classifier for the CNN recipe: x float32[batch, 1, 8, 8] (scikit-learn's digits) -> logits.

Weights come from a fixed seed and the BatchNorm statistics are made non-trivial, so the recipe's INT8 variant has
something real to get right; ``make`` is the factory the recipe names (``cnn.py:make``).
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two conv blocks and a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def make() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The CNN in eval mode and an example batch of 2 images."""
    torch.manual_seed(0)
    model = DigitsCNN()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval(), (torch.rand(2, 1, 8, 8),)
