"""Data sources: the embedded digits, torchvision's CIFAR-10/100 and SVHN, and any image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmix_eval.data.core import RawData, Split
from mmix_eval.data.decode import split_query
from mmix_eval.data.imagefolder import read_imagefolder
from mmix_eval.errors import UserError, mention
from mmix_eval.io import check_npz, check_regular, file_sha256


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
    images, target = _digits_arrays()
    # Pixel values are counts 0..16; scale to the uint8 range every other source uses.
    x = np.rint(images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    y = target.astype(np.int64)
    # sklearn ships no test split: a fixed seeded 300-image test split, the same for everyone.
    perm = np.random.default_rng(0).permutation(len(y))
    test, train = np.sort(perm[:300]), np.sort(perm[300:])
    return RawData(
        classes=[str(i) for i in range(10)],
        train=_split(x[train], y[train]),
        test=_split(x[test], y[test]),
        flip=False,
        source={"source": "sklearn.datasets.load_digits", "split": "seeded 1497/300 (seed 0)"},
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (images as float counts 0..16, targets), read from the file it ships as
    ``load_digits`` reads it, without importing scikit-learn (0.7 s, paid by every process of a bench); through
    ``load_digits`` where the file is not where scikit-learn keeps it."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt") as fh:
        data = np.loadtxt(fh, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _torchvision(name: str, root: Path, download: bool, make):
    """Build a torchvision data set; turn its 'not found' into our one-line error."""
    try:
        return make(str(root), download)
    except RuntimeError as e:
        if "not found" in str(e).lower() or "download=true" in str(e).lower():
            raise UserError(
                f"data root '{root}': expected the {name} files there, found none; "
                f"pass {mention('download')} to fetch them, or {mention('data_root')} to point at a copy"
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
    train = (
        to_split(_torchvision(name, root, download, lambda r, d: cls(r, train=True, download=d)))
        if need_train
        else _empty_like(test)
    )
    return RawData(
        classes=list(te.classes),
        train=train,
        test=test,
        flip=True,
        source={"source": f"torchvision.datasets.{cls_name}", "root": str(root)},
    )


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
    train = (
        _split(
            *(lambda tr: (tr.data, tr.labels))(
                _torchvision("svhn", root, download, lambda r, d: tvd.SVHN(r, split="train", download=d))
            )
        )
        if need_train
        else _empty_like(test)
    )
    # A flipped digit is another digit (or none): no horizontal flips on SVHN.
    return RawData(
        classes=[str(i) for i in range(10)],
        train=train,
        test=test,
        flip=False,
        source={"source": "torchvision.datasets.SVHN", "root": str(root)},
    )


def imagefolder(arg, root, download, need_train: bool = True) -> RawData:
    if not arg:
        raise UserError("data set 'imagefolder': expected a path, as 'imagefolder:PATH', got none")
    path, decode = split_query(arg, "imagefolder")
    return read_imagefolder(Path(path).expanduser(), need_train=need_train, decode=decode)


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
            raise UserError(
                f"data set 'spiral': '{key}' expected a {type(SPIRAL_DEFAULTS[key]).__name__}, got '{value}'"
            ) from None
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
    return RawData(
        classes=[f"arm{a}" for a in range(s["arms"])],
        train=_split(x[n_test:], y[n_test:]),
        test=_split(x[:n_test], y[:n_test]),
        flip=False,
        source={"source": "generated spiral", **s},
    )


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_1_URL = "https://github.com/modestyachts/CIFAR-10.1 (datasets/cifar10.1_v6_data.npy, cifar10.1_v6_labels.npy)"
CIFAR10_2_URL = "https://github.com/modestyachts/cifar-10.2 (cifar102_test.npz)"


def _shift_arrays(what: str, x, y, files: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped natural-shift test images: uint8 (N, 32, 32, 3) and N integer labels in 0..9."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or not len(x):
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
        raise UserError(f"{what} images '{files}': expected uint8 of shape (N, 32, 32, 3), got {got}")
    if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, np.ndarray) else type(y).__name__
        raise UserError(f"{what} labels '{files}': expected {len(x)} integer labels (one per image), got {got}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise UserError(
            f"{what} labels '{files}': expected CIFAR-10 class indices 0..9, got values from {int(y.min())} "
            f"to {int(y.max())}"
        )
    return x, y.astype(np.int64)


SHIFT_CAP = 256 << 20  # bytes per array of a CIFAR-10.1 / 10.2 file (2,000 images: 6.1 MB)


def _npload(what: str, path: Path):
    if path.suffix == ".npz":
        check_npz(path, f"{what} file", SHIFT_CAP)  # a 7 MB npz can hold 7 GiB of zeros: members checked first
    else:
        check_regular(path, f"{what} file", SHIFT_CAP)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(
            f"{what} file '{path}': expected a .npy/.npz array file, got an unreadable file ({str(e)[:120]})"
        ) from None


def _shift_source(what: str, x: np.ndarray, y: np.ndarray, files: list[Path]) -> RawData:
    test = _split(x.transpose(0, 3, 1, 2), y)
    return RawData(
        classes=list(CIFAR10_CLASSES),
        train=_empty_like(test),
        test=test,
        flip=True,
        source={
            "source": what,
            "path": str(files[0]),
            "test_only": True,
            "sha256": {f.name: file_sha256(f) for f in files},
        },
    )


def cifar10_1(arg, root, download, need_train: bool = True) -> RawData:
    """CIFAR-10.1 v6 (Recht et al. 2019): the two .npy files, or their folder (default <data root>/CIFAR-10.1)."""
    path = Path(arg).expanduser() if arg else Path(root) / "CIFAR-10.1"
    data = path if path.is_file() else path / "cifar10.1_v6_data.npy"
    labels = data.with_name(data.name.replace("_data.npy", "_labels.npy"))
    for f in (data, labels):
        if not f.is_file():
            raise UserError(
                f"cifar10.1 '{f}': expected the CIFAR-10.1 file there, got none (download from {CIFAR10_1_URL})"
            )
    x, y = _shift_arrays("cifar10.1", _npload("cifar10.1", data), _npload("cifar10.1", labels), str(data.parent))
    return _shift_source("cifar10.1", x, y, [data, labels])


def cifar10_2(arg, root, download, need_train: bool = True) -> RawData:
    """CIFAR-10.2 (Lu et al. 2020): cifar102_test.npz (images, labels), or its folder (default <data root>/CIFAR-10.2)."""
    path = Path(arg).expanduser() if arg else Path(root) / "CIFAR-10.2"
    f = path if path.is_file() else path / "cifar102_test.npz"
    if not f.is_file():
        raise UserError(
            f"cifar10.2 '{f}': expected the CIFAR-10.2 test file there, got none (download from {CIFAR10_2_URL})"
        )
    z = _npload("cifar10.2", f)
    if not hasattr(z, "files") or not {"images", "labels"} <= set(z.files):
        raise UserError(
            f"cifar10.2 file '{f}': expected an .npz with arrays 'images' and 'labels', got "
            f"{sorted(z.files) if hasattr(z, 'files') else 'a single array'}"
        )
    x, y = _shift_arrays("cifar10.2", z["images"], z["labels"], str(f))
    return _shift_source("cifar10.2", x, y, [f])
