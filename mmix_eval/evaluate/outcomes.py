"""Per-image outcomes: which test images each condition classified correctly. Imports no torch.

Stored beside the records as ``<evaluator>.outcomes.npz``: ``indices`` (int64, the test-subset indices
into the full test split, the same order as the bits) and, per condition, ``c/<condition>`` = the
correctness bits packed 8 to a byte (``numpy.packbits``): 1,250 bytes per condition per 10,000 images.
From them the report pairs two methods on the very same images (bootstrap over images, McNemar).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from mmix_eval.io import atomic_write_bytes

PREFIX = "c/"


def subset_hash(indices: np.ndarray) -> str:
    """A short fingerprint of the evaluated test subset (which images, in which order)."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def pack(outcomes: dict[str, np.ndarray], indices: np.ndarray) -> bytes:
    arrays = {"indices": np.asarray(indices, dtype=np.int64)}
    for condition, correct in outcomes.items():
        correct = np.asarray(correct, dtype=bool)
        if correct.shape != arrays["indices"].shape:
            raise ValueError(f"outcomes for '{condition}': {correct.shape[0]} values for {len(indices)} images")
        arrays[PREFIX + condition] = np.packbits(correct)
    return _npz(arrays)


def write_outcomes(path: Path, outcomes: dict[str, np.ndarray], indices: np.ndarray) -> None:
    atomic_write_bytes(Path(path), pack(outcomes, indices))


def read_outcomes(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(indices, condition -> bool array). No pickles: ``allow_pickle=False``."""
    with np.load(Path(path), allow_pickle=False) as z:
        indices = z["indices"].astype(np.int64)
        out = {k[len(PREFIX):]: np.unpackbits(z[k], count=len(indices)).astype(bool)
               for k in z.files if k.startswith(PREFIX)}
    return indices, out


def write_many(path: Path, outcomes: dict[tuple, tuple[np.ndarray, np.ndarray]]) -> None:
    """Outcomes of many (run, evaluator, condition) in one file: a report keeps them beside its records,
    so a rebuild from the report alone keeps its per-image intervals."""
    keys = sorted(outcomes, key=lambda k: tuple(map(str, k)))
    subsets: dict[str, int] = {}  # each distinct test subset's indices stored once
    arrays, refs = {}, []
    for n, k in enumerate(keys):
        indices, correct = outcomes[k]
        h = subset_hash(indices)
        if h not in subsets:
            subsets[h] = len(subsets)
            arrays[f"idx{subsets[h]}"] = np.asarray(indices, dtype=np.int64)
        refs.append(subsets[h])
        arrays[f"bits{n}"] = np.packbits(correct)
    arrays["keys"] = np.array([json.dumps(list(k)) for k in keys], dtype=str)
    arrays["subset_of"] = np.array(refs, dtype=np.int64)
    atomic_write_bytes(Path(path), _npz(arrays))


def read_many(path: Path) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    if not Path(path).is_file():
        return {}
    out = {}
    with np.load(Path(path), allow_pickle=False) as z:
        subsets = {m: z[f"idx{m}"].astype(np.int64) for m in set(z["subset_of"].tolist())}
        for n, key in enumerate(z["keys"]):
            indices = subsets[int(z["subset_of"][n])]
            out[tuple(json.loads(str(key)))] = (indices, np.unpackbits(z[f"bits{n}"], count=len(indices)).astype(bool))
    return out
