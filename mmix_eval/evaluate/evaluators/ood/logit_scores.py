"""The logit scores (max softmax, max logit, energy), raw and after a post-hoc calibrator, and their rows."""

from __future__ import annotations

from mmix_eval.evaluate.evaluators.ood.ranking import ranking_metrics

SCORES = ("msp", "max_logit", "energy")
CALIBRATED_SCORES = ("msp", "energy")  # recorded again after the post-hoc calibrator (the max logit's ranking is kept)
HIST_BINS = 20


def scores(logits, mean_logits=None) -> dict:
    """The three scores of a model's logits. ``mean_logits``: a deep ensemble's members' mean logits, which its
    max-logit and energy scores are computed from (its own logits, the log of the mean softmax, have a logsumexp
    of 0 for every image); its max softmax stays that of the mean softmax."""
    import torch

    z = logits if mean_logits is None else mean_logits
    return {
        "msp": torch.softmax(logits, 1).max(1).values,
        "max_logit": z.max(1).values,
        "energy": torch.logsumexp(z, 1),
    }


ENSEMBLE_NOTE = (
    "a deep ensemble's max softmax of the mean softmax, max logit and energy from the members' mean logits, "
    "no calibrated energy (the calibrator is fitted to the averaged probabilities, not to the mean logits)"
)


class Scorer:
    """The three scores of a model's logits, with a deep ensemble's max logit and energy from its members' mean
    logits (``MeanLogits``)."""

    def __init__(self, target, model, device, bs):
        from mmix_eval.evaluate.ensemble import Ensemble, MeanLogits

        self.target, self.model, self.device, self.bs = target, model, device, bs
        self.ensemble = MeanLogits(target.model).to(device).eval() if isinstance(target.model, Ensemble) else None

    def _mean_logits(self, images):
        from mmix_eval.evaluate.passes import logits_of

        if self.ensemble is None:
            return None
        return logits_of(self.ensemble, images, self.bs, self.device, precision=self.target.precision)

    def scores(self, logits, images) -> dict:
        return {k: v.numpy() for k, v in scores(logits, self._mean_logits(images)).items()}

    def logits_and_scores(self, x):
        """An OOD source's logits and scores (its labels are never read)."""
        import torch

        from mmix_eval.evaluate.images import Images
        from mmix_eval.evaluate.passes import logits_of

        images = Images(x, torch.zeros(len(x)))
        z = logits_of(self.model, images, self.bs, self.device, precision=self.target.precision)
        return z, self.scores(z, images)


def score_rows(base: dict, spec: str, s_in: dict, s_out: dict, n_ood: int, **extra) -> list[dict]:
    """AUROC, AUPR and FPR95 rows of each score (``extra``: the calibrator's fields); the AUROC row carries its
    bootstrap replicates (``with_replicates``)."""
    from mmix_eval.evaluate.records import record

    rows = []
    for sc in [s for s in SCORES if s in s_in]:
        label = f"{spec}, {sc.replace('_', ' ')} score"
        got = [
            record(base, f"{spec}/{sc}", metric, value, label, ood=spec, score=sc, n_ood=n_ood, **extra)
            for metric, value in ranking_metrics(s_in[sc], s_out[sc]).items()
        ]
        rows += with_replicates(got, s_in[sc], s_out[sc])
    return rows


def with_replicates(rows: list[dict], s_in, s_out) -> list[dict]:
    """The AUROC row of a score's rows carries the stratified bootstrap replicates of its AUROC (the same resamples
    of the same ID and OOD images for every run: ``evaluate.boot.auroc_replicates``), which the runner stores beside
    the records so a report pairs two runs image by image."""
    from mmix_eval.evaluate.boot import auroc_replicates
    from mmix_eval.evaluate.record_types import attach

    for r in rows:
        if r["metric"] == "auroc":
            attach(r, boot=auroc_replicates(s_in, s_out))
    return rows


def calibrated_scores(fitted, z, single: bool) -> dict:
    """The scores the calibrator changes: max softmax and energy (the max logit under a temperature only rescales: its
    ranking, so its AUROC, is the raw one); a deep ensemble's energy is not recalibrated (``single`` False), nor is
    the energy of a calibrator whose output is a probability (its log-sum-exp is 0 for every image)."""
    probabilities = bool(getattr(fitted.calibrator, "probabilities", False))
    kept = [s for s in CALIBRATED_SCORES if s == "msp" or (single and not probabilities)]
    return {k: v.numpy() for k, v in scores(fitted.apply(z)).items() if k in kept}


def calibrated_rows(base: dict, spec: str, fitted, s_in: dict, s_out: dict, n_ood: int) -> list[dict]:
    """The ranking rows of the calibrated scores, with the calibrator's name, settings and caveat."""
    cbase = {**base, "warnings": "; ".join(filter(None, [base.get("warnings"), fitted.note]))} if fitted.note else base
    return score_rows(cbase, spec, s_in, s_out, n_ood, calibrator=fitted.name, **fitted.settings)


def histogram_rows(base: dict, spec: str, msp_in, msp_out, n_ood: int) -> list[dict]:
    """The share of in-distribution and OOD images in each of HIST_BINS max-softmax bins."""
    import numpy as np

    from mmix_eval.evaluate.records import record

    edges = np.linspace(0, 1, HIST_BINS + 1)
    rows = []
    for metric, vals in (("hist_in", msp_in), ("hist_out", msp_out)):
        counts = np.histogram(np.clip(vals, 0, 1), bins=edges)[0] / len(vals)
        for b, c in enumerate(counts):
            rows.append(
                record(
                    base,
                    f"{spec}/msp",
                    metric,
                    float(c),
                    f"{spec}, max softmax",
                    bin=b,
                    ood=spec,
                    score="msp",
                    n_ood=n_ood,
                )
            )
    return rows
