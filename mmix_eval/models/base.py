from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from mmix_eval.errors import UserError
from mmix_eval.registry import Registry

MODELS: Registry = Registry("model", entry_points="mmix_eval.models")


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


def _check_stats(name: str, values, channels: int) -> list[float]:
    vals = [float(v) for v in values]
    if len(vals) != channels:
        raise UserError(f"model {name}: expected {channels} values (one per input channel), got {len(vals)}")
    return vals


def model_factory(name: str):
    """The factory behind a model name: registry, entry point, ``module:factory``, or ``torchvision:ARCH``."""
    if name.startswith("torchvision:"):
        from mmix_eval.models.tv import check_arch, torchvision_model

        arch = check_arch(name.split(":", 1)[1])
        return lambda num_classes, in_channels, mean, std, **kw: torchvision_model(arch, num_classes, in_channels, mean, std, **kw)
    if name.startswith("timm:"):
        from mmix_eval.models.tv import check_timm_arch, timm_model

        arch = check_timm_arch(name.split(":", 1)[1])
        return lambda num_classes, in_channels, mean, std, **kw: timm_model(arch, num_classes, in_channels, mean, std, **kw)
    return MODELS.get(name)


def create_model(name: str, num_classes: int, in_channels: int = 3, mean=None, std=None, **kwargs) -> StagedNet:
    """Build a registered model, a torchvision model (``torchvision:resnet18``) or a ``module:factory``
    import path, for the data's shape. Every model takes [0, 1] images and normalises inside."""
    factory = model_factory(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise UserError(f"in_channels: expected a positive integer, got {in_channels!r}")
    mean = _check_stats("mean", mean if mean is not None else [0.5] * in_channels, in_channels)
    std = _check_stats("std", std if std is not None else [0.25] * in_channels, in_channels)
    if any(s <= 0 for s in std):
        raise UserError(f"model std: expected positive values, got {std}")
    if not callable(factory):
        raise UserError(f"model '{name}': expected a factory (num_classes, in_channels, mean, std, ...) -> nn.Module, got {type(factory).__name__}")
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        raise UserError(f"model '{name}': unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(p for p in params if p not in ('num_classes', 'in_channels', 'mean', 'std'))}")
    model = factory(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"model '{name}': expected a factory returning an nn.Module, got {type(model).__name__}")
    return model
