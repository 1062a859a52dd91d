"""Checkpoint-only evaluation: the framework here, the evaluators in ``evaluators/``. Neither imports the
training code, and no framework module imports an evaluator.

The interface (``base.py``, torch-free): ``Evaluator`` (name, frozen Options dataclass, ``metrics`` of
``MetricSpec``, ``run(target, options, common) -> rows``), found by registry name, ``module:attr`` or entry
point (group ``mmix_eval.evaluators``). Built in (``mmix_eval.catalog.EVALUATORS``, ``evaluators/``):
deformations, fgsm, calibration, corruptions, spectra, ood, attack, shift. The framework: ``runner``
(checkpoints x evaluators -> record files), ``passes`` (the batched passes under a shift), ``target`` (a
checkpoint as model and images), ``records`` and ``record_types`` (the tidy rows), ``outcomes`` (per-image data),
``metrics`` and ``boot`` (scores and their bootstrap), ``calibrate``, ``ensemble``, ``sources``, ``checks``.

Python API (any nn.Module mapping [0, 1] images to logits):

    from mmix_eval.evaluate import target_from_module, evaluate_deformations, evaluate_fgsm, evaluate_calibration
    rows = evaluate_deformations(target_from_module(model, x, y), grid="table4", seed=0)

    from mmix_eval.evaluate import get_evaluator, run_evaluator
    rows = run_evaluator(get_evaluator("my_evals:Occlusion"), target, {"patch": 8})

This package's ``base``, ``records`` and ``outcomes`` modules import no torch.
"""

from __future__ import annotations

from mmix_eval.evaluate.base import (
    SHIFT_METRICS,
    EvalOptions,
    Evaluator,
    MetricSpec,
    OptionError,
    get_evaluator,
    run_evaluator,
)
from mmix_eval.evaluate.records import record

__all__ = [
    "SHIFT_METRICS",
    "EvalOptions",
    "Shift",
    "shift_rows",
    "Evaluator",
    "MetricSpec",
    "OptionError",
    "condition_rows",
    "evaluate_calibration",
    "evaluate_deformations",
    "evaluate_fgsm",
    "get_evaluator",
    "load_target",
    "record",
    "run_evaluator",
    "target_from_module",
]

_LAZY = {  # these import torch: loaded on first use
    "evaluate_deformations": "mmix_eval.evaluate.evaluators.deformations.evaluator",
    "evaluate_fgsm": "mmix_eval.evaluate.evaluators.attacks.fgsm",
    "evaluate_calibration": "mmix_eval.evaluate.evaluators.calibration",
    "condition_rows": "mmix_eval.evaluate.metrics",
    "Shift": "mmix_eval.evaluate.passes",
    "shift_rows": "mmix_eval.evaluate.passes",
    "load_target": "mmix_eval.evaluate.target",
    "target_from_module": "mmix_eval.evaluate.target",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
