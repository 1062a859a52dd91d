"""What every built-in network is: normalisation inside, numbered stages, a head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel. Buffers, so the checkpoint carries them."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class StagedNet(nn.Module):
    """Base for our models: ``normalize`` + ``stages`` + ``head``; forward is the plain walk.

    Mixing methods walk the stages themselves (``mmix_eval.methods.mixing.forward_mixed``),
    so ``forward`` carries no method flags.
    """

    normalize: Normalize
    stages: nn.ModuleList
    head: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalize(x)
        for stage in self.stages:
            h = stage(h)
        return self.head(h)


def num_mix_points(model: nn.Module) -> int | None:
    """Integer mixing layers are 0..len(stages): 0 is the input, len(stages) the head's input.
    None for a model without numbered stages (mix it by module name)."""
    if hasattr(model, "stages"):
        return len(model.stages) + 1
    names = getattr(model, "stage_names", None)
    return len(names) + 1 if names else None
