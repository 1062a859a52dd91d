"""The A/A twin of vanilla (issue 41): vanilla whose weights are nudged once, at its first training step, by
``nudge`` x N(0, 1) per weight (1e-3 by default), drawn from the run's own mixing generator. Trained from the same seed
it starts where vanilla starts and then follows its own path: a second draw from the same distribution of networks.
A method claim of "vanilla_nudged" against vanilla is a false positive by construction.

    mmix-eval bench configs/bench/digits-aa.yaml --out runs/aa      # from the repository root
"""

from __future__ import annotations

import numpy as np
import torch

from mmix_eval.methods.base import StepOutput
from mmix_eval.methods.mixup import Vanilla


class NudgedVanilla(Vanilla):
    name = "vanilla_nudged"

    def __init__(self, nudge: float = 1e-3, loss: str = "bce_softmax"):
        super().__init__(loss)
        self.nudge = float(nudge)
        self._nudged = False

    def step(self, model, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> StepOutput:
        if not self._nudged:  # once, before the first update (a resumed run nudges its restart too: don't resume it)
            with torch.no_grad():
                for p in model.parameters():
                    noise = torch.from_numpy(rng.standard_normal(tuple(p.shape))).to(p.device, p.dtype)
                    p.add_(noise, alpha=self.nudge)
            self._nudged = True
        return super().step(model, x, y, rng)

    def describe(self):
        return {**super().describe(), "nudge": self.nudge}
