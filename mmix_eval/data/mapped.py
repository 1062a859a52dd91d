"""Decoded image arrays too large to hold: memory-mapped ``.npy`` files, read a batch at a time.

``mapped_tensor(path)`` opens a uint8 ``.npy`` copy-on-write (``mmap_mode='c'``: the file is never written, and
a stray in-place operation on a batch view changes a private page instead of crashing the process on a read-only
page) and wraps it as a torch tensor without copying. Slicing it reads only the pages a batch touches, but a
page once read stays mapped (and counted in the resident set) until the kernel is told otherwise: every batch
loop over such a tensor calls ``release_pages(x, nbytes)``, which drops this process's mappings of the file
(``madvise(MADV_DONTNEED)``) once ``RELEASE_BYTES`` have been read since the last drop. The pages stay in the
page cache, so a second pass reads them from memory, not disk; the process holds only the batches in flight.
"""

from __future__ import annotations

import contextlib
import mmap
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

RELEASE_BYTES = 64 * 1024 * 1024  # read through a map between two drops of its pages
_MAPS: dict[int, list] = {}  # storage data pointer -> [mmap object, bytes read since the last drop]


def mapped_tensor(path: Path) -> torch.Tensor:
    arr = np.load(path, mmap_mode="c", allow_pickle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = torch.from_numpy(arr)
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise"):
        ptr = t.untyped_storage().data_ptr()
        _MAPS[ptr] = [mm, 0]
        weakref.finalize(arr, _MAPS.pop, ptr, None)  # the tensor holds the array: gone together
    return t


def release_pages(x: torch.Tensor, nbytes: int) -> None:
    """Count ``nbytes`` read from ``x`` (any view of a mapped tensor; others are ignored) and drop the map's
    pages from this process once ``RELEASE_BYTES`` have been read."""
    if x.device.type != "cpu":
        return
    entry = _MAPS.get(x.untyped_storage().data_ptr())
    if entry is None:
        return
    entry[1] += int(nbytes)
    if entry[1] >= RELEASE_BYTES:
        entry[1] = 0
        with contextlib.suppress(OSError, ValueError):  # a closed map, or a platform without it: the OS's call
            entry[0].madvise(mmap.MADV_DONTNEED)
