"""WideResNet-d-k for small images (Zagoruyko & Komodakis, 2016); timm only ships the ImageNet variant."""
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.registry import BACKBONES


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class WideResNet(nn.Module):
    class Spec(NamedTuple):
        depth: int
        widen_factor: int

    def __init__(self, depth: int = 28, widen_factor: int = 2, in_chans: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 16, 22, 28, 40), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        layers, cin = [], widths[0]
        for stage, cout in enumerate(widths[1:]):
            for i in range(n):
                layers.append(_Block(cin, cout, stride=(1 if stage == 0 or i else 2)))
                cin = cout
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.num_features = cin

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


for _depth, _k in ((28, 2), (28, 8), (16, 4)):
    BACKBONES.register(f"wide_resnet{_depth}_{_k}", WideResNet.Spec(_depth, _k),
                       aliases=("wideresnet",) if (_depth, _k) == (28, 2) else (), info=f"WideResNet-{_depth}-{_k}")
