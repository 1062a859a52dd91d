"""The published CIFAR-10-C / CIFAR-100-C files (Hendrycks & Dietterich, ICLR 2019), memory-mapped.

Layout, as distributed (zenodo.org/record/2535967 for CIFAR-10-C, zenodo.org/record/3555552 for
CIFAR-100-C) and as RobustBench reads it: a folder ``CIFAR-10-C/`` holding ``<corruption>.npy``, each
(50000, 32, 32, 3) uint8, the test set corrupted at severity 1 in rows 0 … 9999, …, severity 5 in rows
40000 … 49999, in test-set order, and ``labels.npy`` (50000,) with the test labels repeated five times.

A file is opened memory-mapped for one corruption at a time and closed after it, so the resident memory
stays at one corruption's pages (≈ 150 MB for CIFAR-10-C), whatever ``--limit``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmix_eval.errors import UserError

FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
SOURCES = {"cifar10": "https://zenodo.org/record/2535967", "cifar100": "https://zenodo.org/record/3555552"}


def default_folder(data_name: str, data_root) -> Path | None:
    """``<data root>/CIFAR-10-C`` for cifar10 (``CIFAR-100-C`` for cifar100); None for other data."""
    folder = FOLDERS.get(data_name)
    if folder is None:
        return None
    from mmix_eval.data.core import default_data_root

    return Path(data_root or default_data_root()) / folder


def check_folder(folder: Path, corruptions, data_name: str) -> None:
    """Every requested corruption's file and labels.npy exist; else one line saying where they come from."""
    missing = [c for c in ("labels", *corruptions) if not (folder / f"{c}.npy").is_file()]
    if missing:
        where = SOURCES.get(data_name, SOURCES["cifar10"])
        raise UserError(f"corruption files '{folder}': expected {', '.join(m + '.npy' for m in missing[:4])}"
                        f"{' …' if len(missing) > 4 else ''} (download {FOLDERS.get(data_name, 'CIFAR-10-C')} from "
                        f"{where} and extract it under --data-root, or give the folder with --files, or pass "
                        f"--source generated)")


class CorruptionFiles:
    """One corruption's file, memory-mapped: ``rows(severity, indices)`` gives uint8 (N, C, H, W)."""

    def __init__(self, folder: Path, corruption: str, test_size: int, image_shape: tuple[int, int, int]):
        self.path = Path(folder) / f"{corruption}.npy"
        self.test_size = test_size
        try:
            self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"corruption file '{self.path}': expected a .npy array, got an unreadable file ({e})") from None
        c, h, w = image_shape
        want = (5 * test_size, h, w, c)
        if self.array.dtype != np.uint8 or tuple(self.array.shape) != want:
            got = f"{self.array.dtype} {tuple(self.array.shape)}"
            self.close()
            raise UserError(f"corruption file '{self.path}': expected uint8 of shape {want} (5 severities x the "
                            f"{test_size} test images, HWC), got {got}")

    def rows(self, severity: int, indices: np.ndarray) -> np.ndarray:
        idx = (severity - 1) * self.test_size + np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # sorted reads of the map, then back to the subset's order
        out = np.empty((len(idx), *self.array.shape[1:]), dtype=np.uint8)
        out[order] = self.array[idx[order]]
        return out.transpose(0, 3, 1, 2)

    def close(self) -> None:
        mm = getattr(self.array, "_mmap", None)
        self.array = None
        if mm is not None:
            mm.close()


def check_labels(folder: Path, indices: np.ndarray, labels: np.ndarray, test_size: int | None = None) -> int:
    """The files' labels for the evaluated images, at every severity, are the evaluation data's: a test set in
    another order (an image folder sorted by class) or another data set is refused, not silently scored.
    Returns the test-set size the files hold (their label count / 5), which must be ``test_size`` (the
    evaluation data's whole test split) where that is known; labels are integers."""
    path = Path(folder) / "labels.npy"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"corruption labels '{path}': expected a .npy array, got an unreadable file ({e})") from None
    if arr.ndim != 1 or len(arr) % 5:
        raise UserError(f"corruption labels '{path}': expected 5 x the test-set size labels, got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iu":
        raise UserError(f"corruption labels '{path}': expected integer class labels, got dtype {arr.dtype}")
    if test_size is not None and len(arr) != 5 * test_size:
        raise UserError(f"corruption labels '{path}': expected 5 x {test_size} = {5 * test_size} labels (5 severities of "
                        f"the evaluation data's {test_size} test images), got {len(arr)}")
    test_size = len(arr) // 5
    idx = np.asarray(indices, dtype=np.int64)
    for s in range(5):
        got = np.asarray(arr[s * test_size + idx]).astype(np.int64)
        bad = np.flatnonzero(got != labels)
        if len(bad):
            k = int(bad[0])
            raise UserError(f"corruption labels '{path}': expected the evaluation data's labels in test-set order, got "
                            f"{len(bad)} of {len(idx)} different at severity {s + 1} (test image {int(idx[k])}: file "
                            f"{int(got[k])}, data {int(labels[k])}); the files are for the standard test-set order "
                            f"(--data cifar10, not an image folder sorted by class)")
    return test_size
