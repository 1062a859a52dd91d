"""Models: every network takes images in [0, 1], normalises inside, and exposes its stages.

A stage-structured model computes ``h_0 = x``, ``h_{i+1} = stages[i](h_i)``, ``logits = head(h_n)``.
Mixing at layer k replaces ``h_k``: k = 0 is the input, k = 1 the output of the first stage, and so on.
Built-ins are listed in ``mmix_eval.catalog.MODELS`` and imported on first use.
"""

from mmix_eval.catalog import MODELS
from mmix_eval.models.base import Normalize, StagedNet, num_mix_points
from mmix_eval.models.factory import create_model, is_builtin_model, model_factory

__all__ = ["MODELS", "Normalize", "StagedNet", "create_model", "is_builtin_model", "model_factory", "num_mix_points"]
