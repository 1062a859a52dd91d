"""A multilayer perceptron with numbered stages, for the paper's representation experiments (Figure 1's
spiral with a 2-unit bottleneck, the SVD of a narrow bottleneck on digits).

Stage i is ``Linear -> ReLU`` to ``hidden[i]`` units (the first stage flattens the image); the head is one
``Linear`` to the classes. Mixing layer k = i mixes the output of stage i, so ``eligible: [0, 3]`` with
``hidden: [256, 256, 256, 12]`` mixes the input and the 12-unit bottleneck (after its ReLU); give
``linear_last: true`` to leave the last hidden layer linear (a bottleneck without activation).
"""

from __future__ import annotations

from torch import nn

from mmix_eval.errors import UserError
from mmix_eval.models.base import MODELS, Normalize, StagedNet


class MLP(StagedNet):
    def __init__(self, num_classes, in_features: int, mean, std, hidden, linear_last: bool = False):
        super().__init__()
        self.normalize = Normalize(mean, std)
        stages, width = [], in_features
        for i, h in enumerate(hidden):
            layers = [nn.Flatten(1)] if i == 0 else []
            layers.append(nn.Linear(width, h))
            if not (linear_last and i == len(hidden) - 1):
                layers.append(nn.ReLU())
            stages.append(nn.Sequential(*layers))
            width = h
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(width, num_classes)


@MODELS.register("mlp", help="MLP with numbered stages (hidden sizes as a list; a narrow one is a bottleneck)")
def mlp(num_classes, in_channels, mean, std, hidden=(256, 256, 256, 12), image_size: int = 8, linear_last: bool = False):
    hidden = list(hidden)
    if not hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        raise UserError(f"model 'mlp': 'hidden' expected a non-empty list of positive integers, got {hidden!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"model 'mlp': 'image_size' expected a positive integer (the data's height = width), got {image_size!r}")
    return MLP(num_classes, in_channels * image_size * image_size, mean, std, hidden, bool(linear_last))
