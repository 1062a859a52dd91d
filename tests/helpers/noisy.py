"""A plugin regularizer with two settings of its own (used by the sweep tests): Gaussian input noise of
standard deviation ``sigma`` on a fraction ``prob`` of the batches."""

import torch

from mmix_eval.methods import Method, StepOutput, soft_targets


class InputNoise(Method):
    name = "input_noise"

    def __init__(self, sigma: float = 0.1, prob: float = 1.0, loss: str = "bce_softmax"):
        super().__init__(loss)
        if not 0 <= prob <= 1:
            raise ValueError(f"prob: expected a number in [0, 1], got {prob}")
        self.sigma, self.prob = float(sigma), float(prob)

    def step(self, model, x, y, rng):
        if rng.random() < self.prob:
            x = (x + torch.from_numpy(rng.normal(0, self.sigma, x.shape)).float()).clamp(0, 1)
        logits = model(x)
        return StepOutput(self.loss_fn(logits, soft_targets(y, logits.shape[1])), logits)
