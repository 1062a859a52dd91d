"""Data sources: the embedded digits, torchvision's CIFAR-10/100 and SVHN, and any image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmix_eval.data.core import RawData, Split
from mmix_eval.data.imagefolder import read_imagefolder
from mmix_eval.errors import UserError


def _split(x: np.ndarray, y) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(np.asarray(y), dtype=torch.int64))


def _empty_like(split: Split) -> Split:
    """No training images, but their shape (channels, size): what an evaluation that needs none gets."""
    return Split(split.x[:0].clone(), split.y[:0].clone())


def _no_arg(name: str, arg: str | None) -> None:
    if arg:
        raise UserError(f"data set '{name}' takes no argument, got '{name}:{arg}'")


def digits(arg, root, download) -> RawData:
    _no_arg("digits", arg)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16; scale to the uint8 range every other source uses.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    # sklearn ships no test split: a fixed seeded 300-image test split, the same for everyone.
    perm = np.random.default_rng(0).permutation(len(y))
    test, train = np.sort(perm[:300]), np.sort(perm[300:])
    return RawData(classes=[str(i) for i in range(10)], train=_split(x[train], y[train]),
                   test=_split(x[test], y[test]), flip=False,
                   source={"source": "sklearn.datasets.load_digits", "split": "seeded 1497/300 (seed 0)"})


def _torchvision(name: str, root: Path, download: bool, make):
    """Build a torchvision data set; turn its 'not found' into our one-line error."""
    try:
        return make(str(root), download)
    except RuntimeError as e:
        if "not found" in str(e).lower() or "download=true" in str(e).lower():
            raise UserError(
                f"data root '{root}': expected the {name} files there, found none; "
                f"pass --download to fetch them, or --data-root to point at a copy"
            ) from None
        raise UserError(f"data set '{name}' at '{root}': {e}") from None
    except OSError as e:  # network failure during download, unreadable files
        raise UserError(f"data set '{name}' at '{root}': {e}") from None


def _cifar(name: str, cls_name: str, root: Path, download: bool, need_train: bool = True) -> RawData:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    te = _torchvision(name, root, download, lambda r, d: cls(r, train=False, download=d))
    to_split = lambda ds: _split(ds.data.transpose(0, 3, 1, 2), ds.targets)  # NHWC -> NCHW
    test = to_split(te)
    train = to_split(_torchvision(name, root, download, lambda r, d: cls(r, train=True, download=d))) if need_train \
        else _empty_like(test)
    return RawData(classes=list(te.classes), train=train, test=test, flip=True,
                   source={"source": f"torchvision.datasets.{cls_name}", "root": str(root)})


def cifar10(arg, root, download, need_train: bool = True) -> RawData:
    _no_arg("cifar10", arg)
    return _cifar("cifar10", "CIFAR10", root, download, need_train)


def cifar100(arg, root, download, need_train: bool = True) -> RawData:
    _no_arg("cifar100", arg)
    return _cifar("cifar100", "CIFAR100", root, download, need_train)


def svhn(arg, root, download, need_train: bool = True) -> RawData:
    _no_arg("svhn", arg)
    import torchvision.datasets as tvd

    te = _torchvision("svhn", root, download, lambda r, d: tvd.SVHN(r, split="test", download=d))
    test = _split(te.data, te.labels)
    train = _split(*(lambda tr: (tr.data, tr.labels))(
        _torchvision("svhn", root, download, lambda r, d: tvd.SVHN(r, split="train", download=d)))) if need_train \
        else _empty_like(test)
    # A flipped digit is another digit (or none): no horizontal flips on SVHN.
    return RawData(classes=[str(i) for i in range(10)], train=train, test=test, flip=False,
                   source={"source": "torchvision.datasets.SVHN", "root": str(root)})


def imagefolder(arg, root, download, need_train: bool = True) -> RawData:
    if not arg:
        raise UserError("data set 'imagefolder': expected a path, as 'imagefolder:PATH', got none")
    return read_imagefolder(Path(arg).expanduser(), need_train=need_train)


SPIRAL_DEFAULTS = {"arms": 2, "points": 2000, "noise": 0.3, "turns": 1.5, "seed": 0}


def parse_spiral(arg: str | None) -> dict:
    """'arms=3,points=1000,noise=0.2' -> the spiral's settings (unnamed ones at their defaults)."""
    out = dict(SPIRAL_DEFAULTS)
    for part in filter(None, (arg or "").split(",")):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in out:
            raise UserError(f"data set 'spiral': expected KEY=VALUE with KEY one of {', '.join(out)}, got '{part}'")
        try:
            out[key] = type(SPIRAL_DEFAULTS[key])(value)
        except ValueError:
            raise UserError(f"data set 'spiral': '{key}' expected a {type(SPIRAL_DEFAULTS[key]).__name__}, got '{value}'") from None
    if out["arms"] < 2 or out["points"] < 8 * out["arms"] or out["noise"] < 0 or out["turns"] <= 0:
        raise UserError(f"data set 'spiral': expected arms >= 2, points >= 8 per arm, noise >= 0, turns > 0, got {out}")
    return out


def spiral_points(arms: int, points: int, noise: float, turns: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 2) in [0, 1]² and labels: arm a at angle t + 2πa/arms, radius t, t ~ U(0.25, 1)·turns·2π,
    plus Gaussian noise of ``noise`` (in the radius units), then scaled into the unit square."""
    rng = np.random.default_rng(seed)
    y = np.arange(points) % arms
    t = rng.uniform(0.25, 1.0, points) * turns * 2 * np.pi
    r = t / (turns * 2 * np.pi)
    ang = t + 2 * np.pi * y / arms
    xy = np.stack([r * np.cos(ang), r * np.sin(ang)], 1) + rng.normal(0, noise / (turns * 2 * np.pi), (points, 2))
    return np.clip(xy / 2.4 + 0.5, 0, 1), y  # radius 1 (+ noise) inside the square


def spiral(arg, root, download) -> RawData:
    s = parse_spiral(arg)
    xy, y = spiral_points(s["arms"], s["points"], s["noise"], s["turns"], s["seed"])
    x = np.rint(xy * 255).astype(np.uint8)[:, :, None, None]  # 8-bit like every source: 1/255 of the square
    n_test = s["points"] // 4
    return RawData(classes=[f"arm{a}" for a in range(s["arms"])], train=_split(x[n_test:], y[n_test:]),
                   test=_split(x[:n_test], y[:n_test]), flip=False, source={"source": "generated spiral", **s})
