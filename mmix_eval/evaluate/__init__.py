"""Checkpoint-only evaluators: deformations, FGSM / PGD, calibration. They never import the training code.

Python API (any nn.Module mapping [0, 1] images to logits):

    from mmix_eval.evaluate import target_from_module, evaluate_deformations, evaluate_fgsm, evaluate_calibration
    rows = evaluate_deformations(target_from_module(model, x, y), grid="table4", seed=0)

This package's ``records`` module imports no torch, so result files can be read anywhere.
"""

from __future__ import annotations

__all__ = ["evaluate_calibration", "evaluate_deformations", "evaluate_fgsm", "load_target", "target_from_module"]


def __getattr__(name):  # lazy: importing mmix_eval.evaluate.records must not pull in torch
    if name == "evaluate_deformations":
        from mmix_eval.evaluate.deformations import evaluate_deformations as f
    elif name == "evaluate_fgsm":
        from mmix_eval.evaluate.fgsm import evaluate_fgsm as f
    elif name == "evaluate_calibration":
        from mmix_eval.evaluate.calibration import evaluate_calibration as f
    elif name in ("load_target", "target_from_module"):
        from mmix_eval.evaluate import target

        f = getattr(target, name)
    else:
        raise AttributeError(name)
    return f
