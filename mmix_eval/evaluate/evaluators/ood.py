"""Out-of-distribution detection: does a regularizer's softer prediction help tell unseen data apart?

For each OOD source, the evaluated test subset (in-distribution, the positives) is mixed with as many OOD
images (the negatives; fewer if the source has fewer), and each score ranks them: the maximum softmax
probability (Hendrycks & Gimpel 2017), the maximum logit, and the negative energy logsumexp(z) (Liu et al.
2020, temperature 1); a higher score means "in-distribution". Metrics, from scikit-learn (ties handled by
its threshold sweep): AUROC, AUPR with in-distribution as positive (aupr_in) and with OOD as positive
(aupr_out), and the false-positive rate on OOD images at 95 % true-positive rate (fpr95).

Sources: ``noise:gaussian`` (N(0.5, 0.25²) per pixel, clipped), ``noise:uniform`` (U(0, 1)), ``noise:blobs``
(a Bernoulli(0.7) field, Gaussian-blurred with σ = 1 and thresholded at 0.75: smooth binary blobs, as Hendrycks
et al. 2019's synthetic outliers), seeded by the evaluation seed, so every checkpoint gets the very same images;
or any data set the project loads (``svhn``, ``cifar100``, ``digits``, ``imagefolder:PATH``), its test split,
a seeded subset, mapped to the model's input by a fixed rule: channels 1 → 3 by repetition, 3 → 1 by ITU-R
601 luminance; the size by bilinear resampling with antialiasing. The in-distribution set itself is refused.
With a fitted post-hoc calibrator (the checkpoint's, as every evaluator's), the max-softmax and energy scores
are ranked again from the calibrated logits (rows with its ``calibrator``): a temperature changes which images
an MSP or energy threshold keeps, not the max logit's order. torch loads inside ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mmix_eval.catalog import DATASETS
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.evaluate.base import Evaluator, MetricSpec, OptionError
from mmix_eval.evaluate.sources import TestImages, preflight_sources, refuse_same

NOISES = ("gaussian", "uniform", "blobs")
SCORES = ("msp", "max_logit", "energy")
CALIBRATED_SCORES = ("msp", "energy")  # recorded again after the post-hoc calibrator (the max logit's ranking is kept)
HIST_BINS = 20


@dataclass(frozen=True)
class OODOptions:
    ood: list[str] = field(
        default_factory=lambda: ["noise:gaussian", "noise:uniform", "noise:blobs"],
        metadata={
            "help": "OOD sources: noise:gaussian|uniform|blobs or data sets (svhn, cifar100, imagefolder:PATH, ...)"
        },
    )


def check_source(spec: str) -> None:
    if spec.startswith("noise:"):
        kind = spec.split(":", 1)[1]
        if kind not in NOISES:
            raise OptionError("ood", f"expected noise:{'|'.join(NOISES)}, got '{spec}'")
        return
    name, sep, _ = spec.partition(":")
    if name not in DATASETS.names() and not sep:  # NAME:ARG may also be a user's module:function
        raise OptionError(
            "ood",
            f"expected noise:KIND or a data set ({', '.join(DATASETS.names())}), got "
            f"'{spec}'{did_you_mean(name, DATASETS.names())}",
        )


def ranking_metrics(score_in, score_out) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out and FPR at 95 % TPR, in-distribution positive, from numpy score arrays."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s = np.concatenate([score_in, score_out]).astype(np.float64)
    y = np.concatenate([np.ones(len(score_in)), np.zeros(len(score_out))])
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr_in": float(average_precision_score(y, s)),
        "aupr_out": float(average_precision_score(1 - y, -s)),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95)]),
    }


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


class OOD(Evaluator):
    name = "ood"
    version = "2"  # 2: a deep ensemble's max logit and energy from its members' mean logits (were constant)
    help = "out-of-distribution detection: AUROC, AUPR, FPR95 of softmax, logit and energy scores"
    Options = OODOptions
    metrics = {
        "auroc": MetricSpec("AUROC", "higher", ".4f", headline=True),
        "aupr_in": MetricSpec("AUPR (in-distribution positive)", "higher"),
        "aupr_out": MetricSpec("AUPR (OOD positive)", "higher"),
        "fpr95": MetricSpec("FPR at 95 % TPR", "lower"),
        "hist_in": MetricSpec("share of in-distribution images in a max-softmax bin", None),
        "hist_out": MetricSpec("share of OOD images in a max-softmax bin", None),
    }

    def resolve(self, options):
        if isinstance(options.ood, str):
            return replace(options, ood=[s.strip() for s in options.ood.split(",") if s.strip()])
        return options

    def validate(self, options) -> None:
        if not options.ood:
            raise OptionError("ood", "expected at least one OOD source, got none")
        for spec in options.ood:
            check_source(spec)

    def preflight(self, options, ctx) -> None:
        """Each data source exists and is not the bench's own data (by resolved path; by content when run)."""
        preflight_sources(
            [s for s in options.ood if not s.startswith("noise:")], ctx, "ood: source", "the in-distribution set"
        )

    def run(self, target, options, common) -> list[dict]:
        from mmix_eval.evaluate.passes import clean_logits, setup, target_calibration

        data = str(target.base.get("data") or "")
        for spec in options.ood:
            refuse_same(spec, data, "ood: source", "the in-distribution set")
        model, device, bs, warn = setup(target, common.device, common.batch_size)
        base = {
            **target.base,
            "evaluator": self.name,
            "n": len(target.test),
            "eval_seed": common.seed,
            "warnings": warn,
            "settings": {**target.settings, "ood_sources": ",".join(options.ood)},
        }
        scorer = Scorer(target, model, device, bs)
        if scorer.ensemble is not None:  # how its scores are defined: a setting of its rows, stated once in the header
            base["settings"] = {**base["settings"], "ensemble_scores": ENSEMBLE_NOTE.replace("; ", ", ")}
        z_in = clean_logits(target, bs, device)
        s_in = scorer.scores(z_in, target.test)
        fits = target_calibration(target, common.calibrator, model, device, bs)  # []: 'none' or nothing held out
        if not fits and target.calibration_note:
            base["warnings"] = "; ".join(filter(None, [base.get("warnings"), target.calibration_note]))
        single = scorer.ensemble is None
        s_in_cal = [calibrated_scores(f, z_in, single) for f in fits]  # once, for every source
        test_images = TestImages(target.test.x)
        rows = []
        for spec in options.ood:
            x = ood_images(spec, len(target.test), tuple(target.test.x.shape[1:]), common.seed, common.data_root)
            check_ood_images(spec, x, test_images)
            z_out, s_out = scorer.logits_and_scores(x)
            rows += score_rows(base, spec, s_in, s_out, len(x))
            for fitted, s_cal in zip(fits, s_in_cal):
                rows += calibrated_rows(base, spec, fitted, s_cal, calibrated_scores(fitted, z_out, single), len(x))
            rows += histogram_rows(base, spec, s_in["msp"], s_out["msp"], len(x))
        return rows


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


def check_ood_images(spec: str, x, test_images: TestImages) -> None:
    """At least 2 images, and not the evaluated test images under another name (by content)."""
    if len(x) < 2:
        raise UserError(f"ood: source '{spec}' expected at least 2 images, got {len(x)}")
    # generated noise is never the evaluation's images; ood_images maps every other source to the test images'
    # shape, so bytes compare directly
    same = 0 if spec.startswith("noise:") else test_images.shared(x)
    if same * 2 >= len(x):  # by content: another path, a symlink or a copy of the evaluation data
        raise UserError(
            f"ood: source '{spec}' expected data other than the in-distribution set, got images "
            f"identical to the evaluated test images ({same} of {len(x)})"
        )


def score_rows(base: dict, spec: str, s_in: dict, s_out: dict, n_ood: int, **extra) -> list[dict]:
    """AUROC, AUPR and FPR95 rows of each score (``extra``: the calibrator's fields)."""
    from mmix_eval.evaluate.records import record

    rows = []
    for sc in [s for s in SCORES if s in s_in]:
        label = f"{spec}, {sc.replace('_', ' ')} score"
        for metric, value in ranking_metrics(s_in[sc], s_out[sc]).items():
            rows.append(record(base, f"{spec}/{sc}", metric, value, label, ood=spec, score=sc, n_ood=n_ood, **extra))
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


def ood_images(spec: str, n: int, shape: tuple[int, int, int], seed: int, data_root=None):
    """n images of ``shape`` (C, H, W), uint8, from the source: noise seeded by (seed, kind), or a data set's
    test split (a seeded subset of n, fewer if it holds fewer) mapped to the shape."""
    import zlib

    import torch
    import torch.nn.functional as F

    c, h, w = shape
    if spec.startswith("noise:"):
        kind = spec.split(":", 1)[1]
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(spec.encode())) % 2**63)
        if kind == "gaussian":
            x = (0.5 + 0.25 * torch.randn(n, c, h, w, generator=g)).clamp(0, 1)
        elif kind == "uniform":
            x = torch.rand(n, c, h, w, generator=g)
        else:
            from mmix_eval.evaluate.evaluators.corruptions.corrupt import gaussian_filter

            field = (torch.rand(n, c, h, w, generator=g) < 0.7).float()
            x = (gaussian_filter(field, 1.0, truncate=4.0, mode="reflect") > 0.75).float()
        return (x * 255 + 0.5).to(torch.uint8)
    from mmix_eval.data import load_data

    d = load_data(spec, data_root, False, test_limit=n, subset_seed=seed, need_train=False)
    x = d.test.x
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif x.shape[1] == 3 and c == 1:
            x = (
                (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))
                .sum(1, keepdim=True)
                .round()
                .to(torch.uint8)
            )
        else:
            raise UserError(
                f"ood: source '{spec}' has {x.shape[1]}-channel images; the model takes {c} channels "
                f"(1 -> 3 and 3 -> 1 are mapped; give a source with 1, 3 or {c} channels)"
            )
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()
