"""Calibration and likelihood on the clean test set: every probability metric (NLL, ECE equal-width,
equal-mass and classwise, MCE, signed error, Brier, AURC, risk at coverage), reliability bins, before and
after the post-hoc calibrator (temperature scaling by default), which is fitted on held-out images, never on
an evaluated one: the checkpoint's own validation split, or ``calibration_split`` test images left out of
every evaluated subset.

The metric functions live in ``metrics.py`` (shared with every shift evaluator, which records the same
probability metrics per condition, raw and calibrated); this file is the evaluator, and loads torch only
inside ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmix_eval.evaluate.base import CONFORMAL_METRICS, PROBABILITY_METRICS, SHIFT_METRICS, Evaluator, MetricSpec
from mmix_eval.evaluate.records import EDGE_RULE, TEMPERATURE_LABEL, attach, record, scaled_condition


@dataclass(frozen=True)
class CalibrationOptions:
    """Calibration has no options of its own: the bin count and the calibrator are shared by every evaluator
    (``bins``, ``calibrator``, ``calibration_split``)."""


def scaled_label(calibrator: str) -> str:
    """The calibrated clean condition's label (temperature: the one reports have always used)."""
    return TEMPERATURE_LABEL if calibrator == "temperature" else f"Test images, {calibrator} scaled (fitted per run)"


class Calibration(Evaluator):
    name = "calibration"
    needs_val = True  # the calibrator is fitted on it
    version = "2"  # 2: debiased CE and SmoothECE recorded
    help = (
        "NLL, ECE (equal-width, equal-mass, classwise), debiased CE, SmoothECE, MCE, Brier, AURC, reliability bins, "
        "before and after "
        "the calibrator (temperature scaling, fitted on held-out images)"
    )
    Options = CalibrationOptions
    metrics = {
        "acc": MetricSpec("accuracy (%)", "higher", ".2f"),
        **{m: SHIFT_METRICS[m] for m in PROBABILITY_METRICS},
        "mce": MetricSpec("MCE", "lower"),
        **{m: SHIFT_METRICS[m] for m in CONFORMAL_METRICS},
        "temperature": MetricSpec("fitted temperature T", None, ".3f"),
        "bin_count": MetricSpec("images in bin", None, ".0f"),
        "bin_acc": MetricSpec("bin accuracy", None),
        "bin_conf": MetricSpec("bin mean confidence", None),
    }

    def run(self, target, options, common) -> list[dict]:
        from tqdm.auto import tqdm

        from mmix_eval.evaluate.calibrate import conformal_thresholds
        from mmix_eval.evaluate.metrics import conformal_rows
        from mmix_eval.evaluate.passes import clean_logits, setup, shard_batches, target_calibration

        model, device, bs, warn = setup(target, common.device, common.batch_size)
        bins = common.bins
        n_batches = len(shard_batches(len(target.test), bs))
        base = {
            **target.base,
            "evaluator": self.name,
            "n": len(target.test),
            "eval_seed": common.seed,
            "warnings": warn,
            "settings": {**target.settings, "bins": bins, "edge_rule": EDGE_RULE},
        }
        with tqdm(
            total=n_batches, desc=f"{target.run} calibration", unit="batch", disable=not common.progress, leave=False
        ) as bar:
            logits = clean_logits(target, bs, device, bar)
        fits = target_calibration(target, common.calibrator, model, device, bs)
        names = ", ".join(common.calibrators)
        before = "Test images" if not names else f"Test images, before {names} scaling"
        rows = _metric_rows(base, "test", before, logits, target.test.y, bins)
        conformal = conformal_thresholds(target, fits, common.conformal_alpha, common.seed)
        if "none" in conformal:
            rows += conformal_rows(base, "test", before, logits, target.test.y, conformal["none"], {})
        if not fits and target.calibration_note:
            for r in rows:
                r["warnings"] = "; ".join(filter(None, [r["warnings"], target.calibration_note]))
        for fitted in fits:
            rows += _calibrated(base, target, fitted, logits, bins, conformal.get(fitted.name))
        return rows


def _calibrated(base: dict, target, fitted, logits, bins: int, conformal=None) -> list[dict]:
    """One calibrator's rows on the clean test images (its fitted temperature where it has one; its conformal sets'
    coverage and size with ``conformal``, its thresholds)."""
    from mmix_eval.evaluate.metrics import conformal_rows

    condition, label = scaled_condition(fitted.name), scaled_label(fitted.name)
    extra = {**fitted.settings, "calibrator_params": fitted.summary}
    cbase = {**base, "warnings": "; ".join(filter(None, [base.get("warnings"), fitted.note]))} if fitted.note else base
    rows = []
    if "temperature" in fitted.params:
        held = "validation images" if not target.settings.get("calibration_split") else "test images (never evaluated)"
        rows.append(
            record(
                cbase,
                condition,
                "temperature",
                fitted.params["temperature"],
                f"Temperature fitted on {fitted.images} held-out {held}",
                calibrator=fitted.name,
                **extra,
            )
        )
    scaled = fitted.apply(logits)
    rows += _metric_rows(cbase, condition, label, scaled, target.test.y, bins, fitted.name, extra)
    if conformal is not None:
        rows += conformal_rows(
            cbase, condition, label, scaled, target.test.y, conformal, {"calibrator": fitted.name, **extra}
        )
    return rows


def _metric_rows(
    base, condition, label, logits, y, bins, calibrator: str = "none", extra: dict | None = None
) -> list[dict]:
    from mmix_eval.evaluate.metrics import calibration_scored, with_detail

    m, scored = calibration_scored(logits, y, bins)
    extra = extra or {}
    rows = [
        record(base, condition, k, m[k], label, calibrator=calibrator, **extra)
        for k in ("acc", *PROBABILITY_METRICS[:4], "mce", *PROBABILITY_METRICS[4:])
    ]
    attach(rows[0], correct=scored.correct.astype(bool))  # per-image outcomes and the probability detail, stored beside
    with_detail(rows[1:], scored)
    counts, acc, conf = m["bins"]
    for b in range(bins):
        for metric, v in (("bin_count", float(counts[b])), ("bin_acc", float(acc[b])), ("bin_conf", float(conf[b]))):
            rows.append(record(base, condition, metric, v, label, bin=b, calibrator=calibrator, **extra))
    return rows


def evaluate_calibration(
    target,
    bins: int = 15,
    batch_size: int | None = None,
    device=None,
    progress: bool = True,
    calibrator: str = "temperature",
) -> list[dict]:
    """Python API: the calibration evaluator on one target."""
    from mmix_eval.evaluate.base import EvalOptions, run_evaluator

    return run_evaluator(
        Calibration(),
        target,
        {},
        EvalOptions(bins=bins, batch_size=batch_size, device=device, progress=progress, calibrator=calibrator),
    )
