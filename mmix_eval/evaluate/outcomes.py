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
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mmix_eval.io import atomic_write_bytes

PREFIX = "c/"
OWN = "i/"  # a condition's own image indices, where they are not the test subset's


def subset_hash(indices: np.ndarray) -> str:
    """A short fingerprint of the evaluated test subset (which images, in which order)."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def pack(outcomes: dict[str, np.ndarray], indices: np.ndarray) -> bytes:
    """A value may be ``(own indices, correct)``: a condition on other images than the test subset (a natural-
    shift set), stored with its own indices as ``i/<condition>``."""
    arrays = {"indices": np.asarray(indices, dtype=np.int64)}
    for condition, correct in outcomes.items():
        want = arrays["indices"]
        if isinstance(correct, tuple):
            want = arrays[OWN + condition] = np.asarray(correct[0], dtype=np.int64)
            correct = correct[1]
        correct = np.asarray(correct, dtype=bool)
        if correct.shape != want.shape:
            raise ValueError(f"outcomes for '{condition}': {correct.shape[0]} values for {len(indices)} images")
        arrays[PREFIX + condition] = np.packbits(correct)
    return _npz(arrays)


def write_outcomes(path: Path, outcomes: dict[str, np.ndarray], indices: np.ndarray) -> None:
    atomic_write_bytes(Path(path), pack(outcomes, indices))


MAX_OUTCOME_BYTES = 256 * 1024 * 1024  # decompressed; 10 k images x 1,000 conditions is 12.5 MB
_BROKEN = (ValueError, TypeError, KeyError, IndexError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _load(path: Path):
    """The npz, its members' decompressed sizes held to ``MAX_OUTCOME_BYTES`` before any is read; no pickles."""
    with zipfile.ZipFile(Path(path)) as zf:
        total = sum(i.file_size for i in zf.infolist())
    if total > MAX_OUTCOME_BYTES:
        raise ValueError(f"{total} bytes once decompressed, more than per-image outcomes take "
                         f"({MAX_OUTCOME_BYTES} at most)")
    return np.load(Path(path), allow_pickle=False)


def _bits(packed: np.ndarray, n: int, name: str) -> np.ndarray:
    if packed.dtype != np.uint8 or packed.ndim != 1 or len(packed) != (n + 7) // 8:
        raise ValueError(f"'{name}' expected {(n + 7) // 8} packed bytes for {n} images, got {packed.dtype} {packed.shape}")
    return np.unpackbits(packed, count=n).astype(bool)


def _indices(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim != 1 or a.dtype.kind not in "iu" or (len(a) and a.min() < 0):
        raise ValueError(f"'{name}' expected non-negative integer image indices, got {a.dtype} {a.shape}")
    return a.astype(np.int64)


def read_outcomes(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(indices, condition -> bool array). No pickles (``allow_pickle=False``); a damaged or foreign file is a
    ValueError saying what is wrong. A condition with its own indices: see ``read_outcomes_own``."""
    indices, out, _ = read_outcomes_own(path)
    return indices, out


def read_outcomes_own(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(indices, condition -> bool array, condition -> its own indices where it has them)."""
    try:
        with _load(path) as z:
            indices = _indices(z["indices"], "indices")
            own = {k[len(OWN):]: _indices(z[k], k) for k in z.files if k.startswith(OWN)}
            out = {k[len(PREFIX):]: _bits(z[k], len(own.get(k[len(PREFIX):], indices)), k)
                   for k in z.files if k.startswith(PREFIX)}
    except _BROKEN as e:
        raise ValueError(_why(e)) from None
    return indices, out, own


def _why(e: BaseException) -> str:
    return str(e) if isinstance(e, ValueError) and str(e) else f"{type(e).__name__}: {str(e)[:200]}"


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
    try:
        with _load(path) as z:
            refs = z["subset_of"]
            keys = z["keys"]
            if refs.dtype.kind not in "iu" or refs.ndim != 1 or keys.ndim != 1 or len(keys) != len(refs):
                raise ValueError("'keys' and 'subset_of' expected one entry per stored condition")
            subsets = {m: _indices(z[f"idx{m}"], f"idx{m}") for m in set(refs.tolist())}
            for n, key in enumerate(keys):
                k = json.loads(str(key))
                if not (isinstance(k, list) and len(k) == 3 and all(isinstance(x, str) for x in k)):
                    raise ValueError(f"key {n} expected [run, evaluator, condition]")
                indices = subsets[int(refs[n])]
                out[tuple(k)] = (indices, _bits(z[f"bits{n}"], len(indices), f"bits{n}"))
    except _BROKEN as e:
        raise ValueError(_why(e)) from None
    return out
