"""The people network: a small trunk to 1/4 of the input, dilated layers that see a whole
person, and three heads read at every cell: the centre belief, the box size, the centre's
offset within the cell (CPM's person-centre map with CenterNet's box read-out)."""

from __future__ import annotations

import math

import torch
from torch import nn

STRIDE = 4  # input pixels per output cell


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Context(nn.Module):
    """A residual dilated 3x3 layer: the receptive field grows to the size of a person."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.layer = conv_bn(channels, channels, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer(x)


def head(cin: int, cout: int, bias: float = 0.0) -> nn.Sequential:
    out = nn.Conv2d(cin // 2, cout, 1)
    nn.init.constant_(out.bias, bias)
    return nn.Sequential(nn.Conv2d(cin, cin // 2, 3, padding=1), nn.ReLU(inplace=True), out)


class PeopleNet(nn.Module):
    """Image (N, 3, S, S) in [-0.5, 0.5] -> centre logits (N, 1, S/4, S/4), log box size in
    cells (N, 2, ...) as (width, height), centre offset in cells (N, 2, ...)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            conv_bn(3, w // 2, stride=2),
            conv_bn(w // 2, w),
            conv_bn(w, 2 * w, stride=2),
            *(Context(2 * w, d) for d in (1, 2, 4, 8)),
        )
        # a centre is rare: start near "nobody here" (CenterNet's prior of 0.1)
        self.centre = head(2 * w, 1, bias=-math.log(9.0))
        self.size = head(2 * w, 2)
        self.offset = head(2 * w, 2)

    def forward(self, x: torch.Tensor):
        features = self.trunk(x)
        return self.centre(features), self.size(features), self.offset(features)
