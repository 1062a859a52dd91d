"""The method interface: what a regularizer receives per batch and what it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmix_eval.errors import UserError
from mmix_eval.registry import Registry

METHODS: Registry = Registry("method")


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


def check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise UserError(f"alpha: expected a finite number > 0, got {alpha!r}")
    return float(alpha)


def create_method(name: str, alpha=None, eligible=None, loss: str = "bce_softmax") -> Method:
    """Build a method from its registry name with the settings a config gives (None = its default)."""
    factory = METHODS.get(name)
    kwargs: dict[str, Any] = {"loss": loss}
    if alpha is not None:
        kwargs["alpha"] = alpha
    if eligible is not None:
        kwargs["eligible"] = eligible
    try:
        method = factory(**kwargs)
    except TypeError as e:
        given = ", ".join(k for k in kwargs if k != "loss")
        raise UserError(f"method '{name}': does not take {given or 'these settings'} ({e})") from None
    return method
