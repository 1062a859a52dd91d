"""A multilayer perceptron with numbered stages, for the paper's representation experiments (Figure 1's
spiral with a 2-unit bottleneck, the SVD of a narrow bottleneck on digits).

Stage i is ``Linear -> ReLU`` to ``hidden[i - 1]`` units (the first stage flattens the input), except the
stages listed in ``linear_stages`` (1-based), which stay linear: a bottleneck without an activation. The head
is one ``Linear`` to the classes. Mixing layer k = i mixes the output of stage i, so ``eligible: [0, 4]`` with
``hidden: [256, 256, 256, 12]`` mixes the input and the 12-unit bottleneck. ``image_size`` is the data's
height (= width): 8 for digits, 1 for 2-D points stored as (N, 2, 1, 1) images.
"""

from __future__ import annotations

from torch import nn

from mmix_eval.errors import UserError
from mmix_eval.models.base import Normalize, StagedNet


class MLP(StagedNet):
    def __init__(self, num_classes, in_features: int, mean, std, hidden, linear_stages=()):
        super().__init__()
        self.normalize = Normalize(mean, std)
        stages, width = [], in_features
        for i, h in enumerate(hidden, start=1):
            layers = [nn.Flatten(1)] if i == 1 else []
            layers.append(nn.Linear(width, h))
            if i not in linear_stages:
                layers.append(nn.ReLU())
            stages.append(nn.Sequential(*layers))
            width = h
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(width, num_classes)


def mlp(num_classes, in_channels, mean, std, hidden=(256, 256, 256, 12), image_size: int = 8, linear_stages=(4,)):
    hidden, linear = list(hidden), list(linear_stages)
    if not hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        raise UserError(f"model 'mlp': 'hidden' expected a non-empty list of positive integers, got {hidden!r}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise UserError(
            f"model 'mlp': 'image_size' expected a positive integer (the data's height = width), got {image_size!r}"
        )
    if not all(isinstance(k, int) and 1 <= k <= len(hidden) for k in linear):
        raise UserError(f"model 'mlp': 'linear_stages' expected stage numbers in 1..{len(hidden)}, got {linear!r}")
    return MLP(num_classes, in_channels * image_size * image_size, mean, std, hidden, tuple(linear))
