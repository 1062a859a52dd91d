"""The calibrator interface: fitted once per checkpoint on held-out logits, then applied to any logits.

    class Calibrator:
        name = "my_scaling"
        def fit(self, logits, labels) -> dict          # the fitted parameters (JSON-able; recorded)
        def apply(self, logits, params) -> logits      # the same shape, the argmax need not be kept
        def note(self, params) -> str | None           # optional: a caveat every calibrated row carries
        probabilities = False                          # True: apply() returns log-probabilities (see below)

A calibrator whose output is a probability (histogram binning, isotonic regression, ensemble temperature scaling)
returns ``log_probs(p)``: the log of the calibrated probability, normalised to sum to 1 and clamped to
[FLOOR, 1 − FLOOR] (so every metric computed from a softmax sees p itself, and NLL is at most −log FLOOR ≈ 13.8);
it says so with ``probabilities = True``, and the OOD evaluator then records no energy score from it (the
log-sum-exp of log-probabilities is 0 for every image).

Found like every plugin: a name in ``mmix_eval.catalog.CALIBRATORS``, a ``module:Class`` path or an installed
entry point (group ``mmix_eval.calibrators``).
"""

from __future__ import annotations

import math

import torch

from mmix_eval.catalog import CALIBRATORS
from mmix_eval.errors import UserError

FLOOR = 1e-6  # a probability calibrator's output is clamped to [FLOOR, 1 - FLOOR] before its log (torch-uncertainty's)


def log_probs(p: torch.Tensor) -> torch.Tensor:
    """Calibrated probabilities (N, C) as pseudo-logits: normalised to sum to 1, clamped to [FLOOR, 1 − FLOOR], log."""
    p = p / (p.sum(dim=1, keepdim=True) + 1e-12)
    return p.clamp(FLOOR, 1 - FLOOR).log()


def absent_note(what: str, params: dict) -> str | None:
    """The caveat of a one-vs-rest calibrator fitted without some classes (``params['raw_classes']``)."""
    raw = params.get("raw_classes")
    if not raw:
        return None
    return (
        f"{what}: class{'es' * (len(raw) > 1)} {', '.join(str(int(k)) for k in raw)} absent from the held-out "
        f"images, kept at the raw softmax probability"
    )


class Calibrator:
    name: str = "calibrator"
    probabilities: bool = False  # apply() returns log-probabilities (log_probs), not logits

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
