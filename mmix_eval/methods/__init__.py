"""Training methods: each turns one batch into a loss (and the logits it came from).

The training loop has no method-specific branches: it calls ``method.step(model, x, y, rng)``.

The public interface for a new regularizer (see docs/plugins.md): subclass ``Method``, set ``name``,
implement ``step(model, x, y, rng) -> StepOutput(loss, logits)``, optionally ``validate(model)`` and
``describe()``; the helpers exported here (``forward_mixed``, ``mix``, ``soft_targets``, ``sample_*``) are
stable. Built-ins are listed in ``mmix_eval.catalog.METHODS`` and imported on first use. Discovery: registry name, ``module:attr`` import path, or an installed package's entry point in
the group ``mmix_eval.methods``.
"""

from mmix_eval.catalog import LOSSES, METHODS
from mmix_eval.methods.base import Method, StepOutput, create_method
from mmix_eval.methods.mixing import (
    forward_mixed,
    mix,
    mix_point_names,
    sample_lambda,
    sample_layer,
    sample_permutation,
    soft_targets,
)

__all__ = [
    "LOSSES",
    "METHODS",
    "Method",
    "StepOutput",
    "create_method",
    "forward_mixed",
    "mix",
    "mix_point_names",
    "sample_lambda",
    "sample_layer",
    "sample_permutation",
    "soft_targets",
]
