"""Pre-activation ResNets: the paper's PreActResNet18/34, exactly the official code's network, and He et
al.'s (2016) variant with a final BN-ReLU under its own name.

The official ``supervised/models/preresnet.py``: a 3x3 stem convolution (64 channels, no BN after it), four
stages of PreActBlocks (BN-ReLU-conv twice; where the shape changes a 1x1 convolution shortcut taken from the
first BN-ReLU's output), then ``avg_pool2d(4)`` and ``linear`` with **no final BN-ReLU**. That is
``preactresnet18`` / ``preactresnet34`` here (the pooling is global, which is ``avg_pool2d(4)`` on the 4x4
maps of 32x32 inputs). He et al.'s PreActResNet closes with BN-ReLU before pooling: ``preactresnet18_he`` /
``preactresnet34_he``; checkpoints written before 2026-12 used that head under the plain names and are read
as the ``_he`` models (``checkpoint.py``).

Stages: [normalize is separate] conv3x3 + layer1 | layer2 | layer3 | layer4; head: pool-linear (or
BN-ReLU-pool-linear). So mixing layer 1 is the output of the first residual stage and 2 of the second, as in
the paper and the official code (S = {0, 1, 2}).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from mmix_eval.models.base import Normalize, StagedNet


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class Head(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, h):
        h = F.relu(self.bn(h))
        return self.linear(F.adaptive_avg_pool2d(h, 1).flatten(1))


class PoolLinear(nn.Module):
    """The official PreActResNet's head: global average pooling, then the linear classifier."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, h):
        return self.linear(F.adaptive_avg_pool2d(h, 1).flatten(1))


class PreActResNet(StagedNet):
    def __init__(self, num_blocks, num_classes, in_channels, mean, std, width: int = 64, final_bn: bool = False):
        super().__init__()
        self.normalize = Normalize(mean, std)
        widths = [width, 2 * width, 4 * width, 8 * width]
        stages, in_planes = [], width
        for i, (w, n) in enumerate(zip(widths, num_blocks)):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(in_planes, w, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = w
            stages.append(nn.Sequential(*blocks))
        stages[0] = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), *stages[0])
        self.stages = nn.ModuleList(stages)
        self.head = Head(in_planes, num_classes) if final_bn else PoolLinear(in_planes, num_classes)


def preactresnet18(num_classes, in_channels, mean, std, width: int = 64):
    return PreActResNet([2, 2, 2, 2], num_classes, in_channels, mean, std, width)


def preactresnet34(num_classes, in_channels, mean, std, width: int = 64):
    return PreActResNet([3, 4, 6, 3], num_classes, in_channels, mean, std, width)


def preactresnet18_he(num_classes, in_channels, mean, std, width: int = 64):
    return PreActResNet([2, 2, 2, 2], num_classes, in_channels, mean, std, width, final_bn=True)


def preactresnet34_he(num_classes, in_channels, mean, std, width: int = 64):
    return PreActResNet([3, 4, 6, 3], num_classes, in_channels, mean, std, width, final_bn=True)
