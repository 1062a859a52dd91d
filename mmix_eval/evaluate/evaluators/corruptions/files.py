"""The published CIFAR-10-C / CIFAR-100-C files (Hendrycks & Dietterich, ICLR 2019), memory-mapped.

Layout, as distributed (zenodo.org/record/2535967 for CIFAR-10-C, zenodo.org/record/3555552 for
CIFAR-100-C) and as RobustBench reads it: a folder ``CIFAR-10-C/`` holding ``<corruption>.npy``, each
(50000, 32, 32, 3) uint8, the test set corrupted at severity 1 in rows 0 … 9999, …, severity 5 in rows
40000 … 49999, in test-set order, and ``labels.npy`` (50000,) with the test labels repeated five times.

A file is opened memory-mapped for one corruption at a time and closed after it, so the resident memory
stays at one corruption's pages (≈ 150 MB for CIFAR-10-C), whatever ``--limit``.

Tiny-ImageNet-C (zenodo.org/record/2536630) is image files instead: ``<corruption>/<severity>/<wnid>/<file>``,
the file named as the Tiny-ImageNet validation image it corrupts (Hendrycks' ``make_tinyimagenet_c.py`` keeps
the name). The layout is detected (no ``labels.npy``, corruption folders of severity folders). Each evaluated
test image is found by its file name and its class folder checked against its label, for every corruption and
severity, before anything is evaluated; a condition's images are decoded when it runs (one severity's images in
memory at a time, not cached: 75 conditions of 10,000 64×64 JPEGs would be 9 GB of cache per data set).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmix_eval.errors import UserError, mention
from mmix_eval.io import IMAGE_CAP, check_regular, read_bounded

FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C", "tinyimagenet": "Tiny-ImageNet-C"}
SOURCES = {
    "cifar10": "https://zenodo.org/record/2535967",
    "cifar100": "https://zenodo.org/record/3555552",
    "tinyimagenet": "https://zenodo.org/record/2536630",
}


def default_folder(data_name: str, data_root) -> Path | None:
    """``<data root>/CIFAR-10-C`` for cifar10 (``CIFAR-100-C`` for cifar100); None for other data."""
    folder = FOLDERS.get(data_name)
    if folder is None:
        return None
    from mmix_eval.data.core import default_data_root

    return Path(data_root or default_data_root()) / folder


def image_layout(folder: Path) -> bool:
    """Tiny-ImageNet-C's layout (corruption/severity/class/image files), not CIFAR-C's .npy files."""
    folder = Path(folder)
    if (folder / "labels.npy").is_file() or not folder.is_dir():
        return False
    return any(d.is_dir() and any(s.is_dir() and s.name.isdigit() for s in d.iterdir()) for d in folder.iterdir())


def check_folder(folder: Path, corruptions, data_name: str) -> None:
    """Every requested corruption's file and labels.npy exist (or, in the image layout, its folder); else one line
    saying where they come from."""
    if image_layout(folder):
        missing = [c for c in corruptions if not (Path(folder) / c).is_dir()]
        if missing:
            raise UserError(
                f"corruption folder '{folder}': expected {', '.join(m + '/' for m in missing[:4])}"
                f"{' …' if len(missing) > 4 else ''} (<corruption>/<severity>/<class>/<image>, as "
                f"Tiny-ImageNet-C from {SOURCES['tinyimagenet']}), or pass {mention('source')} generated"
            )
        return
    missing = [c for c in ("labels", *corruptions) if not (folder / f"{c}.npy").is_file()]
    if missing:
        where = SOURCES.get(data_name, SOURCES["cifar10"])
        raise UserError(
            f"corruption files '{folder}': expected {', '.join(m + '.npy' for m in missing[:4])}"
            f"{' …' if len(missing) > 4 else ''} (download {FOLDERS.get(data_name, 'CIFAR-10-C')} from "
            f"{where} and extract it under {mention('data_root')}, or give the folder with {mention('files')}, or pass "
            f"{mention('source')} generated)"
        )


class CorruptionFiles:
    """One corruption's file, memory-mapped: ``rows(severity, indices)`` gives uint8 (N, C, H, W)."""

    def __init__(self, folder: Path, corruption: str, test_size: int, image_shape: tuple[int, int, int]):
        self.path = Path(folder) / f"{corruption}.npy"
        self.test_size = test_size
        check_regular(self.path, "corruption file")  # a FIFO would hang np.load, a device map garbage
        try:
            self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(
                f"corruption file '{self.path}': expected a .npy array, got an unreadable file ({e})"
            ) from None
        c, h, w = image_shape
        want = (5 * test_size, h, w, c)
        if self.array.dtype != np.uint8 or tuple(self.array.shape) != want:
            got = f"{self.array.dtype} {tuple(self.array.shape)}"
            self.close()
            raise UserError(
                f"corruption file '{self.path}': expected uint8 of shape {want} (5 severities x the "
                f"{test_size} test images, HWC), got {got}"
            )

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
    check_regular(path, "corruption labels")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"corruption labels '{path}': expected a .npy array, got an unreadable file ({e})") from None
    if arr.ndim != 1 or len(arr) % 5:
        raise UserError(
            f"corruption labels '{path}': expected 5 x the test-set size labels, got shape {tuple(arr.shape)}"
        )
    if arr.dtype.kind not in "iu":
        raise UserError(f"corruption labels '{path}': expected integer class labels, got dtype {arr.dtype}")
    if test_size is not None and len(arr) != 5 * test_size:
        raise UserError(
            f"corruption labels '{path}': expected 5 x {test_size} = {5 * test_size} labels (5 severities of "
            f"the evaluation data's {test_size} test images), got {len(arr)}"
        )
    test_size = len(arr) // 5
    idx = np.asarray(indices, dtype=np.int64)
    for s in range(5):
        got = np.asarray(arr[s * test_size + idx]).astype(np.int64)
        bad = np.flatnonzero(got != labels)
        if len(bad):
            k = int(bad[0])
            raise UserError(
                f"corruption labels '{path}': expected the evaluation data's labels in test-set order, got "
                f"{len(bad)} of {len(idx)} different at severity {s + 1} (test image {int(idx[k])}: file "
                f"{int(got[k])}, data {int(labels[k])}); the files are for the standard test-set order "
                f"({mention('data')} cifar10, not an image folder sorted by class)"
            )
    return test_size


def list_image_files(
    folder: Path, corruptions, severities, names: list[str], wnids: list[str], labels, indices
) -> dict:
    """(corruption, severity) -> [file path per evaluated image, in ``indices`` order], after checking that every
    evaluated test image (``names[i]``, class ``wnids[labels[i]]``) is there, in its class's folder."""
    import os

    out = {}
    for c in corruptions:
        for s in severities:
            where = Path(folder) / c / str(s)
            if not where.is_dir():
                raise UserError(
                    f"corruption folder '{where}': expected severity {s} of {c} (<class>/<image> files), got no folder"
                )
            found: dict[str, str] = {}
            for cls in os.scandir(where):
                if cls.is_dir():
                    for f in os.scandir(cls.path):
                        found[f.name] = cls.name
            paths = []
            for i in np.asarray(indices, dtype=np.int64):
                name, want = names[i], wnids[int(labels[i])]
                got = found.get(name)
                if got is None:
                    raise UserError(
                        f"corruption folder '{where}': expected the test image '{name}' (class {want}) there, "
                        f"got no file of that name; the files must be the evaluation data's test images "
                        f"({mention('data')} tinyimagenet)"
                    )
                if got != want:
                    raise UserError(
                        f"corruption file '{where / got / name}': expected it in class folder {want} (the "
                        f"evaluation data's label of '{name}'), got {got}"
                    )
                paths.append(where / got / name)
            out[(c, s)] = paths
    return out


class ImageCorruptionFiles:
    """One corruption of an image-file layout: ``rows(severity, indices)`` gives uint8 (N, C, H, W) of the evaluated
    images, decoded once per severity (the severity's images in memory, the previous severity's released)."""

    def __init__(self, listing: dict, corruption: str, indices, image_shape: tuple[int, int, int]):
        self.listing, self.corruption, self.shape = listing, corruption, tuple(image_shape)
        self.position = {int(i): k for k, i in enumerate(np.asarray(indices, dtype=np.int64))}
        self.severity, self.images = None, None

    def _decode(self, severity: int) -> np.ndarray:
        from mmix_eval.data.decode import AS_STORED, decode_image, decode_pool

        paths = self.listing[(self.corruption, severity)]
        read = lambda p: decode_image(str(p), read_bounded(p, "corruption image", IMAGE_CAP), AS_STORED, self.shape)
        with decode_pool() as pool:
            return (
                np.stack(list(pool.map(read, paths, chunksize=64))) if paths else np.zeros((0, *self.shape), np.uint8)
            )

    def rows(self, severity: int, indices: np.ndarray) -> np.ndarray:
        if self.severity != severity:
            self.images, self.severity = None, None
            self.images, self.severity = self._decode(severity), severity
        return self.images[[self.position[int(i)] for i in np.asarray(indices, dtype=np.int64)]]

    def close(self) -> None:
        self.images = None
