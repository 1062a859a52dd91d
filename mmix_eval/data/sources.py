"""Data sources: the embedded digits, torchvision's CIFAR-10/100 and SVHN, and any image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmix_eval.data.core import DATASETS, RawData, Split
from mmix_eval.errors import UserError


def _split(x: np.ndarray, y) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(np.asarray(y), dtype=torch.int64))


def _empty_like(split: Split) -> Split:
    """No training images, but their shape (channels, size): what an evaluation that needs none gets."""
    return Split(split.x[:0].clone(), split.y[:0].clone())


def _no_arg(name: str, arg: str | None) -> None:
    if arg:
        raise UserError(f"data set '{name}' takes no argument, got '{name}:{arg}'")


@DATASETS.register("digits", help="scikit-learn's 8x8 handwritten digits (1,797 images, embedded, no download)")
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


@DATASETS.register("cifar10", help="CIFAR-10 through torchvision (--data-root, --download)")
def cifar10(arg, root, download, need_train: bool = True) -> RawData:
    _no_arg("cifar10", arg)
    return _cifar("cifar10", "CIFAR10", root, download, need_train)


@DATASETS.register("cifar100", help="CIFAR-100 through torchvision (--data-root, --download)")
def cifar100(arg, root, download, need_train: bool = True) -> RawData:
    _no_arg("cifar100", arg)
    return _cifar("cifar100", "CIFAR100", root, download, need_train)


@DATASETS.register("svhn", help="SVHN (train + test, no extra) through torchvision (--data-root, --download)")
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


@DATASETS.register("imagefolder", help="imagefolder:PATH, a folder or .tar(.gz) of class folders (train/ and test/, or one set split 80/20)")
def imagefolder(arg, root, download, need_train: bool = True) -> RawData:
    from mmix_eval.data.imagefolder import read_imagefolder

    if not arg:
        raise UserError("data set 'imagefolder': expected a path, as 'imagefolder:PATH', got none")
    return read_imagefolder(Path(arg).expanduser(), need_train=need_train)
