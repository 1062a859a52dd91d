"""Models: every network takes images in [0, 1], normalises inside, and exposes its stages.

A stage-structured model computes ``h_0 = x``, ``h_{i+1} = stages[i](h_i)``, ``logits = head(h_n)``.
Mixing at layer k replaces ``h_k``: k = 0 is the input, k = 1 the output of the first stage, and so on.
"""

from mmix_eval.models.base import MODELS, StagedNet, create_model, num_mix_points

from mmix_eval.models import mlp, preactresnet, small, wrn  # noqa: F401,E402  (fill MODELS)

__all__ = ["MODELS", "StagedNet", "create_model", "num_mix_points"]
