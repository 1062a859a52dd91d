"""Calibration and likelihood on the clean test set: NLL, ECE, MCE, Brier, reliability bins, and
temperature scaling fitted on the checkpoint's own held-out validation split (never on the test set).

The metric functions live in ``metrics.py`` (shared with every shift evaluator, which records NLL, ECE and
Brier per condition); this file is the evaluator, and loads torch only inside ``run``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from mmix_eval.evaluate.base import Evaluator, MetricSpec
from mmix_eval.evaluate.records import EDGE_RULE, TEMPERATURE_LABEL, record


@dataclass
class CalibrationOptions:
    """Calibration has no options of its own: the ECE bin count is shared by every evaluator (``bins``)."""


class Calibration(Evaluator):
    name = "calibration"
    needs_val = True  # temperature scaling is fitted on it
    help = "NLL, ECE, MCE, Brier, reliability bins and temperature scaling (on the held-out validation split)"
    Options = CalibrationOptions
    metrics = {
        "acc": MetricSpec("accuracy (%)", "higher", ".2f"),
        "nll": MetricSpec("NLL", "lower"),
        "ece": MetricSpec("ECE", "lower"),
        "mce": MetricSpec("MCE", "lower"),
        "brier": MetricSpec("Brier", "lower"),
        "temperature": MetricSpec("fitted temperature T", None, ".3f"),
        "bin_count": MetricSpec("images in bin", None, ".0f"),
        "bin_acc": MetricSpec("bin accuracy", None),
        "bin_conf": MetricSpec("bin mean confidence", None),
    }

    def run(self, target, options, common) -> list[dict]:
        from tqdm.auto import tqdm

        from mmix_eval.calibrators import fit_checked, get_calibrator
        from mmix_eval.evaluate.passes import clean_logits, logits_of, setup, shard_batches

        model, device, bs, warn = setup(target, common.device, common.batch_size)
        bins = common.bins
        n_batches = len(shard_batches(len(target.test), bs)) + (len(shard_batches(len(target.val), bs)) if target.val is not None else 0)
        base = {**target.base, "evaluator": self.name, "n": len(target.test), "eval_seed": common.seed,
                "warnings": warn, "settings": {**target.settings, "bins": bins, "edge_rule": EDGE_RULE}}
        with tqdm(total=n_batches, desc=f"{target.run} calibration", unit="batch", disable=not common.progress,
                  leave=False) as bar:
            logits = clean_logits(target, bs, device, bar)
            val_logits = logits_of(model, target.val, bs, device, bar, target.precision) if target.val is not None else None
        rows = _metric_rows(base, "test", "Test images, before temperature scaling", logits, target.test.y, bins)
        if val_logits is None:
            note = "temperature scaling skipped: the checkpoint held out no validation split (train with --val-size N)"
            warnings.warn(f"{target.run}: {note}", stacklevel=2)
            for r in rows:
                r["warnings"] = "; ".join(filter(None, [r["warnings"], note]))
            return rows
        scaling = get_calibrator("temperature")
        params = fit_checked(scaling, val_logits, target.val.y)
        t = params["temperature"]
        rows.append(record(base, "temperature_scaled", "temperature", t,
                           f"Temperature fitted on {len(target.val)} held-out validation images"))
        rows += _metric_rows(base, "temperature_scaled", TEMPERATURE_LABEL,
                             scaling.apply(logits, params), target.test.y, bins)
        return rows


def _metric_rows(base, condition, label, logits, y, bins) -> list[dict]:
    from mmix_eval.evaluate.metrics import calibration_metrics

    m = calibration_metrics(logits, y, bins)
    rows = [record(base, condition, k, m[k], label) for k in ("acc", "nll", "ece", "mce", "brier")]
    counts, acc, conf = m["bins"]
    for b in range(bins):
        for metric, v in (("bin_count", float(counts[b])), ("bin_acc", float(acc[b])), ("bin_conf", float(conf[b]))):
            rows.append(record(base, condition, metric, v, label, bin=b))
    return rows


def evaluate_calibration(target, bins: int = 15, batch_size: int | None = None, device=None, progress: bool = True) -> list[dict]:
    """Python API: the calibration evaluator on one target."""
    from mmix_eval.evaluate.base import EvalOptions, run_evaluator

    return run_evaluator(Calibration(), target, {}, EvalOptions(bins=bins, batch_size=batch_size, device=device,
                                                                progress=progress))
