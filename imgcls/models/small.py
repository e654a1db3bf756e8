"""imgcls' own small networks for CPU training: a ResNet-9-style layout (Myrtle.ai's DAWNBench network) at a
fraction of its width, with airbench's conv -> pool -> BN -> activation ordering.

``resnet8`` (base width 12: 24-48-96 channels, ≈0.23 M parameters, ≈11 M multiply-adds at 32×32) trains at over
1,000 img/s on two CPU cores (see docs/benchmarks.md); ``resnet8_wide`` doubles the width. There is no
full-resolution "prep" layer: the first conv pools at once, so every layer after it runs at a quarter of the
pixels or fewer. This module imports torch and is only imported by :mod:`imgcls.models.registry` when a model
is built; it registers its builders in the leaf :mod:`imgcls.models._registry`.
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models._registry import register_model


def _conv_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    """3×3 conv (no bias) -> [2×2 max-pool] -> BatchNorm -> GELU. Pooling before BN/GELU quarters their cost."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers += [nn.BatchNorm2d(cout), nn.GELU()]
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(ch, ch), _conv_bn(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet8(nn.Module):
    """[conv, pool] + residual -> [conv, pool] -> [conv, pool] + residual -> global max-pool -> linear.

    8 weight layers (7 convolutions and the classifier); the resolution halves three times (32 -> 4 at 32×32).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 12, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.width = w = width
        self.features = nn.Sequential(
            _conv_bn(in_chans, 2 * w, pool=True),
            _Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True),
            _conv_bn(4 * w, 8 * w, pool=True),
            _Residual(8 * w),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.drop(x))


@register_model
def resnet8(num_classes: int, in_chans: int = 3, width: int = 12, drop_rate: float = 0.0) -> nn.Module:
    """Narrow 8-layer residual network for CPU training at small input sizes."""
    return ResNet8(num_classes, in_chans, width=width, drop_rate=drop_rate)


@register_model
def resnet8_wide(num_classes: int, in_chans: int = 3, width: int = 24, drop_rate: float = 0.0) -> nn.Module:
    """The same network at twice the width (≈4× the compute) for a little more accuracy."""
    return ResNet8(num_classes, in_chans, width=width, drop_rate=drop_rate)
