"""The post-hoc calibrator of one target: fitted once, on held-out images no condition evaluates (the
checkpoint's own validation split, or ``calibration_split`` test images left out of every subset), and applied
to the logits every condition computes anyway (free). Attacks are computed on the model as trained; their
images' calibrated scores are recorded beside the raw ones."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmix_eval.calibrators import Calibrator, fit_checked, get_calibrator
from mmix_eval.errors import UserError

SUMMARY_LIST = 32  # longer parameter lists are recorded by their length and range


@dataclass
class Fitted:
    """A calibrator with its fitted parameters, and where they came from."""

    name: str
    calibrator: Calibrator
    params: dict
    images: int  # held-out images it was fitted on
    source: str  # which held-out images
    note: str | None = None  # the calibrator's caveat about this fit (a bound reached), in every calibrated row

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.calibrator.apply(logits, self.params)

    @property
    def summary(self) -> dict:
        """The fitted parameters as a record shows them: a list longer than SUMMARY_LIST numbers (a C × C matrix,
        isotonic knots) as its length and range."""
        return {
            k: (
                f"{len(v)} numbers, {min(v):.6g} to {max(v):.6g}"
                if isinstance(v, list) and len(v) > SUMMARY_LIST
                else v
            )
            for k, v in self.params.items()
        }

    @property
    def settings(self) -> dict:
        """What every calibrated row records about its calibrator."""
        return {"calibrator_fit_images": self.images, "calibrator_fit_on": self.source}


def fitted_calibration(target, calibrators, predict: Callable[[object], torch.Tensor]) -> list[Fitted]:
    """The target's fitted calibrators, in the order named (each fitted on first use, then shared by every
    evaluator of the target; the held-out logits are computed once for all of them); [] for 'none' or when the
    target has no held-out images (said once: ``target.calibration_note``). ``calibrators``: names, or one
    comma-separated string. ``predict(images)``: the model's logits of a set of images."""
    names = [s.strip() for s in calibrators.split(",")] if isinstance(calibrators, str) else list(calibrators)
    names = [n for n in names if n != "none"]
    if not names:
        return []
    if target.val is None:
        if not target.calibration_note:
            target.calibration_note = (
                "no calibrated rows: the checkpoint held out no validation split (train with "
                "--val-size N, or evaluate with --calibration-split N)"
            )
            warnings.warn(f"{target.run}: {target.calibration_note}", stacklevel=3)
        return []
    cache = target.calibration if isinstance(target.calibration, dict) else {}
    target.calibration = cache
    if any(n not in cache for n in names) and target.val_logits is None:
        target.val_logits = checked_held_out(predict(target.val), target.val_source)
    for n in names:
        if n not in cache:
            cache[n] = _fit(target, n, target.val_logits)
    return [cache[n] for n in names]


def checked_held_out(logits: torch.Tensor, source: str) -> torch.Tensor:
    """The held-out logits every calibrator is fitted on: at least one image, and finite (a NaN reached each fit as a
    different error: a parameter 'cv_nll' not finite, a temperature at its bound, or none at all)."""
    if len(logits) == 0:
        raise UserError(f"calibrator: expected at least one held-out image ({source}), got 0")
    bad = int((~torch.isfinite(logits).all(dim=1)).sum())
    if bad:
        raise UserError(
            f"calibrator: expected finite logits of the {len(logits)} held-out images ({source}), got NaN or "
            f"infinite logits for {bad} of them"
        )
    return logits


def _fit(target, spec: str, val_logits: torch.Tensor) -> Fitted:
    """One calibrator fitted on the held-out logits, its caveat warned once, its output checked finite."""
    cal = get_calibrator(spec)
    params = fit_checked(cal, val_logits, target.val.y)
    note = cal.note(params) if callable(getattr(cal, "note", None)) else None
    fitted = Fitted(
        cal.name if cal.name != Calibrator.name else spec,
        cal,
        params,
        len(target.val),
        target.val_source,
        note if isinstance(note, str) and note else None,
    )
    if fitted.note:
        warnings.warn(f"{target.run}: {fitted.note}", stacklevel=4)
    if not torch.isfinite(fitted.apply(val_logits)).all():  # finite parameters can still divide by 0 (T = 0)
        raise UserError(
            f"calibrator '{fitted.name}': its fitted parameters ({json.dumps(params)[:80]}) turn the "
            f"{len(target.val)} held-out logits non-finite; expected finite calibrated logits"
        )
    return fitted


def conformal_thresholds(target, fits: list[Fitted], alpha: float | None, seed: int = 0) -> dict:
    """calibrator name ('none' for the raw softmax) -> the split conformal thresholds (``evaluate.conformal``),
    calibrated on the held-out logits the calibrators were fitted on; {} without them or with ``alpha`` None.
    Computed once per target, calibrator and α; ``seed``: APS / RAPS's draws (the evaluation seed)."""
    from mmix_eval.evaluate.conformal import fit_thresholds

    if alpha is None or not fits or target.val_logits is None:
        return {}
    cache = target.conformal if isinstance(target.conformal, dict) else {}
    target.conformal = cache
    z, y = target.val_logits, target.val.y
    out = {}
    for name, apply in [("none", lambda v: v)] + [(f.name, f.apply) for f in fits]:
        if (name, alpha, seed) not in cache:
            cache[name, alpha, seed] = fit_thresholds(torch.softmax(apply(z).double(), dim=1), y, alpha, seed)
        out[name] = cache[name, alpha, seed]
    return out
