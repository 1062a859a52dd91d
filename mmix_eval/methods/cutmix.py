"""CutMix (Yun et al., ICCV 2019), written only against the public method interface (mmix_eval.methods).

Paper defaults for CIFAR: λ ~ Beta(1, 1); with probability 0.5 a batch is cut-mixed: a box of area
≈ (1 − λ)·H·W, centred uniformly (clipped at the border), is pasted from a shuffled copy of the batch,
and λ is then set to the kept area so targets match pixels. Other batches train as vanilla.
The loss is the run's (bce_softmax by default, like every method here; the CutMix paper used soft_ce).
"""

from __future__ import annotations

import math

from mmix_eval.methods import Method, StepOutput, sample_permutation, soft_targets
from mmix_eval.methods.base import check_alpha


class CutMix(Method):
    name = "cutmix"

    def __init__(self, alpha: float = 1.0, prob: float = 0.5, loss: str = "bce_softmax"):
        super().__init__(loss)
        self.alpha, self.prob = check_alpha(alpha), float(prob)

    def step(self, model, x, y, rng) -> StepOutput:
        if rng.random() >= self.prob:
            logits = model(x)
            return StepOutput(self.loss_fn(logits, soft_targets(y, logits.shape[1])), logits)
        lam = float(rng.beta(self.alpha, self.alpha))
        perm = sample_permutation(rng, x.shape[0]).to(x.device)
        h, w = x.shape[2], x.shape[3]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x = x.clone()
        x[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
        lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)  # the kept area
        logits = model(x)
        return StepOutput(self.loss_fn(logits, soft_targets(y, logits.shape[1], perm, lam)), logits)

    def describe(self):
        return {**super().describe(), "alpha": self.alpha, "prob": self.prob}
