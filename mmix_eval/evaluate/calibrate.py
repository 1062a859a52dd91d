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
    def settings(self) -> dict:
        """What every calibrated row records about its calibrator."""
        return {"calibrator_fit_images": self.images, "calibrator_fit_on": self.source}


def fitted_calibration(target, calibrator: str, predict: Callable[[object], torch.Tensor]) -> Fitted | None:
    """The target's fitted calibrator (fitted on the first call, then shared by every evaluator of the target);
    None for 'none' or when the target has no held-out images (said once: ``target.calibration_note``).
    ``predict(images)``: the model's logits of a set of images."""
    if target.calibration is not None and target.calibration.name == calibrator:
        return target.calibration
    if calibrator == "none":
        return None
    if target.val is None:
        if not target.calibration_note:
            target.calibration_note = (
                "no calibrated rows: the checkpoint held out no validation split (train with "
                "--val-size N, or evaluate with --calibration-split N)"
            )
            warnings.warn(f"{target.run}: {target.calibration_note}", stacklevel=3)
        return None
    cal = get_calibrator(calibrator)
    val_logits = predict(target.val)
    params = fit_checked(cal, val_logits, target.val.y)
    note = cal.note(params) if callable(getattr(cal, "note", None)) else None
    fitted = Fitted(
        cal.name if cal.name != Calibrator.name else calibrator,
        cal,
        params,
        len(target.val),
        target.val_source,
        note if isinstance(note, str) and note else None,
    )
    if fitted.note:
        warnings.warn(f"{target.run}: {fitted.note}", stacklevel=3)
    if not torch.isfinite(fitted.apply(val_logits)).all():  # finite parameters can still divide by 0 (T = 0)
        raise UserError(
            f"calibrator '{fitted.name}': its fitted parameters ({json.dumps(params)[:80]}) turn the "
            f"{len(target.val)} held-out logits non-finite; expected finite calibrated logits"
        )
    target.calibration = fitted
    return fitted
