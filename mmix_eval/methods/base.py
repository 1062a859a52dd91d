"""The method interface: what a regularizer receives per batch and what it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmix_eval.errors import UserError
from mmix_eval.registry import Registry

METHODS: Registry = Registry("method", entry_points="mmix_eval.methods")


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, differentiable
    logits: torch.Tensor  # (B, C) the logits the loss was computed on


class Method:
    """Base class. Subclasses implement ``step`` and list their settings in ``describe``.

    ``step(model, x, y, rng)``: x float images in [0, 1] (B, C, H, W) already augmented, y int64
    labels (B,), rng the run's mixing ``numpy.random.Generator`` (checkpointed, so a resumed run
    replays it). Return the loss and logits; the loop does backward and the optimizer step.
    """

    name: str = "method"

    def __init__(self, loss: str = "bce_softmax"):
        from mmix_eval.methods.losses import LOSSES

        self.loss_name = loss
        self.loss_fn = LOSSES.get(loss)

    def validate(self, model) -> None:
        """Raise UserError if this method cannot run on ``model``."""

    def step(self, model, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> StepOutput:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.loss_name}


def source_sha256(method: "Method") -> str | None:
    """A short hash of the source file of a method defined outside mmix-eval (a plugin), so that editing the
    plugin makes its old checkpoints stale; None for mmix-eval's own methods (their version is the package's)."""
    import hashlib
    import inspect

    module = type(method).__module__
    if module == "mmix_eval" or module.startswith("mmix_eval."):
        return None
    try:
        return hashlib.sha256(open(inspect.getsourcefile(type(method)), "rb").read()).hexdigest()[:16]
    except (TypeError, OSError):  # defined interactively, or no source on disk
        return None


def fingerprint(method: "Method") -> dict[str, Any]:
    """What a checkpoint records of its method: its settings (``describe``) and, for a plugin, its source hash."""
    h = source_sha256(method)
    return {**method.describe(), **({"source_sha256": h} if h else {})}


def check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise UserError(f"alpha: expected a finite number > 0, got {alpha!r}")
    return float(alpha)


def create_method(name: str, alpha=None, eligible=None, loss: str = "bce_softmax") -> Method:
    """Build a method by registry name, ``module:attr`` import path or installed entry point, with the
    settings a config gives (None = the method's default). A plugin must be a Method subclass (or a
    factory returning a Method); a plugin that sets no ``name`` is reported under its spec."""
    import inspect

    factory = METHODS.get(name)
    if not callable(factory):
        raise UserError(f"method '{name}': expected a Method subclass or a factory returning one, got {type(factory).__name__}")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, value, default in (("alpha", alpha, None), ("eligible", eligible, None), ("loss", loss, "bce_softmax")):
        if key in params or takes_any:
            if value is not None:
                kwargs[key] = value
        elif value != default:
            raise UserError(f"method '{name}': does not take {key} (its arguments: {', '.join(params) or 'none'})")
    try:
        method = factory(**kwargs)
    except TypeError as e:
        raise UserError(f"method '{name}': could not be built with {kwargs} ({e})") from None
    if not isinstance(method, Method):
        raise UserError(f"method '{name}': expected a mmix_eval.methods.Method (step(model, x, y, rng) -> StepOutput), "
                        f"got {type(method).__name__}")
    if type(method).name == Method.name and method.name == Method.name:
        method.name = name
    return method
