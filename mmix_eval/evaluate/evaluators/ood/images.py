"""The OOD images: seeded noise or a data set's test split mapped to the model's input (see the package's
docstring for the rule), and the checks that they are not the evaluated images."""

from __future__ import annotations

from mmix_eval.catalog import DATASETS
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.evaluate.base import OptionError
from mmix_eval.evaluate.evaluators.ood import openood
from mmix_eval.evaluate.sources import TestImages

NOISES = ("gaussian", "uniform", "blobs")


def check_source(spec: str, param: str = "ood") -> None:
    """A source spec is well formed (``param``: the option an error names)."""
    if openood.is_openood(spec):
        try:
            openood.parse(spec)
        except UserError as e:
            raise OptionError(param, str(e).removeprefix("ood: ")) from None
        return
    if spec.startswith("noise:"):
        kind = spec.split(":", 1)[1]
        if kind not in NOISES:
            raise OptionError(param, f"expected noise:{'|'.join(NOISES)}, got '{spec}'")
        return
    name, sep, _ = spec.partition(":")
    if name not in DATASETS.names() and not sep:  # NAME:ARG may also be a user's module:function
        raise OptionError(
            param,
            f"expected noise:KIND or a data set ({', '.join(DATASETS.names())}), got "
            f"'{spec}'{did_you_mean(name, DATASETS.names())}",
        )


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


def ood_images(spec: str, n: int, shape: tuple[int, int, int], seed: int, data_root=None):
    """n images of ``shape`` (C, H, W), uint8, from the source: noise seeded by (seed, kind), or a data set's
    test split or an OpenOOD list (a seeded subset of n, fewer if it holds fewer) mapped to the shape."""
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
    if openood.is_openood(spec):  # each image resized as it is read (the sets' sizes differ)
        x = openood.openood_images(spec, n, seed, openood.data_root(data_root), (h, w))
    else:
        from mmix_eval.data import load_data

        x = load_data(spec, data_root, False, test_limit=n, subset_seed=seed, need_train=False).test.x
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
