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
an MSP or energy threshold keeps, not the max logit's order.

Feature scores (``features.py``: Mahalanobis, RMDS, KNN at every stage output and the penultimate features; ViM,
ReAct and ASH-S at the penultimate features), fitted on a seeded subset of the checkpoint's training images
(``fit_images``), are scored from features hooked in the same forward passes as the logits (``taps.py``); rows
``SOURCE/SCORE@LAYER`` with the layer, its width and the score's setting. A setting with a search space is the
papers' default unless ``ood_val`` names a validation source to choose it on (``feature_run.py``). torch loads
inside ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.evaluate.base import Evaluator, MetricSpec, OptionError
from mmix_eval.evaluate.evaluators.ood import openood
from mmix_eval.evaluate.evaluators.ood.feature_run import feature_run
from mmix_eval.evaluate.evaluators.ood.features import FEATURE_SCORES
from mmix_eval.evaluate.evaluators.ood.images import check_ood_images, check_source, ood_images
from mmix_eval.evaluate.evaluators.ood.logit_scores import (
    ENSEMBLE_NOTE,
    SCORES,
    Scorer,
    calibrated_rows,
    calibrated_scores,
    histogram_rows,
    score_rows,
)
from mmix_eval.evaluate.evaluators.ood.taps import resolve_taps
from mmix_eval.evaluate.sources import TestImages, preflight_sources, refuse_same
from mmix_eval.options import check_count

ALL_SCORES = SCORES + FEATURE_SCORES


@dataclass(frozen=True)
class OODOptions:
    ood: list[str] = field(
        default_factory=lambda: ["noise:gaussian", "noise:uniform", "noise:blobs"],
        metadata={
            "help": "OOD sources: noise:gaussian|uniform|blobs or data sets (svhn, cifar100, imagefolder:PATH, ...)"
        },
    )
    scores: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={
            "help": "scores: all (every one the model allows), or some of " + ",".join(ALL_SCORES),
        },
    )
    feature_layers: list[str] = field(
        default_factory=list,
        metadata={"help": "layers of the feature scores (default: every stage output and 'penultimate')"},
    )
    fit_images: int = field(
        default=5000,
        metadata={"help": "training images the feature scores are fitted on (a seeded subset; all if fewer)"},
    )
    knn_k: int = field(default=50, metadata={"help": "KNN's k (Sun et al.: 50), unless chosen on --ood-val"})
    ood_val: str = field(
        default="",
        metadata={
            "help": "an OOD validation source: KNN's k, ViM's D and ReAct's / ASH's percentile chosen on it "
            "against the held-out images (default: none, the papers' settings)"
        },
    )


class OOD(Evaluator):
    name = "ood"
    version = "4"  # 2: a deep ensemble's max logit and energy from its members' mean logits (were constant); 3: feature
    # scores at the stage outputs and the penultimate features; 4: AUROC's bootstrap replicates stored
    help = "out-of-distribution detection: AUROC, AUPR, FPR95 of logit scores and of feature scores at every layer"
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
        for k in ("ood", "scores", "feature_layers"):
            if isinstance(getattr(options, k), str):
                options = replace(options, **{k: [s.strip() for s in getattr(options, k).split(",") if s.strip()]})
        protocols = [s for s in options.ood if openood.is_openood(s) and s[len(openood.PREFIX) :] in openood.PROTOCOLS]
        if protocols:  # the protocol's test sets, and its validation split unless another is named
            val = options.ood_val or f"{protocols[0]}/val"
            return replace(options, ood=openood.expand(options.ood), ood_val=val)
        return options

    def validate(self, options) -> None:
        if not options.ood:
            raise OptionError("ood", "expected at least one OOD source, got none")
        for spec in options.ood:
            check_source(spec)
        if not options.scores:
            raise OptionError("scores", f"expected 'all' or some of {', '.join(ALL_SCORES)}, got none")
        for sc in options.scores:
            if sc != "all" and sc not in ALL_SCORES:
                raise OptionError(
                    "scores",
                    f"expected 'all' or some of {', '.join(ALL_SCORES)}, got '{sc}'{did_you_mean(sc, ALL_SCORES)}",
                )
        if "all" in options.scores and len(options.scores) > 1:
            raise OptionError("scores", f"expected 'all' alone or a list of scores, got {','.join(options.scores)}")
        if len(set(options.scores)) < len(options.scores):
            raise OptionError("scores", f"expected each score once, got {','.join(options.scores)}")
        check_count("fit_images", options.fit_images, 2, 10_000_000)
        check_count("knn_k", options.knn_k, 1, 100_000)
        if options.ood_val:
            check_source(options.ood_val, "ood_val")
            if options.ood_val in options.ood:
                raise OptionError(
                    "ood_val",
                    f"expected a validation source other than the test sources ({', '.join(options.ood)}), "
                    f"got '{options.ood_val}' (a setting chosen on a test source would be chosen by test numbers)",
                )

    def preflight(self, options, ctx) -> None:
        """Each data source exists and is not the bench's own data (by resolved path; by content when run); each
        OpenOOD list is there."""
        if options.feature_layers:  # the layers exist in the model, before anything trains
            resolve_taps(ctx.model, list(options.feature_layers))
        sources = [s for s in [*options.ood, options.ood_val] if s and not s.startswith("noise:")]
        gone = openood.missing(sources, openood.data_root(ctx.common.data_root or ctx.data_root))
        if gone:
            raise UserError(f"ood: expected OpenOOD's image list {gone}, got no such file ({openood.OPENOOD_URL})")
        preflight_sources(
            [s for s in sources if not openood.is_openood(s)], ctx, "ood: source", "the in-distribution set"
        )

    def run(self, target, options, common) -> list[dict]:
        from mmix_eval.evaluate.passes import clean_logits, setup, target_calibration

        data = str(target.base.get("data") or "")
        for spec in [*options.ood, options.ood_val]:
            if spec:
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
        asked = ALL_SCORES if options.scores == ["all"] else tuple(options.scores)
        logit_scores = tuple(s for s in SCORES if s in asked)
        scorer = Scorer(target, model, device, bs)
        if scorer.ensemble is not None:  # how its scores are defined: a setting of its rows, stated once in the header
            base["settings"] = {**base["settings"], "ensemble_scores": ENSEMBLE_NOTE.replace("; ", ", ")}
        feats = feature_run(target, model, options, asked, common, device, bs)
        if isinstance(feats, str):  # why there are none ('all' asked for them where the model allows)
            add_warning(base, feats)
            feats = None
        if feats is not None:
            base["settings"] = {**base["settings"], **feats.settings}
            z_in = feats.test_pass(target)  # the clean logits and the test features, one pass
            add_warning(base, feats.note)
        else:
            z_in = clean_logits(target, bs, device)
        s_in = scorer.scores(z_in, target.test)
        fits = target_calibration(target, common.calibrator, model, device, bs)  # []: 'none' or nothing held out
        if not fits:
            add_warning(base, target.calibration_note)
        single = scorer.ensemble is None
        s_in_cal = [calibrated_scores(f, z_in, single) for f in fits]  # once, for every source
        test_images = TestImages(target.test.x)
        if feats is not None and feats.val_spec:  # seeded apart from the test sources' images
            x = ood_images(feats.val_spec, len(target.test), tuple(target.test.x.shape[1:]), common.seed + 1,
                           common.data_root)  # fmt: skip
            check_ood_images(feats.val_spec, x, test_images)
            feats.choose_on(target, feats.val_spec, x)
        rows = []
        for spec in options.ood:
            x = ood_images(spec, len(target.test), tuple(target.test.x.shape[1:]), common.seed, common.data_root)
            check_ood_images(spec, x, test_images)
            if feats is not None:  # logits and features of the source in one pass
                z_out, f_out = feats.forward(x)
                s_out = scorer.scores(z_out, None)  # (no ensemble has feature scores)
            else:
                z_out, s_out = scorer.logits_and_scores(x)
            rows += score_rows(base, spec, pick(s_in, logit_scores), pick(s_out, logit_scores), len(x))
            for fitted, s_cal in zip(fits, s_in_cal):
                kept = pick(calibrated_scores(fitted, z_out, single), logit_scores)
                rows += calibrated_rows(base, spec, fitted, pick(s_cal, logit_scores), kept, len(x))
            if "msp" in logit_scores:
                rows += histogram_rows(base, spec, s_in["msp"], s_out["msp"], len(x))
            if feats is not None:
                rows += feats.rows(base, spec, f_out, len(x))
        return rows + openood.group_rows(rows)


def add_warning(base: dict, text: str | None) -> None:
    """Append ``text`` to the rows' warnings (nothing for None)."""
    if text:
        base["warnings"] = "; ".join(filter(None, [base.get("warnings"), text]))


def pick(scores: dict, names: tuple[str, ...]) -> dict:
    return {k: v for k, v in scores.items() if k in names}
