"""Natural distribution shift: the same classes, new photographs (CIFAR-10.1, CIFAR-10.2, any image folder).

Each set is a data spec whose test split is evaluated whole: ``cifar10.1[:PATH]``, ``cifar10.2[:PATH]``,
``imagefolder:PATH`` (``?image_size=S`` for photos of other sizes), or any data set the project loads. Its
classes must be the checkpoint's, in order, or are remapped by name with ``--class-map by-name`` (a YAML map
too), as for the evaluation data itself; its images must have the model's input shape. Rows per set: accuracy,
relative accuracy (% of the model's own clean accuracy), and every probability metric (NLL, ECE, Brier, …),
again after the calibrator when one is fitted; per-image outcomes are stored with the set's own image indices.
The report adds the accuracy-on-the-line plot (Miller et al. 2021: shift accuracy against clean accuracy,
per checkpoint, on probit axes, with the linear fit over all checkpoints) and each method's effective
robustness (its distance above that line, Taori et al. 2020). torch loads inside ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mmix_eval.catalog import DATASETS
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.evaluate.base import SHIFT_METRICS, Evaluator, OptionError
from mmix_eval.evaluate.records import attach
from mmix_eval.evaluate.sources import TestImages, refuse_same


@dataclass(frozen=True)
class ShiftOptions:
    sets: list[str] = field(
        default_factory=lambda: ["cifar10.1", "cifar10.2"],
        metadata={
            "help": "natural-shift test sets: cifar10.1[:PATH], cifar10.2[:PATH], imagefolder:PATH[?image_size=S], "
            "or any data set (its test split); default: CIFAR-10.1 and CIFAR-10.2 under --data-root"
        },
    )


def condition_name(spec: str) -> str:
    """The set's condition name: the data set's name, with an image folder's folder name."""
    from pathlib import PurePath

    name, sep, arg = spec.partition(":")
    if name in ("imagefolder", "tinyimagenet") and sep and arg:
        return f"{name}-{PurePath(arg.rpartition('?')[0] or arg).name or 'root'}"
    return name


class Shift(Evaluator):
    name = "shift"
    version = "2"  # 2: debiased CE and SmoothECE recorded
    help = "natural distribution shift: accuracy and calibration on new test sets of the same classes (CIFAR-10.1/10.2)"
    Options = ShiftOptions
    metrics = SHIFT_METRICS

    def resolve(self, options):
        if isinstance(options.sets, str):
            return replace(options, sets=[s.strip() for s in options.sets.split(",") if s.strip()])
        return options

    def validate(self, options) -> None:
        if not options.sets:
            raise OptionError("sets", "expected at least one test set, got none")
        for spec in options.sets:
            name, sep, _ = spec.partition(":")
            if name not in DATASETS.names() and not sep:
                raise OptionError(
                    "sets",
                    f"expected a data set ({', '.join(DATASETS.names())}), got "
                    f"'{spec}'{did_you_mean(name, DATASETS.names())}",
                )
        names = [condition_name(s) for s in options.sets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise OptionError(
                "sets", f"expected sets with different names, got '{dup[0]}' twice (give folders of different names)"
            )

    def preflight(self, options, ctx) -> None:
        """Each set exists, is not the evaluation data itself, and has test images of the model's input shape
        (a set of another shape was refused only after training)."""
        from mmix_eval.data import load_data

        for spec in options.sets:
            refuse_same(spec, ctx.data, "shift: set", "the evaluation data")
            d = load_data(spec, ctx.common.data_root or ctx.data_root, False, test_limit=2, need_train=False)
            if ctx.image_shape is not None:
                check_shape(spec, tuple(d.test.x.shape[1:]), tuple(ctx.image_shape))

    def run(self, target, options, common) -> list[dict]:
        import numpy as np

        from mmix_eval.evaluate.calibrate import conformal_thresholds
        from mmix_eval.evaluate.metrics import condition_rows
        from mmix_eval.evaluate.passes import clean_logits, logits_of, setup, target_calibration

        model, device, bs, warn = setup(target, common.device, common.batch_size)
        calibration = target_calibration(target, common.calibrator, model, device, bs)
        conformal = conformal_thresholds(target, calibration, common.conformal_alpha, common.seed)
        warn = "; ".join(filter(None, [warn, target.calibration_note]))
        base = {
            **target.base,
            "evaluator": self.name,
            "n": len(target.test),
            "eval_seed": common.seed,
            "warnings": warn,
            "settings": {**target.settings, "shift_sets": ",".join(options.sets)},
        }
        rows = condition_rows(
            base,
            "clean",
            clean_logits(target, bs, device),
            target.test.y,
            common.bins,
            "Clean test images",
            calibration=calibration,
            conformal=conformal,
        )
        clean_acc = rows[0]["value"]
        test_images = TestImages(target.test.x)
        for spec in options.sets:
            images = shift_images(spec, target, common, test_images)
            logits = logits_of(model, images, bs, device, precision=target.precision)
            name = condition_name(spec)
            # n stays the evaluated test subset's (what the report groups records by); the set's size is a setting
            got = condition_rows(
                base,
                name,
                logits,
                images.y,
                common.bins,
                f"{name} ({len(images):,} images)",
                clean_acc,
                calibration,
                conformal,
                shift_set=spec,
                set_images=len(images),
            )
            attach(got[0], indices=np.arange(len(images), dtype=np.int64))  # the set's own images, not the test subset
            rows += got
        return rows


def check_shape(spec: str, got: tuple, want: tuple) -> None:
    """A set's images have the model's input shape (C, H, W), or a one-line error saying how to resize them."""
    if got != want:
        c, h, w = got
        raise UserError(
            f"shift: set '{spec}' expected images of the model's input, {want[0]} x {want[1]} x {want[2]} "
            f"(channels x height x width), got {c} x {h} x {w}"
            f"{' (give ?image_size=S to resize image files)' if (h, w) != want[1:] else ''}"
        )


def shift_images(spec: str, target, common, test_images: TestImages):
    """A set's test split, checked (not the evaluation data, of the model's input shape, not a copy of the
    evaluated test images) and labelled in the checkpoint's classes."""
    from mmix_eval.data import load_data
    from mmix_eval.evaluate.images import Images
    from mmix_eval.evaluate.target import class_lookup

    refuse_same(spec, str(target.base.get("data") or ""), "shift: set", "the evaluation data")
    d = load_data(spec, common.data_root, False, need_train=False)
    check_shape(spec, tuple(d.test.x.shape[1:]), tuple(target.test.x.shape[1:]))
    same = test_images.shared(d.test.x)
    if same * 2 >= len(d.test):  # by content: a copy of the evaluated test images under another name
        raise UserError(
            f"shift: set '{spec}' expected images other than the evaluated test images, got "
            f"{same} of its {len(d.test)} images identical to them"
        )
    lut = class_lookup(
        {"data": {"classes": target.classes}} if target.classes else {},
        d,
        target.settings.get("class_map") or common.class_map,
    )
    return Images(d.test.x, lut[d.test.y] if lut is not None else d.test.y)
