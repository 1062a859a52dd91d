"""Per-image outcomes: which test images each condition classified correctly. Imports no torch.

Stored beside the records as ``<evaluator>.outcomes.npz``: ``indices`` (int64, the test-subset indices
into the full test split, the same order as the bits) and, per condition, ``c/<condition>`` = the
correctness bits packed 8 to a byte (``numpy.packbits``): 1,250 bytes per condition per 10,000 images.
From them the report pairs two methods on the very same images (bootstrap over images, McNemar).

Beside them, per condition and calibrator, the probability detail of ``evaluate.boot``: ``b/<calibrator>/<condition>``
(the bootstrap replicates of NLL, Brier and ECE, (B, 3), stored quantised: see ``quantise``) with their scale
``e/<calibrator>/<condition>``, and ``r/<calibrator>/<condition>`` (the reliability bins, float32 (3, bins)), with
``boot_scheme`` (B, seed, scores, version): replicates of another scheme are not paired with today's and are dropped
on reading. Files written before the quantisation (float16 replicates, no scale) are read as they are.

Why int8 replicates are enough: a replicate is a deviation from the full-sample score, and the report uses
replicates only through differences of two runs' replicates and their standard deviation (``report/compare.py``).
Each column is stored as int8 times the smallest power of two that fits its largest deviation (a step of at most
max|x|/63.5). Measured on the committed digits-calibration and CIFAR-10 reports (18,396 pairs of runs × score): the
standard error of a paired difference moves by 0.06 % (median), 0.46 % (99th percentile) and 1.4 % at most (two
runs whose replicates correlate at 0.98), against the bootstrap's own Monte Carlo error of about 3 % at B = 500;
rounding only adds variance, so an interval can only widen. The power of two makes the quantisation idempotent:
the report re-stores what it read, and a rebuild from the report reads the very same values.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mmix_eval.evaluate.boot import BOOT_RESAMPLES, BOOT_STATS, SCHEME
from mmix_eval.io import atomic_write_bytes

PREFIX = "c/"
OWN = "i/"  # a condition's own image indices, where they are not the test subset's
BOOT, BINS, SCALE = "b/", "r/", "e/"  # per (calibrator, condition): replicates, reliability bins, replicate scale
LAYOUT = np.array([2], dtype=np.int64)  # write_many's stacked layout (1: one member per condition, before it)


def quantise(boot: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(B, k) replicates -> (int8 (B, k), int8 (k,) exponents e): value = q · 2**e, |q| ≤ 127, each column's step the
    smallest power of two that fits its largest deviation. None where a replicate is not finite or beyond
    127 · 2**126 (no interval can rest on it). Quantising a dequantised array gives back the same values exactly."""
    a = np.asarray(boot, dtype=np.float64)
    if not np.isfinite(a).all():
        return None
    top = np.abs(a).max(axis=0) if len(a) else np.zeros(a.shape[1:])
    exp = np.where(top > 0, np.ceil(np.log2(np.maximum(top, 1e-300) / 127.0)), 0.0)
    if (exp > 126).any():
        return None
    exp = np.maximum(exp, -126)  # deviations below 2**-126: stored as 0
    q = np.clip(np.rint(a / np.exp2(exp)), -127, 127)
    return q.astype(np.int8), exp.astype(np.int8)


def dequantise(q: np.ndarray, exp: np.ndarray) -> np.ndarray:
    return (q.astype(np.float64) * np.exp2(exp.astype(np.float64))).astype(np.float32)


def subset_hash(indices: np.ndarray) -> str:
    """A short fingerprint of the evaluated test subset (which images, in which order)."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def pack(outcomes: dict[str, np.ndarray], indices: np.ndarray, detail: dict | None = None) -> bytes:
    """A value may be ``(own indices, correct)``: a condition on other images than the test subset (a natural-
    shift set), stored with its own indices as ``i/<condition>``. ``detail``: (condition, calibrator) ->
    (replicates, reliability bins)."""
    arrays = {"indices": np.asarray(indices, dtype=np.int64)}
    if detail:
        arrays["boot_scheme"] = SCHEME
    for (condition, calibrator), (boot, bins) in (detail or {}).items():
        stored = quantise(boot) if boot is not None else None
        if stored is not None:
            arrays[f"{BOOT}{calibrator}/{condition}"], arrays[f"{SCALE}{calibrator}/{condition}"] = stored
        arrays[f"{BINS}{calibrator}/{condition}"] = _stored_bins(bins)
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


def write_outcomes(
    path: Path, outcomes: dict[str, np.ndarray], indices: np.ndarray, detail: dict | None = None
) -> None:
    atomic_write_bytes(Path(path), pack(outcomes, indices, detail))


MAX_OUTCOME_BYTES = 256 * 1024 * 1024  # decompressed; 10 k images x 1,000 conditions is 12.5 MB
_BROKEN = (ValueError, TypeError, KeyError, IndexError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _load(path: Path):
    """The npz, its members' decompressed sizes held to ``MAX_OUTCOME_BYTES`` before any is read; no pickles.
    A FIFO or a device (``/dev/zero``) is refused before it is opened for reading."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ValueError(
            "expected a regular file, got " + ("a FIFO" if stat.S_ISFIFO(mode) else "a device or special file")
        )
    with zipfile.ZipFile(Path(path)) as zf:
        total = sum(i.file_size for i in zf.infolist())
    if total > MAX_OUTCOME_BYTES:
        raise ValueError(
            f"{total} bytes once decompressed, more than per-image outcomes take ({MAX_OUTCOME_BYTES} at most)"
        )
    return np.load(Path(path), allow_pickle=False)


def _bits(packed: np.ndarray, n: int, name: str) -> np.ndarray:
    if packed.dtype != np.uint8 or packed.ndim != 1 or len(packed) != (n + 7) // 8:
        raise ValueError(
            f"'{name}' expected {(n + 7) // 8} packed bytes for {n} images, got {packed.dtype} {packed.shape}"
        )
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
    indices, out, own, _ = read_outcome_file(path)
    return indices, out, own


def read_outcome_file(path: Path) -> tuple[np.ndarray, dict, dict, dict]:
    """(indices, condition -> bool array, condition -> own indices, (condition, calibrator) -> (replicates (B, 3)
    float32 or None, reliability bins (3, bins) float32))."""
    try:
        with _load(path) as z:
            indices = _indices(z["indices"], "indices")
            own = {k[len(OWN) :]: _indices(z[k], k) for k in z.files if k.startswith(OWN)}
            out = {
                k[len(PREFIX) :]: _bits(z[k], len(own.get(k[len(PREFIX) :], indices)), k)
                for k in z.files
                if k.startswith(PREFIX)
            }
            same = "boot_scheme" in z.files and np.array_equal(z["boot_scheme"], SCHEME)
            detail = {}
            for k in z.files:
                if k.startswith(BINS):
                    calibrator, _, condition = k[len(BINS) :].partition("/")
                    b, e = BOOT + k[len(BINS) :], SCALE + k[len(BINS) :]
                    boot = _boot(z[b], b, z[e] if e in z.files else None) if same and b in z.files else None
                    detail[condition, calibrator] = (boot, _reliability(z[k], k))
    except _BROKEN as e:
        raise ValueError(_why(e)) from None
    return indices, out, own, detail


def _boot(a: np.ndarray, name: str, exp: np.ndarray | None = None) -> np.ndarray:
    """Replicates as float32: int8 with their exponents, or float (a file from before the quantisation)."""
    if a.shape != (BOOT_RESAMPLES, len(BOOT_STATS)) or a.dtype.kind != ("i" if exp is not None else "f"):
        raise ValueError(
            f"'{name}' expected {BOOT_RESAMPLES} x {len(BOOT_STATS)} bootstrap replicates, got {a.dtype} {a.shape}"
        )
    if exp is None:
        return a.astype(np.float32)
    if exp.shape != (len(BOOT_STATS),) or exp.dtype.kind != "i" or np.abs(exp.astype(np.int64)).max() > 126:
        raise ValueError(f"'{name}' expected {len(BOOT_STATS)} replicate exponents, got {exp.dtype} {exp.shape}")
    return dequantise(a, exp)


def _stored_bins(bins) -> np.ndarray:
    """Reliability bins as stored: (3, bins) float32; a condition without any (an OOD condition, whose replicates
    are AUROC's) as (3, 0)."""
    return np.zeros((3, 0), dtype=np.float32) if bins is None else np.asarray(bins, dtype=np.float32)


def _reliability(a: np.ndarray, name: str) -> np.ndarray | None:
    """(3, bins) float32 reliability sums, or None for a condition stored without any ((3, 0))."""
    if a.ndim != 2 or a.shape[0] != 3 or a.dtype.kind != "f":
        raise ValueError(f"'{name}' expected 3 x bins reliability sums, got {a.dtype} {a.shape}")
    return a.astype(np.float32) if a.shape[1] else None


def _why(e: BaseException) -> str:
    return str(e) if isinstance(e, ValueError) and str(e) else f"{type(e).__name__}: {str(e)[:200]}"


def write_many(path: Path, outcomes: dict[tuple, tuple[np.ndarray, np.ndarray]], detail: dict | None = None) -> None:
    """Outcomes of many (run, evaluator, condition) in one file: a report keeps them beside its records,
    so a rebuild from the report alone keeps its per-image intervals. ``detail``: (run, evaluator, condition,
    calibrator) -> (indices, replicates or None, reliability bins).

    Stacked (``layout`` 2): every condition's packed bits in one array, every stored replicate array in one
    (m, B, 3) int8 array with its (m, 3) exponents, every reliability array flattened into one; a key's place in
    them follows from its subset's size and its bins. One zip member per condition cost about 220 bytes of headers
    each, a third of a report's file."""
    subsets: dict[str, int] = {}  # each distinct test subset's indices stored once
    arrays = {"layout": LAYOUT}

    def subset(indices) -> int:
        h = subset_hash(indices)
        if h not in subsets:
            subsets[h] = len(subsets)
            arrays[f"idx{subsets[h]}"] = np.asarray(indices, dtype=np.int64)
        return subsets[h]

    keys = sorted(outcomes, key=lambda k: tuple(map(str, k)))
    refs, bits = [], []
    for k in keys:
        indices, correct = outcomes[k]
        refs.append(subset(indices))
        bits.append(np.packbits(np.asarray(correct, dtype=bool)))
    arrays["keys"] = np.array([json.dumps(list(k)) for k in keys], dtype=str)
    arrays["subset_of"] = np.array(refs, dtype=np.int64)
    arrays["bits"] = np.concatenate(bits) if bits else np.zeros(0, dtype=np.uint8)
    if detail:
        dkeys = sorted(detail, key=lambda k: tuple(map(str, k)))
        drefs, boots, exps, has_boot, rels, nbins = [], [], [], [], [], []
        for k in dkeys:
            indices, boot, bins = detail[k]
            drefs.append(subset(indices))
            stored = quantise(boot) if boot is not None else None
            has_boot.append(stored is not None)
            if stored is not None:
                boots.append(stored[0])
                exps.append(stored[1])
            rel = _stored_bins(bins)
            rels.append(rel.reshape(-1))
            nbins.append(rel.shape[1])
        arrays["dkeys"] = np.array([json.dumps(list(k)) for k in dkeys], dtype=str)
        arrays["dsubset_of"] = np.array(drefs, dtype=np.int64)
        arrays["has_boot"] = np.array(has_boot, dtype=bool)
        arrays["boot"] = np.stack(boots) if boots else np.zeros((0, BOOT_RESAMPLES, len(BOOT_STATS)), dtype=np.int8)
        arrays["boot_exp"] = np.stack(exps) if exps else np.zeros((0, len(BOOT_STATS)), dtype=np.int8)
        arrays["rel"] = np.concatenate(rels)
        arrays["rel_bins"] = np.array(nbins, dtype=np.int64)
        arrays["boot_scheme"] = SCHEME
    atomic_write_bytes(Path(path), _npz(arrays))


def read_many_detail(path: Path) -> tuple[dict, dict]:
    """(outcomes, detail) as ``write_many`` takes them; ({}, {}) without the file."""
    if not Path(path).is_file():
        return {}, {}
    out, detail = {}, {}
    try:
        with _load(path) as z:
            subsets: dict[int, np.ndarray] = {}  # each stored subset read once

            def keyed(keys_name, refs_name, size):
                refs, keys = z[refs_name], z[keys_name]
                if refs.dtype.kind not in "iu" or refs.ndim != 1 or keys.ndim != 1 or len(keys) != len(refs):
                    raise ValueError(f"'{keys_name}' and '{refs_name}' expected one entry per stored condition")
                for n, key in enumerate(keys):
                    k = json.loads(str(key))
                    if not (isinstance(k, list) and len(k) == size and all(isinstance(x, str) for x in k)):
                        raise ValueError(
                            f"{keys_name} {n} expected [run, evaluator, condition{', calibrator' * (size == 4)}]"
                        )
                    m = int(refs[n])
                    if m not in subsets:
                        subsets[m] = _indices(z[f"idx{m}"], f"idx{m}")
                    yield n, tuple(k), subsets[m]

            stacked = "layout" in z.files and np.array_equal(z["layout"], LAYOUT)
            cut = _Cursor(z["bits"], "bits") if stacked else None
            for n, k, indices in keyed("keys", "subset_of", 3):
                size = (len(indices) + 7) // 8
                packed = cut.take(size) if stacked else z[f"bits{n}"]
                out[k] = (indices, _bits(packed, len(indices), f"bits[{n}]" if stacked else f"bits{n}"))
            if stacked and not cut.done():
                raise ValueError("'bits' holds more bytes than its conditions' images")
            if "dkeys" in z.files:
                same = "boot_scheme" in z.files and np.array_equal(z["boot_scheme"], SCHEME)
                if stacked:
                    detail = _stacked_detail(z, keyed, same)
                else:
                    for n, k, indices in keyed("dkeys", "dsubset_of", 4):
                        boot = _boot(z[f"boot{n}"], f"boot{n}") if same and f"boot{n}" in z.files else None
                        detail[k] = (indices, boot, _reliability(z[f"rel{n}"], f"rel{n}"))
    except _BROKEN as e:
        raise ValueError(_why(e)) from None
    return out, detail


class _Cursor:
    """Consecutive slices of one stacked array, each checked to be there."""

    def __init__(self, array: np.ndarray, name: str):
        if array.ndim < 1:
            raise ValueError(f"'{name}' expected an array, got a scalar")
        self.array, self.name, self.at = array, name, 0

    def take(self, size: int) -> np.ndarray:
        if self.at + size > len(self.array):
            raise ValueError(f"'{self.name}' holds fewer entries than its keys need")
        self.at += size
        return self.array[self.at - size : self.at]

    def done(self) -> bool:
        return self.at == len(self.array)


def _stacked_detail(z, keyed, same: bool) -> dict:
    has, nbins = z["has_boot"], z["rel_bins"]
    boots, exps, rels = _Cursor(z["boot"], "boot"), _Cursor(z["boot_exp"], "boot_exp"), _Cursor(z["rel"], "rel")
    detail = {}
    for n, k, indices in keyed("dkeys", "dsubset_of", 4):
        if n >= len(has) or n >= len(nbins) or has.dtype != bool or nbins.dtype.kind not in "iu" or nbins[n] < 0:
            raise ValueError(f"'has_boot' and 'rel_bins' expected one entry per stored condition (dkeys {n})")
        boot = None
        if has[n]:
            q, e = boots.take(1)[0], exps.take(1)[0]
            boot = _boot(q, f"boot[{n}]", e) if same else None
        bins = int(nbins[n])
        detail[k] = (indices, boot, _reliability(rels.take(3 * bins).reshape(3, bins), f"rel[{n}]"))
    if not (boots.done() and exps.done() and rels.done()):
        raise ValueError("'boot', 'boot_exp' or 'rel' holds more entries than its keys")
    return detail
