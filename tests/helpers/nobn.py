"""A model without BatchNorm, for tests where each rank's batch statistics would otherwise differ
from the union batch's (DDP equality, see tests/test_distributed.py)."""

from torch import nn

from mmix_eval.models.base import Normalize, StagedNet


class PlainCNN(StagedNet):
    def __init__(self, num_classes, in_channels, mean, std, width=8):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()),
            ]
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


def plain_cnn(num_classes, in_channels, mean, std, width=8):
    return PlainCNN(num_classes, in_channels, mean, std, width)
