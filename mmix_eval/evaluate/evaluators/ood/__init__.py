"""Out-of-distribution detection (the ``ood`` evaluator): logit scores and feature-space scores at the mixing
layers. ``evaluator`` is the evaluator, ``images`` the sources, ``logit_scores`` and ``features`` the scores, ``taps``
the hooks, ``feature_run`` one checkpoint's fitted feature scores, ``ranking`` the metrics."""

from mmix_eval.evaluate.evaluators.ood.evaluator import OOD, OODOptions
from mmix_eval.evaluate.evaluators.ood.images import check_source, ood_images
from mmix_eval.evaluate.evaluators.ood.logit_scores import scores
from mmix_eval.evaluate.evaluators.ood.ranking import ranking_metrics

__all__ = ["OOD", "OODOptions", "check_source", "ood_images", "ranking_metrics", "scores"]
