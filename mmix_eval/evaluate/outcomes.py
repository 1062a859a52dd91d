"""Per-image outcomes: which test images each condition classified correctly. Imports no torch.

Stored beside the records as ``<evaluator>.outcomes.npz``: ``indices`` (int64, the test-subset indices
into the full test split, the same order as the bits) and, per condition, ``c/<condition>`` = the
correctness bits packed 8 to a byte (``numpy.packbits``): 1,250 bytes per condition per 10,000 images.
From them the report pairs two methods on the very same images (bootstrap over images, McNemar).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from mmix_eval.io import atomic_write_bytes

PREFIX = "c/"


def subset_hash(indices: np.ndarray) -> str:
    """A short fingerprint of the evaluated test subset (which images, in which order)."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def pack(outcomes: dict[str, np.ndarray], indices: np.ndarray) -> bytes:
    arrays = {"indices": np.asarray(indices, dtype=np.int64)}
    for condition, correct in outcomes.items():
        correct = np.asarray(correct, dtype=bool)
        if correct.shape != arrays["indices"].shape:
            raise ValueError(f"outcomes for '{condition}': {correct.shape[0]} values for {len(indices)} images")
        arrays[PREFIX + condition] = np.packbits(correct)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def write_outcomes(path: Path, outcomes: dict[str, np.ndarray], indices: np.ndarray) -> None:
    atomic_write_bytes(Path(path), pack(outcomes, indices))


def read_outcomes(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(indices, condition -> bool array). No pickles: ``allow_pickle=False``."""
    with np.load(Path(path), allow_pickle=False) as z:
        indices = z["indices"].astype(np.int64)
        out = {k[len(PREFIX):]: np.unpackbits(z[k], count=len(indices)).astype(bool)
               for k in z.files if k.startswith(PREFIX)}
    return indices, out
