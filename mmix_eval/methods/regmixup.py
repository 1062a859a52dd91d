"""RegMixup (Pinto et al., NeurIPS 2022, "Using Mixup as a Regularizer Can Surprisingly Improve Accuracy and
Out-of-Distribution Robustness"), written only against the public method interface.

The loss is the clean loss plus η times the input-mixup loss on the same batch:
    L = ℓ(f(x), y) + η · ℓ(f(x̃), ỹ),  x̃ = λ·x + (1 − λ)·x[π], ỹ = λ·y + (1 − λ)·y[π],  λ ~ Beta(α, α)
with α = 10 (the paper's CIFAR setting: a large α keeps λ near 0.5, so mixup acts as a regularizer on top
of ordinary training rather than replacing it) and η = 1. The clean and the mixed batch go through the model
as one batch of 2B images, as the paper's code does (BatchNorm sees both). The logits returned are the
clean half's. The loss ℓ is the run's (bce_softmax by default, like every method here).
"""

from __future__ import annotations

import math

import torch

from mmix_eval.errors import UserError
from mmix_eval.methods import Method, StepOutput, mix, sample_lambda, sample_permutation, soft_targets
from mmix_eval.methods.base import check_alpha


class RegMixup(Method):
    name = "regmixup"
    forward_passes = 2  # the clean and the mixed batch go through the network together: twice the images

    def __init__(self, alpha: float = 10.0, eta: float = 1.0, loss: str = "bce_softmax"):
        super().__init__(loss)
        self.alpha = check_alpha(alpha)
        if not math.isfinite(eta) or eta < 0:
            raise UserError(f"eta: expected a finite number >= 0, got {eta!r}")
        self.eta = float(eta)

    def step(self, model, x, y, rng) -> StepOutput:
        lam = sample_lambda(rng, self.alpha)
        perm = sample_permutation(rng, x.shape[0]).to(x.device)
        logits = model(torch.cat([x, mix(x, perm, lam)]))
        clean, mixed = logits[: x.shape[0]], logits[x.shape[0] :]
        n = logits.shape[1]
        loss = self.loss_fn(clean, soft_targets(y, n)) + self.eta * self.loss_fn(mixed, soft_targets(y, n, perm, lam))
        return StepOutput(loss, clean)

    def describe(self):
        return {**super().describe(), "alpha": self.alpha, "eta": self.eta}
