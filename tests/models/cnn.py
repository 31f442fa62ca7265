"""A small CNN with the layers image models are made of (Conv/BN/ReLU/MaxPool/AdaptiveAvgPool/Linear).

BatchNorm running statistics are randomized with a fixed seed, so a conversion that mishandles BN (or folds
it wrongly) shows up as a fidelity failure instead of hiding behind identity statistics.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a linear classifier over x: float32[batch, 3, 32, 32] -> [batch, 10]."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _randomize_batchnorm(model: nn.Module) -> None:
    """Give every BN non-trivial statistics and affine parameters."""
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)


def make() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The CNN in eval mode (BN uses its running stats) and one example batch of 2 images."""
    torch.manual_seed(0)
    model = SmallCNN()
    _randomize_batchnorm(model)
    return model.eval(), (torch.randn(2, 3, 32, 32),)
