"""A deep MobileNet-like CNN with random weights whose outputs are in the hundreds.

Sixteen conv/BN/ReLU blocks (depthwise and pointwise, with stride), randomized BN statistics, weights scaled so
activations grow layer by layer. Outputs this large make summation order visible: AVX2 and AVX-512 kernels give
absolute differences around 1e-3 on a correct conversion, which an element-wise fp32 tolerance mistakes for a
wrong model. The gate must judge error relative to the output's scale.
"""

from __future__ import annotations

import torch
from torch import nn

_CHANNELS = (16, 24, 24, 32, 32, 48, 48, 64)


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    """Depthwise 3x3 then pointwise 1x1, each followed by BN and ReLU: two conv/BN layers."""
    return [
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class DeepCNN(nn.Module):
    """x: float32[batch, 3, 32, 32] -> [batch, 100]; 17 conv layers, 17 BN layers."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, _CHANNELS[0], 3, padding=1, bias=False), nn.BatchNorm2d(_CHANNELS[0])]
        layers.append(nn.ReLU())
        for i, (cin, cout) in enumerate(zip(_CHANNELS, (*_CHANNELS[1:], _CHANNELS[-1]), strict=True)):
            layers += _block(cin, cout, stride=2 if i in (1, 3, 5) else 1)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(_CHANNELS[-1], 100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def _randomize(model: nn.Module) -> None:
    """Weights that make activations grow (outputs in the hundreds) and non-trivial BN statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, 1.6 / fan_in**0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.8, 1.4)
                m.bias.uniform_(0.0, 0.3)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 3.0)
                m.bias.uniform_(-1.0, 1.0)


def make() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The network in eval mode and one example batch of 2 images."""
    torch.manual_seed(0)
    model = DeepCNN()
    _randomize(model)
    return model.eval(), (torch.randn(2, 3, 32, 32),)
