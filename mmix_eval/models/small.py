"""A small residual CNN that trains on a 2-core CPU in minutes (0.31M parameters at width 32).

Same stage layout as PreActResNet (stem + stage1 | stage2 | stage3), so k = 0, 1, 2 mean the same.
"""

from __future__ import annotations

from torch import nn

from mmix_eval.models.base import Normalize, StagedNet
from mmix_eval.models.preactresnet import Head, PreActBlock


class SmallNet(StagedNet):
    def __init__(self, num_classes, in_channels, mean, std, width: int = 32):
        super().__init__()
        self.normalize = Normalize(mean, std)
        w = [width, 2 * width, 4 * width]
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False), PreActBlock(w[0], w[0])),
                PreActBlock(w[0], w[1], stride=2),
                PreActBlock(w[1], w[2], stride=2),
            ]
        )
        self.head = Head(w[2], num_classes)


def smallnet(num_classes, in_channels, mean, std, width: int = 32):
    return SmallNet(num_classes, in_channels, mean, std, width)
