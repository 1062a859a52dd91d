"""Wide ResNet (Zagoruyko & Komodakis 2016), WRN-28-10 as in the paper.

Stages: conv3x3 + block1 | block2 | block3; head: BN-ReLU-pool-linear. Dropout off (as the paper).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from mmix_eval.errors import UserError
from mmix_eval.models.base import Normalize, StagedNet
from mmix_eval.models.preactresnet import Head


class WideBasic(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (self.shortcut(x) if self.shortcut is not None else x)


class WideResNet(StagedNet):
    def __init__(self, depth, widen, num_classes, in_channels, mean, std, dropout=0.0):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise UserError(f"wide resnet depth: expected 6n+4 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.normalize = Normalize(mean, std)
        stages, in_planes = [], widths[0]
        for i, w in enumerate(widths[1:]):
            blocks = []
            for j in range(n):
                blocks.append(WideBasic(in_planes, w, stride=2 if (i > 0 and j == 0) else 1, dropout=dropout))
                in_planes = w
            stages.append(nn.Sequential(*blocks))
        stages[0] = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), *stages[0])
        self.stages = nn.ModuleList(stages)
        self.head = Head(in_planes, num_classes)


def wrn28_10(num_classes, in_channels, mean, std, dropout: float = 0.0):
    return WideResNet(28, 10, num_classes, in_channels, mean, std, dropout)


def wrn(num_classes, in_channels, mean, std, depth: int = 16, widen: int = 4, dropout: float = 0.0):
    return WideResNet(depth, widen, num_classes, in_channels, mean, std, dropout)
