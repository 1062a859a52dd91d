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

from dataclasses import dataclass, field

from mmix_eval.catalog import DATASETS
from mmix_eval.errors import did_you_mean
from mmix_eval.evaluate.base import Evaluator, MetricSpec, OptionError

NOISES = ("gaussian", "uniform", "blobs")
SCORES = ("msp", "max_logit", "energy")
CALIBRATED_SCORES = ("msp", "energy")  # recorded again after the post-hoc calibrator (the max logit's ranking is kept)
HIST_BINS = 20


@dataclass
class OODOptions:
    ood: list[str] = field(default_factory=lambda: ["noise:gaussian", "noise:uniform", "noise:blobs"], metadata={
        "help": "OOD sources: noise:gaussian|uniform|blobs or data sets (svhn, cifar100, imagefolder:PATH, ...)"})


def check_source(spec: str) -> None:
    if spec.startswith("noise:"):
        kind = spec.split(":", 1)[1]
        if kind not in NOISES:
            raise OptionError("ood", f"expected noise:{'|'.join(NOISES)}, got '{spec}'")
        return
    name, sep, _ = spec.partition(":")
    if name not in DATASETS.names() and not sep:  # NAME:ARG may also be a user's module:function
        raise OptionError("ood", f"expected noise:KIND or a data set ({', '.join(DATASETS.names())}), got "
                                 f"'{spec}'{did_you_mean(name, DATASETS.names())}")


def resolved(spec: str) -> str:
    """A data spec with its path resolved (realpath: './odd', 'odd/', an absolute path and a symlink are one) and
    its decode policy dropped (``PATH?image_size=32`` is the same files as ``PATH``, cropped)."""
    import os

    name, sep, arg = spec.partition(":")
    path, q, query = arg.rpartition("?")
    if not q or "=" not in query:
        path = arg
    if sep and path and not name.startswith("noise") and os.path.exists(path):
        return f"{name}:{os.path.realpath(path)}"
    return spec


def same_source(spec: str, data: str) -> bool:
    return spec == data or resolved(spec) == resolved(data)


def refuse_same(spec: str, data: str, what: str, other: str) -> None:
    """A data source that is the evaluation data itself (by resolved path) is refused: ``what`` names the option
    ("ood: source"), ``other`` what it must differ from."""
    from mmix_eval.errors import UserError

    if data and same_source(spec, data):
        raise UserError(f"{what} '{spec}' expected data other than {other}, got the evaluation data itself ({data})")


def preflight_sources(specs, ctx, what: str, other: str) -> None:
    """Before a bench trains: each data source loads (two test images) and is not the bench's own data."""
    from mmix_eval.data import load_data

    for spec in specs:
        refuse_same(spec, ctx.data, what, other)
        load_data(spec, ctx.common.data_root or ctx.data_root, False, test_limit=2, need_train=False)


def image_digests(x) -> set[bytes]:
    """One 16-byte BLAKE2b digest per image of a uint8 (N, C, H, W) tensor: images compared by content, a chunk
    at a time (a memory-mapped test set keeps only the chunk's pages)."""
    import hashlib

    from mmix_eval.data.mapped import release_pages

    out = set()
    for chunk in x.split(4096):
        out.update(hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in chunk.cpu().numpy())
        release_pages(x, chunk.nbytes)
    return out


def shared_images(seen: set[bytes], b) -> int:
    """How many images of ``b`` are byte for byte among the images whose ``image_digests`` are ``seen``."""
    import hashlib

    return sum(hashlib.blake2b(r.tobytes(), digest_size=16).digest() in seen for r in b.cpu().numpy())


def ranking_metrics(score_in, score_out) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out and FPR at 95 % TPR, in-distribution positive, from numpy score arrays."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s = np.concatenate([score_in, score_out]).astype(np.float64)
    y = np.concatenate([np.ones(len(score_in)), np.zeros(len(score_out))])
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "aupr_in": float(average_precision_score(y, s)),
            "aupr_out": float(average_precision_score(1 - y, -s)), "fpr95": float(fpr[np.searchsorted(tpr, 0.95)])}


def scores(logits, mean_logits=None) -> dict:
    """The three scores of a model's logits. ``mean_logits``: a deep ensemble's members' mean logits, which its
    max-logit and energy scores are computed from (its own logits, the log of the mean softmax, have a logsumexp
    of 0 for every image); its max softmax stays that of the mean softmax."""
    import torch

    z = logits if mean_logits is None else mean_logits
    return {"msp": torch.softmax(logits, 1).max(1).values, "max_logit": z.max(1).values, "energy": torch.logsumexp(z, 1)}


ENSEMBLE_NOTE = ("a deep ensemble's max softmax of the mean softmax, max logit and energy from the members' mean logits, "
                 "no calibrated energy (the calibrator is fitted to the averaged probabilities, not to the mean logits)")


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

    def validate(self, options) -> None:
        if isinstance(options.ood, str):
            options.ood = [s.strip() for s in options.ood.split(",") if s.strip()]
        if not options.ood:
            raise OptionError("ood", "expected at least one OOD source, got none")
        for spec in options.ood:
            check_source(spec)

    def preflight(self, options, ctx) -> None:
        """Each data source exists and is not the bench's own data (by resolved path; by content when run)."""
        preflight_sources([s for s in options.ood if not s.startswith("noise:")], ctx, "ood: source",
                          "the in-distribution set")

    def run(self, target, options, common) -> list[dict]:
        import numpy as np
        import torch

        from mmix_eval.errors import UserError
        from mmix_eval.evaluate.images import Images
        from mmix_eval.evaluate.passes import clean_logits, logits_of, setup, target_calibration
        from mmix_eval.evaluate.records import record

        data = str(target.base.get("data") or "")
        for spec in options.ood:
            refuse_same(spec, data, "ood: source", "the in-distribution set")
        model, device, bs, warn = setup(target, common.device, common.batch_size)
        shape = tuple(target.test.x.shape[1:])
        n = len(target.test)
        base = {**target.base, "evaluator": self.name, "n": n, "eval_seed": common.seed, "warnings": warn,
                "settings": {**target.settings, "ood_sources": ",".join(options.ood)}}
        from mmix_eval.evaluate.ensemble import Ensemble, MeanLogits

        ensemble = MeanLogits(target.model).to(device).eval() if isinstance(target.model, Ensemble) else None
        if ensemble is not None:  # how its scores are defined: a setting of its rows, stated once in the header
            base["settings"] = {**base["settings"], "ensemble_scores": ENSEMBLE_NOTE.replace("; ", ", ")}

        def mean_of(x):
            return logits_of(ensemble, x, bs, device, precision=target.precision) if ensemble is not None else None

        z_in = clean_logits(target, bs, device)
        s_in = {k: v.numpy() for k, v in scores(z_in, mean_of(target.test)).items()}
        fitted = target_calibration(target, common.calibrator, model, device, bs)  # None: 'none' or nothing held out
        if fitted is not None:  # the calibrated scores: max softmax and energy change with the calibrator, the max
            # logit under a temperature only rescales (its ranking, so its AUROC, is the raw one)
            s_in_cal = {k: v.numpy() for k, v in scores(fitted.apply(z_in)).items()}
            calibrated = [s for s in CALIBRATED_SCORES if ensemble is None or s == "msp"]
            cbase = {**base, "warnings": "; ".join(filter(None, [base.get("warnings"), fitted.note]))} if fitted.note else base
        elif target.calibration_note:
            base["warnings"] = "; ".join(filter(None, [base.get("warnings"), target.calibration_note]))
        edges = np.linspace(0, 1, HIST_BINS + 1)
        rows, seen = [], None
        for spec in options.ood:
            x = ood_images(spec, n, shape, common.seed, common.data_root)
            if len(x) < 2:
                raise UserError(f"ood: source '{spec}' expected at least 2 images, got {len(x)}")
            if spec.startswith("noise:"):
                same = 0  # generated here: never the evaluation's images
            else:  # ood_images maps every source to the test images' shape, so bytes compare directly
                seen = seen if seen is not None else image_digests(target.test.x)  # once per run, not per source
                same = shared_images(seen, x)
            if same * 2 >= len(x):  # by content: another path, a symlink or a copy of the evaluation data
                raise UserError(f"ood: source '{spec}' expected data other than the in-distribution set, got images "
                                f"identical to the evaluated test images ({same} of {len(x)})")
            images = Images(x, torch.zeros(len(x)))
            z_out = logits_of(model, images, bs, device, precision=target.precision)
            s_out = {k: v.numpy() for k, v in scores(z_out, mean_of(images)).items()}
            for sc in SCORES:
                label = f"{spec}, {sc.replace('_', ' ')} score"
                for metric, value in ranking_metrics(s_in[sc], s_out[sc]).items():
                    rows.append(record(base, f"{spec}/{sc}", metric, value, label, ood=spec, score=sc,
                                       n_ood=len(x)))
            if fitted is not None:
                s_out_cal = {k: v.numpy() for k, v in scores(fitted.apply(z_out)).items()}
                for sc in calibrated:
                    label = f"{spec}, {sc.replace('_', ' ')} score"
                    for metric, value in ranking_metrics(s_in_cal[sc], s_out_cal[sc]).items():
                        rows.append(record(cbase, f"{spec}/{sc}", metric, value, label, ood=spec, score=sc,
                                           n_ood=len(x), calibrator=fitted.name, **fitted.settings))
            for metric, vals in (("hist_in", s_in["msp"]), ("hist_out", s_out["msp"])):
                counts = np.histogram(np.clip(vals, 0, 1), bins=edges)[0] / len(vals)
                for b, c in enumerate(counts):
                    rows.append(record(base, f"{spec}/msp", metric, float(c), f"{spec}, max softmax", bin=b,
                                       ood=spec, score="msp", n_ood=len(x)))
        return rows


def ood_images(spec: str, n: int, shape: tuple[int, int, int], seed: int, data_root=None):
    """n images of ``shape`` (C, H, W), uint8, from the source: noise seeded by (seed, kind), or a data set's
    test split (a seeded subset of n, fewer if it holds fewer) mapped to the shape."""
    import zlib

    import torch
    import torch.nn.functional as F

    from mmix_eval.errors import UserError

    c, h, w = shape
    if spec.startswith("noise:"):
        kind = spec.split(":", 1)[1]
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(spec.encode())) % 2**63)
        if kind == "gaussian":
            x = (0.5 + 0.25 * torch.randn(n, c, h, w, generator=g)).clamp(0, 1)
        elif kind == "uniform":
            x = torch.rand(n, c, h, w, generator=g)
        else:
            from mmix_eval.evaluate.corrupt import gaussian_filter

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
            x = (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).round().to(torch.uint8)
        else:
            raise UserError(f"ood: source '{spec}' has {x.shape[1]}-channel images; the model takes {c} channels "
                            f"(1 -> 3 and 3 -> 1 are mapped; give a source with 1, 3 or {c} channels)")
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()
