"""The in-memory data container, the data set registry and seeded subsets / validation splits."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmix_eval.catalog import DATASETS
from mmix_eval.data.mapped import release_pages
from mmix_eval.errors import UserError, mention, unknown


@dataclass
class Split:
    x: torch.Tensor  # uint8, (N, C, H, W)
    y: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> Split:
        idx_t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        return Split(self.x[idx_t], self.y[idx_t])


@dataclass
class RawData:
    """What a source yields: full train and test splits, before subsets."""

    classes: list[str]
    train: Split
    test: Split
    flip: bool = True  # is a horizontal flip label-preserving here (not for digits or SVHN)
    source: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # per-image facts of the whole test split (Tiny-ImageNet's file names)


@dataclass
class ImageData:
    name: str
    spec: str
    classes: list[str]
    train: Split
    test: Split
    val: Split | None
    flip: bool
    info: dict
    extra: dict = field(default_factory=dict)  # RawData.extra: indexed by the whole test split, not the subset

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images in [0, 1] (what the model normalises with)."""
        x = self.train.x
        n = x.shape[0] * x.shape[2] * x.shape[3]
        # float64 sums over uint8 chunks: exact enough and no (N, C, H, W) float copy in memory.
        s = torch.zeros(x.shape[1], dtype=torch.float64)
        s2 = torch.zeros(x.shape[1], dtype=torch.float64)
        for chunk in x.split(8192):
            c = chunk.to(torch.float64) / 255.0
            s += c.sum(dim=(0, 2, 3))
            s2 += (c * c).sum(dim=(0, 2, 3))
            release_pages(x, chunk.nbytes)
        mean = s / n
        std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def default_data_root() -> Path:
    return Path(os.environ.get("MMIX_EVAL_DATA", Path.home() / ".cache" / "mmix-eval" / "data"))


def default_cache_dir() -> Path:
    return Path(os.environ.get("MMIX_EVAL_CACHE", Path.home() / ".cache" / "mmix-eval" / "decoded"))


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """'cifar10' -> ('cifar10', None); 'imagefolder:path/x.tar.gz' -> ('imagefolder', 'path/x.tar.gz')."""
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def data_source(spec: str):
    """(source function, name, argument) of a data spec. A source takes (argument after ':', data root,
    download[, need_train]) and returns RawData. NAME[:ARG] is a built-in or an installed entry point
    (group ``mmix_eval.datasets``); anything else with a colon is a user's ``module:function[:ARG]``."""
    name, arg = parse_data_spec(spec)
    if name in DATASETS:
        return DATASETS.get(name), name, arg
    plugin = DATASETS.entry_point(name)
    if plugin is not None:
        return plugin, name, arg
    if arg is None:
        raise unknown("data set", name, DATASETS.names())
    attr, _, user_arg = arg.partition(":")
    source = DATASETS.load(f"{name}:{attr}")
    if not callable(source):
        raise UserError(
            f"data set '{name}:{attr}': expected a function (arg, root, download) -> RawData, got "
            f"{type(source).__name__}"
        )
    return source, f"{name}:{attr}", (user_arg or None)


_CACHE: dict[tuple, ImageData] = {}


def load_data_cached(
    spec: str,
    root,
    download: bool = False,
    train_limit: int | None = None,
    val_size: int = 0,
    subset_seed: int = 0,
    need_train: bool = False,
) -> ImageData:
    """``load_data`` of the whole test split, once per process for the same arguments (an evaluation of many
    checkpoints reads its data once). Training images are loaded only for a validation split, or with
    ``need_train`` (the OOD evaluator's feature scores are fitted on them)."""
    need_train = need_train or val_size > 0
    key = (spec, root, train_limit, val_size, subset_seed, need_train)
    if key not in _CACHE:
        _CACHE[key] = load_data(spec, root, download, train_limit, None, val_size, subset_seed, need_train=need_train)
    return _CACHE[key]


def _check_nonneg_int(value, what: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise UserError(f"{what}: expected a non-negative integer, got {value!r}")


def _test_subset(test: Split, limit: int | None, seed: int) -> Split:
    if limit is not None and limit < len(test):
        return test.take(np.sort(np.random.default_rng(seed + 1).permutation(len(test))[:limit]))
    return test


def _test_only(raw: RawData, name: str, spec: str, test_limit: int | None, subset_seed: int) -> ImageData:
    """The test subset alone (an evaluation without a validation split): ``train`` empty, said in ``info``."""
    test = _test_subset(raw.test, test_limit, subset_seed)
    empty = Split(raw.test.x[:0], raw.test.y[:0])
    info = {
        "spec": spec,
        "train_size": 0,
        "val_size": 0,
        "test_size": len(test),
        "full_test_size": len(raw.test),
        "subset_seed": subset_seed,
        "training_images": "not loaded (not needed)",
        **raw.source,
    }
    return ImageData(
        name=name,
        spec=spec,
        classes=list(raw.classes),
        train=empty,
        test=test,
        val=None,
        flip=raw.flip,
        info=info,
        extra=raw.extra,
    )


def load_data(
    spec: str,
    root: str | os.PathLike | None = None,
    download: bool = False,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_size: int = 0,
    subset_seed: int = 0,
    need_train: bool = True,
) -> ImageData:
    """Load a data set by spec, then take seeded subsets and a validation split out of train.

    The validation images are drawn from the training split (never from test) by one seeded
    permutation: the first ``val_size`` go to validation, the next ``train_limit`` to training.
    ``need_train=False`` (an evaluation without a validation split): the training images are not loaded,
    where the source can skip them (every built-in can), and ``train`` is empty.
    """
    loader, name, arg = data_source(spec)
    _check_nonneg_int(train_limit, "train_limit")
    _check_nonneg_int(test_limit, "test_limit")
    _check_nonneg_int(val_size, "val_size")
    root_path = Path(root) if root else default_data_root()
    takes = "need_train" in inspect.signature(loader).parameters  # a user's source may not
    raw: RawData = (
        loader(arg, root_path, download, need_train=need_train) if takes else loader(arg, root_path, download)
    )
    if not need_train and val_size == 0:
        return _test_only(raw, name, spec, test_limit, subset_seed)
    if raw.source.get("test_only"):
        raise UserError(
            f"data set '{spec}': expected a data set with a training split, got a test-only set (evaluate "
            f"checkpoints on it with the shift evaluator: {mention('sets')} {spec})"
        )
    rng = np.random.default_rng(subset_seed)
    n_train = len(raw.train)
    if val_size >= n_train:
        raise UserError(f"val_size: expected fewer than the {n_train} training images of '{spec}', got {val_size}")
    perm = rng.permutation(n_train)
    val = raw.train.take(np.sort(perm[:val_size])) if val_size else None
    rest = perm[val_size:]
    if train_limit is not None and train_limit < len(rest):
        rest = rest[:train_limit]
    train = raw.train.take(np.sort(rest)) if len(rest) < n_train else raw.train
    test = _test_subset(raw.test, test_limit, subset_seed)
    if len(train) == 0:
        raise UserError(f"train_limit: expected at least 1 training image of '{spec}', got {train_limit}")

    info = {
        "spec": spec,
        "train_size": len(train),
        "val_size": len(val) if val is not None else 0,
        "test_size": len(test),
        "full_train_size": n_train,
        "full_test_size": len(raw.test),
        "subset_seed": subset_seed,
        **raw.source,
    }
    return ImageData(
        name=name,
        spec=spec,
        classes=list(raw.classes),
        train=train,
        test=test,
        val=val,
        flip=raw.flip,
        info=info,
        extra=raw.extra,
    )
