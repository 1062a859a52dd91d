"""The OpenOOD v1.5 protocol's OOD sets (Zhang et al. 2023, ``openood/evaluation_api/datasets.py``), read as its
download script lays them out under the data root:

    <data root>/openood/benchmark_imglist/<id>/test_<set>.txt, val_tin.txt   (lines: "<image path> <extra>")
    <data root>/openood/images_classic/<image path>                          (each listed image)

``openood:cifar10`` (or ``openood:cifar100``) expands to the protocol's test sets, each a source of its own with
its group: near-OOD (CIFAR-100 or CIFAR-10, and Tiny-ImageNet's OpenOOD list) and far-OOD (MNIST, SVHN, Textures,
Places365); ``openood:cifar10/val`` is the protocol's OOD validation split (Tiny-ImageNet images disjoint from the
test list), which chooses the feature scores' settings. From each list a seeded subset of as many images as the
evaluated test subset is read (each decoded as RGB, as OpenOOD's ImglistDataset does), then mapped to the model's
input by the evaluator's rule (antialiased bilinear resize; 3 -> 1 channels by luminance). OpenOOD publishes no
checksums for these files: none are checked. A missing list or image is one line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mmix_eval.errors import UserError
from mmix_eval.evaluate.record_types import PER_IMAGE, attach

OPENOOD_URL = "https://github.com/Jingkang50/OpenOOD (scripts/download/download.py --contents datasets ood_v1.5)"
PROTOCOLS = {
    "cifar10": {"near": ("cifar100", "tin"), "far": ("mnist", "svhn", "texture", "places365"), "val": "tin"},
    "cifar100": {"near": ("cifar10", "tin"), "far": ("mnist", "svhn", "texture", "places365"), "val": "tin"},
}
PREFIX = "openood:"


def is_openood(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
    """('cifar10', 'svhn' | 'val' | None) of 'openood:cifar10[/SET]', checked."""
    body = spec[len(PREFIX) :]
    protocol, _, which = body.partition("/")
    if protocol not in PROTOCOLS:
        raise UserError(f"ood: source '{spec}' expected openood:{'|'.join(PROTOCOLS)}[/SET], got '{protocol}'")
    sets = [*PROTOCOLS[protocol]["near"], *PROTOCOLS[protocol]["far"], "val"]
    if which and which not in sets:
        raise UserError(
            f"ood: source '{spec}' expected a set of the {protocol} protocol ({', '.join(sets)}), got '{which}'"
        )
    return protocol, which or None


def expand(specs: list[str]) -> list[str]:
    """Each 'openood:ID' replaced by its test sets, near-OOD first; every other source as it is."""
    out = []
    for s in specs:
        if is_openood(s) and parse(s)[1] is None:
            p = PROTOCOLS[parse(s)[0]]
            out += [f"{s}/{name}" for name in (*p["near"], *p["far"])]
        else:
            out.append(s)
    return list(dict.fromkeys(out))


def group_of(spec: str) -> str | None:
    """'near' or 'far' for a protocol test set, else None."""
    if not is_openood(spec):
        return None
    protocol, which = parse(spec)
    return next((g for g in ("near", "far") if which in PROTOCOLS[protocol][g]), None)


def list_path(spec: str, root) -> Path:
    protocol, which = parse(spec)
    name = f"val_{PROTOCOLS[protocol]['val']}.txt" if which == "val" else f"test_{which}.txt"
    return Path(root) / "openood" / "benchmark_imglist" / protocol / name


def image_names(spec: str, root) -> list[str]:
    """The image paths the set's list names (relative to images_classic/), checked: no absolute or upward path."""
    path = list_path(spec, root)
    if not path.is_file():
        raise UserError(
            f"ood: source '{spec}' expected OpenOOD's image list {path}, got no such file (OpenOOD v1.5's "
            f"benchmark_imglist/ and images_classic/ under {Path(root) / 'openood'}; published at {OPENOOD_URL})"
        )
    names = []
    from mmix_eval.io import read_bounded_text

    for k, line in enumerate(read_bounded_text(path, "OpenOOD image list").splitlines(), start=1):
        if not line.strip():
            continue
        name = line.strip().split(" ", 1)[0]
        if name.startswith("/") or ".." in Path(name).parts:
            raise UserError(f"ood: image list {path} line {k} expected a path inside images_classic/, got '{name}'")
        names.append(name)
    if len(names) < 2:
        raise UserError(f"ood: image list {path} expected at least 2 images, got {len(names)}")
    return names


def openood_images(spec: str, n: int, seed: int, root, size: tuple[int, int]):
    """A seeded subset of n images of the set (fewer if its list holds fewer) as uint8 (N, 3, H, W) at ``size``,
    each decoded as RGB and resized by the evaluator's rule."""
    import zlib

    import numpy as np
    import torch
    import torch.nn.functional as F

    from mmix_eval.data.decode import _open
    from mmix_eval.io import IMAGE_CAP, read_bounded

    names = image_names(spec, root)
    rng = np.random.default_rng([seed, zlib.crc32(spec.encode())])
    picked = sorted(rng.permutation(len(names))[:n].tolist())
    base = Path(root) / "openood" / "images_classic"
    out = []
    for i in picked:
        path = base / names[i]
        if not path.is_file():
            raise UserError(
                f"ood: source '{spec}' expected the image {path} that {list_path(spec, root).name} lists, got no "
                f"such file (published at {OPENOOD_URL})"
            )
        with _open(str(path), read_bounded(path, "image", IMAGE_CAP)) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
            x = x.round().clamp(0, 255).to(torch.uint8)
        out.append(x)
    return torch.cat(out)


def missing(specs: list[str], root) -> str | None:
    """The first protocol list that is not there (checked before a bench trains), or None."""
    for s in specs:
        if is_openood(s) and not list_path(s, root).is_file():
            return str(list_path(s, root))
    return None


def data_root(root) -> Path:
    from mmix_eval.data.core import default_data_root

    return Path(os.path.expanduser(str(root))) if root else default_data_root()


def group_rows(rows: list[dict]) -> list[dict]:
    """The protocol's per-group rows, as OpenOOD reports them: each metric of each score (layer, calibrator) averaged
    over the group's sets (near: CIFAR-100 / CIFAR-10 and TIN; far: MNIST, SVHN, Textures, Places365), where every
    set of the group was scored. Each set's own rows are marked with its group and leave the main table to the
    groups'."""
    by: dict = {}
    for r in rows:
        spec = (r["settings"] or {}).get("ood") or ""
        group = group_of(spec)
        if group is None:
            continue
        r["settings"]["ood_group"] = group
        r["headline"] = False  # the sets' rows: the evaluator's section; the groups' (below): the main table
        if r["bin"] is None:
            key = (parse(spec)[0], group, r["condition"][len(spec) :], r["metric"], r["calibrator"])
            by.setdefault(key, []).append(r)
    out = []
    for (protocol, group, suffix, *_), rs in by.items():
        sets = PROTOCOLS[protocol][group]
        if sorted(parse(r["settings"]["ood"])[1] for r in rs) != sorted(sets):
            continue
        first, name = {k: v for k, v in rs[0].items() if k != PER_IMAGE}, f"openood:{protocol}/{group}"
        label = (first["label"] or "").replace(first["settings"]["ood"], f"{group}-OOD ({', '.join(sets)})", 1)
        settings = {**first["settings"], "ood": name, "ood_group": group, "group_sets": ",".join(sets)}
        settings["n_ood"] = sum(int(r["settings"].get("n_ood") or 0) for r in rs)
        value = sum(float(r["value"]) for r in rs) / len(rs)
        row = {**first, "condition": name + suffix, "label": label, "value": value, "settings": settings}
        row["headline"] = None if "@" not in suffix else False  # a group's logit scores in the main table
        boots = [r[PER_IMAGE].boot for r in rs if r.get(PER_IMAGE) is not None and r[PER_IMAGE].boot is not None]
        if len(boots) == len(rs):  # the group mean's replicates: the mean of its sets' (each resampled on its own)
            attach(row, boot=np.mean(np.stack([b.astype(np.float64) for b in boots]), axis=0).astype(np.float16))
        out.append(row)
    return out
