"""Common corruptions (Hendrycks & Dietterich, ICLR 2019): accuracy and calibration per corruption x severity,
from the published CIFAR-10-C / CIFAR-100-C files or generated on the fly for any data set.

Rows: one condition ``<corruption>-<severity>`` per pair (accuracy, relative accuracy, NLL, ECE, Brier, per-image
outcomes; its settings carry ``corruption`` and ``severity``, which marks it as per-severity detail that the
report plots rather than tabulates), one condition ``<corruption>`` with the means over its severities
(``mean_acc``, ``mean_nll``, ``mean_ece``), and ``mean``: every metric averaged over all corruptions and
severities (its ``acc`` is the mean corruption accuracy, the headline). The corruption error CE and mCE need a
reference model, so the report computes them against its baseline (Hendrycks' definition with the baseline in
place of AlexNet). torch loads inside ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from mmix_eval.errors import mention
from mmix_eval.evaluate.base import SHIFT_METRICS, Evaluator, MetricSpec, OptionError
from mmix_eval.evaluate.evaluators.corruptions.table import ALL, BENCHMARK, COLOUR, GENERATED, SEVERITIES

SOURCES = ("files", "generated")
SOURCE_LABEL = {
    "files": "CIFAR-C files (Hendrycks & Dietterich 2019)",
    "generated": "generated, mmix-eval implementation (CIFAR-C parameters)",
}


@dataclass(frozen=True)
class CorruptionOptions:
    source: Literal["files", "generated"] = field(
        default="files",
        metadata={
            "help": "files (the published CIFAR-10-C / CIFAR-100-C .npy) or generated (on the fly, any data set)"
        },
    )
    corruptions: list[str] = field(
        default_factory=lambda: ["benchmark"],
        metadata={
            "help": "names, or 'benchmark' (the 15; with --source generated the 10 of them it can generate) or 'all'"
        },
    )
    severities: list[int] = field(default_factory=lambda: list(SEVERITIES), metadata={"help": "severities 1..5"})
    files: str | None = field(
        default=None,
        metadata={
            "help": "the folder of <corruption>.npy + labels.npy (CIFAR-10-C, CIFAR-100-C) or of <corruption>/<severity>/"
            "<class>/ image files (Tiny-ImageNet-C); default <data root>/CIFAR-10-C, CIFAR-100-C or Tiny-ImageNet-C"
        },
    )


def resolve(names: list[str], source: str) -> list[str]:
    """The corruption list the keywords stand for, checked against what the source can give."""
    available = ALL if source == "files" else GENERATED
    out: list[str] = []
    for n in names:
        if n == "benchmark":
            out += [c for c in BENCHMARK if c in available]
        elif n == "all":
            out += list(available)
        elif n in available:
            out.append(n)
        elif n in ALL:
            raise OptionError(
                "corruptions",
                f"'{n}' is read from the published files only (it needs ImageNet-C's "
                f"assets or ImageMagick); generated: {', '.join(GENERATED)}",
            )
        else:
            from mmix_eval.errors import did_you_mean

            raise OptionError(
                "corruptions",
                f"expected names from {', '.join(ALL)} (or benchmark, all), got '{n}'{did_you_mean(n, list(ALL))}",
            )
    return list(dict.fromkeys(out))


class Corruptions(Evaluator):
    name = "corruptions"
    version = "2"  # 2: debiased CE and SmoothECE recorded
    help = "accuracy and calibration under common corruptions (CIFAR-10-C / CIFAR-100-C files, or generated)"
    Options = CorruptionOptions
    metrics = {
        **SHIFT_METRICS,
        "mean_acc": MetricSpec("accuracy (%), mean over severities", "higher", ".2f"),
        "mean_nll": MetricSpec("NLL, mean over severities", "lower"),
        "mean_ece": MetricSpec("ECE, mean over severities", "lower"),
    }

    def resolve(self, options):
        """The keywords (benchmark, all) as the corruption names they stand for; severities sorted, once each."""
        if options.source not in SOURCES:
            raise OptionError("source", f"expected one of {', '.join(SOURCES)}, got '{options.source}'")
        names = options.corruptions.split(",") if isinstance(options.corruptions, str) else list(options.corruptions)
        sev = options.severities
        if not sev or any(isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES for s in sev):
            raise OptionError("severities", f"expected severities among 1..5, got {sev!r}")
        return replace(
            options,
            corruptions=resolve([n.strip() for n in names if n.strip()], options.source),
            severities=sorted(set(sev)),
        )

    def validate(self, options) -> None:
        if not options.corruptions:
            raise OptionError("corruptions", "expected at least one corruption, got none")

    def preflight(self, options, ctx) -> None:
        """Colour corruptions on grayscale data leave something to run; corruption files exist where they are read."""
        from mmix_eval.evaluate.evaluators.corruptions.files import check_folder

        names, _ = runnable(list(options.corruptions), ctx.channels, ctx.data)
        if options.source == "files":
            folder = files_folder(
                options.files, ctx.data, ctx.common.data_root or ctx.data_root, ("files: FOLDER", "source: generated")
            )
            check_folder(folder, names, ctx.data.split(":", 1)[0])

    def run(self, target, options, common) -> list[dict]:
        import warnings

        import numpy as np

        from mmix_eval.evaluate.passes import shift_rows

        idx = np.asarray(target.indices, dtype=np.int64)
        channels = int(target.test.x.shape[1])
        names, colour = runnable(list(options.corruptions), channels, str(target.base.get("data")))
        if colour:  # HSV needs RGB: left out, and said so in every record
            msg = f"{', '.join(colour)} left out: they need RGB images, these have {channels} channel(s)"
            warnings.warn(f"{target.run}: {msg}", stacklevel=2)
            target.warnings.append(msg)
        settings = {
            "source": SOURCE_LABEL[options.source],
            "corruption_set": ",".join(names),
            "severities": ",".join(map(str, options.severities)),
        }
        if options.source == "files":
            shifts = file_shifts(target, options, common, names, idx, settings)
        else:
            shifts = generated_shifts(options, common, names, idx)
        rows = shift_rows(self, target, common, settings, shifts)
        return rows + summary_rows(rows, names)


def generated_shifts(options, common, names: list[str], idx) -> list:
    """One condition per corruption × severity, generated on the fly from (seed, image index)."""
    from mmix_eval.evaluate.evaluators.corruptions.corrupt import corrupt
    from mmix_eval.evaluate.passes import Shift

    shifts = []
    for c in names:
        for s in options.severities:

            def make(model, device, c=c, s=s):
                return lambda x, y, i, j: corrupt(c, s, x, idx[i:j], common.seed)

            shifts.append(Shift(f"{c}-{s}", f"{c}, severity {s}", make, {"corruption": c, "severity": s}))
    return shifts


def file_shifts(target, options, common, names: list[str], idx, settings: dict) -> list:
    """One condition per corruption × severity, read from the published files (CIFAR-C .npy maps or Tiny-ImageNet-C
    image files), one corruption's file open at a time; ``settings`` gets the source and folder."""
    from contextlib import contextmanager

    import torch

    from mmix_eval.evaluate.evaluators.corruptions.files import (
        CorruptionFiles,
        ImageCorruptionFiles,
        check_folder,
        check_labels,
        image_layout,
        list_image_files,
    )
    from mmix_eval.evaluate.passes import Shift

    data_name = str(target.base.get("data") or "").split(":", 1)[0]
    folder = files_folder(
        options.files,
        str(target.base.get("data")),
        common.data_root,
        (f"{mention('files')} FOLDER", f"{mention('source')} generated"),
    )
    check_folder(folder, names, data_name)
    shape = tuple(target.test.x.shape[1:])
    if image_layout(folder):  # Tiny-ImageNet-C: image files found by name, checked by class folder
        listing = list_image_files(folder, names, options.severities, *tiny_names(target, common), idx)
        settings["source"] = "Tiny-ImageNet-C files (Hendrycks & Dietterich 2019)"
        open_one = lambda c: ImageCorruptionFiles(listing, c, idx, shape)  # noqa: E731
    else:
        test_size = check_labels(folder, idx, target.test.y.cpu().numpy(), target.test_size)
        open_one = lambda c: CorruptionFiles(folder, c, test_size, shape)  # noqa: E731
    settings["files"] = str(folder)
    opened: dict = {}
    shifts = []
    for c in names:
        for s in options.severities:

            @contextmanager
            def opened_file(c=c):  # one corruption's map at a time, closed after the condition
                opened["f"] = open_one(c)
                try:
                    yield
                finally:
                    opened.pop("f").close()

            def make(model, device, s=s):
                def read(x, y, i, j):
                    u8 = torch.from_numpy(opened["f"].rows(s, idx[i:j]))
                    return u8.to(device, non_blocking=True).to(x.dtype).div_(255.0)

                return read

            shifts.append(Shift(f"{c}-{s}", f"{c}, severity {s}", make, {"corruption": c, "severity": s}, opened_file))
    return shifts


def summary_rows(rows: list[dict], corruptions: list[str]) -> list[dict]:
    """Per corruption, the means over its severities (acc, NLL, ECE); over everything, every metric's mean; the
    probability metrics' means again after the calibrator, from its rows (never mixed with the raw ones)."""
    import math

    from mmix_eval.evaluate.records import PER_IMAGE, calibrator_of, record

    detail = [r for r in rows if (r["settings"] or {}).get("severity") is not None]
    if not detail:
        return []
    base = {k: v for k, v in detail[0].items() if k != PER_IMAGE}
    keep = {k: v for k, v in base["settings"].items() if k not in ("corruption", "severity", "strength")}
    base["settings"] = keep
    mean = lambda vs: sum(vs) / len(vs) if vs and not any(math.isnan(v) for v in vs) else float("nan")
    out = []
    for cal in dict.fromkeys(["none", *(calibrator_of(r) for r in detail)]):
        rs = [r for r in detail if calibrator_of(r) == cal]
        extra = {k: v for k, v in (rs[0]["settings"] or {}).items() if k.startswith("calibrator_")} if rs else {}
        for c in corruptions:
            for metric, into in (("acc", "mean_acc"), ("nll", "mean_nll"), ("ece", "mean_ece")):
                vs = [r["value"] for r in rs if r["settings"]["corruption"] == c and r["metric"] == metric]
                if vs:
                    out.append(record(base, c, into, mean(vs), c, calibrator=cal, corruption=c, **extra))
        for metric in ("acc", "rel_acc", "nll", "ece", "brier"):
            vs = [r["value"] for r in rs if r["metric"] == metric]
            if vs:
                out.append(
                    record(
                        base,
                        "mean",
                        metric,
                        mean(vs),
                        f"corruptions, mean over {len(vs)} conditions",
                        calibrator=cal,
                        **extra,
                    )
                )
    return out


def runnable(names: list[str], channels: int, data: str) -> tuple[list[str], list[str]]:
    """(the corruptions that run on images of ``channels`` channels, the colour ones left out: HSV needs RGB);
    a UserError when nothing is left."""
    from mmix_eval.errors import UserError

    colour = [c for c in names if c in COLOUR]
    if channels == 3 or not colour:
        return names, []
    kept = [c for c in names if c not in COLOUR]
    if not kept:
        raise UserError(
            f"corruptions: {', '.join(colour)} expected 3-channel (RGB) images, got {channels} channel(s) "
            f"in {data}; choose others with the corruptions option"
        )
    return kept, colour


def tiny_names(target, common) -> tuple[list[str], list[str], object]:
    """(test image file names, class ids, labels) of the evaluation data's whole test split, for image-file
    corruption folders: only a data set that records its test images' names (tinyimagenet) has them."""
    from mmix_eval.data import load_data_cached
    from mmix_eval.errors import UserError

    spec = str(target.base.get("data") or "")
    d = load_data_cached(spec, common.data_root) if spec and spec != "tensors" else None
    if d is None or "test_names" not in d.extra or "wnids" not in d.extra:
        raise UserError(
            f"corruptions: image-file corruption folders (Tiny-ImageNet-C) expected data that names its test "
            f"images (tinyimagenet[:PATH]), got '{spec}'"
        )
    return d.extra["test_names"], d.extra["wnids"], d.test.y.numpy()


def files_folder(files, data: str, data_root, how: tuple[str, str]):
    """Where the corruption files are: ``files`` if given, else the data root's published folder (cifar10,
    cifar100); a UserError otherwise, saying how (``how``: the option as a flag or as a bench key, and the
    alternative)."""
    from pathlib import Path

    from mmix_eval.errors import UserError
    from mmix_eval.evaluate.evaluators.corruptions.files import default_folder

    folder = Path(files) if files else default_folder(data.split(":", 1)[0], data_root)
    if folder is None:
        raise UserError(
            f"corruptions: expected {how[0]} for data '{data}' (published files exist for cifar10, "
            f"cifar100 and tinyimagenet), or {how[1]}"
        )
    return folder
