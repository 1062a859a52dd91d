"""Post-hoc calibrators: fitted on a checkpoint's held-out logits, applied to the logits of any condition.
Built-ins (``mmix_eval.catalog.CALIBRATORS``): none, temperature, vector, matrix, dirichlet (scale logits or
log-probabilities); histogram, isotonic, ensemble_temperature (output probabilities, as floored log-probabilities)."""

from mmix_eval.calibrators.base import FLOOR, Calibrator, Identity, fit_checked, get_calibrator, log_probs

__all__ = ["FLOOR", "Calibrator", "Identity", "fit_checked", "get_calibrator", "log_probs"]
