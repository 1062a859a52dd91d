"""Label smoothing (Szegedy et al., CVPR 2016), written only against the public method interface.

The one-hot target is replaced by (1 − ε)·onehot + ε/C over the C classes, ε = 0.1 by default. It is the
baseline a calibration claim for mixup must beat: Thulasidasan et al. (NeurIPS 2019, "On Mixup Training:
Improved Calibration and Predictive Uncertainty for Deep Neural Networks") credit much of mixup's calibration
gain to the label smoothing its soft targets imply. The loss is the run's (bce_softmax by default, like
every method here, so that a bench compares regularizers and not losses; soft_ce is the usual one).
"""

from __future__ import annotations

import math

from mmix_eval.errors import UserError
from mmix_eval.methods import Method, StepOutput, soft_targets


def smooth(targets, epsilon: float):
    """(1 − ε)·targets + ε/C, rows still summing to 1."""
    return targets * (1.0 - epsilon) + epsilon / targets.shape[1]


class LabelSmoothing(Method):
    name = "label_smoothing"

    def __init__(self, epsilon: float = 0.1, loss: str = "bce_softmax"):
        super().__init__(loss)
        if not math.isfinite(epsilon) or not 0 <= epsilon < 1:
            raise UserError(f"epsilon: expected a number in [0, 1), got {epsilon!r}")
        self.epsilon = float(epsilon)

    def step(self, model, x, y, rng) -> StepOutput:
        logits = model(x)
        return StepOutput(self.loss_fn(logits, smooth(soft_targets(y, logits.shape[1]), self.epsilon)), logits)

    def describe(self):
        return {**super().describe(), "epsilon": self.epsilon}
