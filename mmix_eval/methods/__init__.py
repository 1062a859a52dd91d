"""Training methods: each turns one batch into a loss (and the logits it came from).

The training loop has no method-specific branches: it calls ``method.step(model, x, y, rng)``.
"""

from mmix_eval.methods.base import METHODS, Method, StepOutput, create_method
from mmix_eval.methods.losses import LOSSES

from mmix_eval.methods import mixup  # noqa: F401,E402  (fill METHODS)

__all__ = ["LOSSES", "METHODS", "Method", "StepOutput", "create_method"]
