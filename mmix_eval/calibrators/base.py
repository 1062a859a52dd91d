"""The calibrator interface: fitted once per checkpoint on held-out logits, then applied to any logits.

    class Calibrator:
        name = "my_scaling"
        def fit(self, logits, labels) -> dict          # the fitted parameters (JSON-able; recorded)
        def apply(self, logits, params) -> logits      # the same shape, the argmax need not be kept
        def note(self, params) -> str | None           # optional: a caveat every calibrated row carries

Found like every plugin: a name in ``mmix_eval.catalog.CALIBRATORS``, a ``module:Class`` path or an installed
entry point (group ``mmix_eval.calibrators``).
"""

from __future__ import annotations

import math

import torch

from mmix_eval.catalog import CALIBRATORS
from mmix_eval.errors import UserError


class Calibrator:
    name: str = "calibrator"

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> dict:
        raise NotImplementedError

    def apply(self, logits: torch.Tensor, params: dict) -> torch.Tensor:
        raise NotImplementedError

    def note(self, params: dict) -> str | None:
        """A caveat about this fit that every calibrated row records in its warnings (a parameter held at a
        bound, say); None by default."""
        return None


class Identity(Calibrator):
    """The logits as they are (the raw rows)."""

    name = "none"

    def fit(self, logits, labels) -> dict:
        return {}

    def apply(self, logits, params):
        return logits


def get_calibrator(spec: str) -> Calibrator:
    """A calibrator instance by name, ``module:Class`` or entry point, checked for the interface."""
    return CALIBRATORS.instance(spec, Calibrator, "a mmix_eval.calibrators.Calibrator subclass (fit, apply)")


def fit_checked(calibrator: Calibrator, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """``calibrator.fit``, refusing parameters that are not finite numbers (or lists of them)."""
    params = calibrator.fit(logits, labels)
    if not isinstance(params, dict):
        raise UserError(
            f"calibrator '{calibrator.name}': fit() expected to return a dict of parameters, got "
            f"{type(params).__name__}"
        )
    for k, v in params.items():
        values = v if isinstance(v, (list, tuple)) else [v]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values):
            raise UserError(f"calibrator '{calibrator.name}': parameter '{k}' expected finite numbers, got {v!r:.80}")
    return params
