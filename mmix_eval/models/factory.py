"""Models by name: a built-in (``mmix_eval.catalog.MODELS``), ``torchvision:ARCH``, ``timm:ARCH``, a
``module:factory`` path or an installed entry point, built for the data's shape."""

from __future__ import annotations

import inspect

from torch import nn

from mmix_eval.catalog import MODELS
from mmix_eval.errors import UserError
from mmix_eval.models.base import StagedNet
from mmix_eval.models.tv import check_arch, check_timm_arch, timm_model, torchvision_model


def _check_stats(name: str, values, channels: int) -> list[float]:
    vals = [float(v) for v in values]
    if len(vals) != channels:
        raise UserError(f"model {name}: expected {channels} values (one per input channel), got {len(vals)}")
    return vals


def model_factory(name: str):
    """The factory behind a model name: registry, entry point, ``module:factory``, or ``torchvision:ARCH``."""
    if name.startswith("torchvision:"):
        arch = check_arch(name.split(":", 1)[1])
        return lambda num_classes, in_channels, mean, std, **kw: torchvision_model(
            arch, num_classes, in_channels, mean, std, **kw
        )
    if name.startswith("timm:"):
        arch = check_timm_arch(name.split(":", 1)[1])
        return lambda num_classes, in_channels, mean, std, **kw: timm_model(
            arch, num_classes, in_channels, mean, std, **kw
        )
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
        raise UserError(
            f"model '{name}': expected a factory (num_classes, in_channels, mean, std, ...) -> nn.Module, got {type(factory).__name__}"
        )
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        raise UserError(
            f"model '{name}': unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(p for p in params if p not in ('num_classes', 'in_channels', 'mean', 'std'))}"
        )
    model = factory(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"model '{name}': expected a factory returning an nn.Module, got {type(model).__name__}")
    return model


def is_builtin_model(name: str) -> bool:
    """A model shipped with mmix-eval or torchvision / timm (these build on the meta device), not a plugin."""
    if name.startswith(("torchvision:", "timm:")):
        return True
    try:
        factory = model_factory(name)
    except UserError:
        return False
    return getattr(factory, "__module__", "").startswith("mmix_eval.")
