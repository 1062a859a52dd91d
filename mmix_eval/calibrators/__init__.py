"""Post-hoc calibrators: fitted on a checkpoint's held-out logits, applied to the logits of any condition.
Built-ins (``mmix_eval.catalog.CALIBRATORS``): none, temperature, vector."""

from mmix_eval.calibrators.base import Calibrator, Identity, fit_checked, get_calibrator

__all__ = ["Calibrator", "Identity", "fit_checked", "get_calibrator"]
