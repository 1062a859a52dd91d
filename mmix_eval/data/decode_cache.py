"""The decoded-image cache: a folder of .npy arrays with a manifest (each file's fingerprint), written whole under
a lock and read back memory-mapped where large (``MMIX_EVAL_MMAP_MIN_MB``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from mmix_eval.data.mapped import mapped_tensor
from mmix_eval.errors import UserError
from mmix_eval.io import remove_dead_folders

MANIFEST = "manifest.json"


DEFAULT_MMAP_MIN_MB = 256


def mmap_min_bytes() -> int:
    """Image arrays this large or larger are memory-mapped (``MMIX_EVAL_MMAP_MIN_MB``, default 256)."""
    raw = os.environ.get("MMIX_EVAL_MMAP_MIN_MB", str(DEFAULT_MMAP_MIN_MB))
    try:
        mb = float(raw)
    except ValueError:
        raise UserError(f"MMIX_EVAL_MMAP_MIN_MB: expected a number of megabytes, got '{raw}'") from None
    return int(mb * 1024 * 1024)


def fingerprint(path: Path, size: int) -> str:
    """SHA-256 of 18 blocks of 4 KiB spread evenly over the file (its start and end among them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for k in range(18):
            f.seek(max(0, (size - 4096) * k // 17))
            h.update(f.read(4096))
    return h.hexdigest()[:32]


def content_crc(path: Path) -> str:
    """CRC-32 of every byte of the file, read 8 MiB at a time: what a cache load checks (about 2 GB/s here,
    ``benchmarks/README.md``), so a cache edited anywhere, its modification time restored, is caught. Not a
    cryptographic hash: whoever can write the cache can write its manifest too; this is against damage."""
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


@contextmanager
def _cache_lock(cache: Path):
    """One decoder at a time per cache root, across processes (``flock`` on the root folder itself, released by
    the kernel when its holder dies; no lock file is left): a second process decoding the same data waits, then
    reads what the first wrote. Decodes of different data sets into one root take turns too (a decode runs
    once per data set and policy)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not on a POSIX system: no coordination (one decoder at a time is then the user's)
        yield
        return
    fd = os.open(cache.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_cache(cache: Path, fill: Callable[[Path], dict[str, np.ndarray]]) -> None:
    """``fill(tmp)`` writes its big arrays into ``tmp`` and returns the small ones; both, with a manifest, become
    ``cache`` in one rename. A failure leaves nothing behind. Under the cache's lock: a process that waited for
    another decoding the same data finds the cache complete and decodes nothing; temporary folders of killed
    decoders are removed."""
    with _cache_lock(cache):
        if cache_complete(cache):
            return
        remove_dead_folders(cache.parent, f"{cache.name}.tmp-*")  # of decoders killed mid-decode
        _write_cache(cache, fill)


def _write_cache(cache: Path, fill: Callable[[Path], dict[str, np.ndarray]]) -> None:
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        small = fill(tmp)
        for k, a in small.items():
            with open(tmp / f"{k}.npy", "wb") as f:
                np.save(f, a, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        files = {}
        for p in sorted(tmp.glob("*.npy")):
            st = p.stat()
            files[p.name] = {
                "bytes": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "fingerprint": fingerprint(p, st.st_size),
                "crc32": content_crc(p),
            }
        (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
        if cache.exists():  # an unreadable cache being replaced
            shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_complete(cache: Path) -> bool:
    return (cache / MANIFEST).is_file()


def read_cache(cache: Path, keys) -> dict:
    """The cached arrays named ``keys``: ``*_x`` image arrays as uint8 tensors (memory-mapped when large), the
    rest as numpy arrays. Each file is checked against the manifest first."""
    try:
        manifest = json.loads((cache / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"decoded cache '{cache / MANIFEST}': expected the manifest written with the cache, got an "
            f"unreadable file ({type(e).__name__}); delete '{cache}' to decode the images again"
        ) from None
    out = {}
    for k in keys:
        p = cache / f"{k}.npy"
        want = manifest.get(p.name) if isinstance(manifest, dict) else None
        if not isinstance(want, dict):
            raise UserError(
                f"decoded cache '{p}': expected a file listed in its manifest, got none; delete '{cache}' "
                f"to decode the images again"
            )
        try:
            st = p.stat()
        except OSError:
            raise UserError(
                f"decoded cache '{p}': expected {want.get('bytes')} bytes, got a missing file; delete "
                f"'{cache}' to decode the images again"
            ) from None
        if (
            st.st_size != want.get("bytes")
            or st.st_mtime_ns != want.get("mtime_ns")
            or (
                content_crc(p) != want["crc32"]
                if "crc32" in want  # every byte; older caches: sampled blocks
                else fingerprint(p, st.st_size) != want.get("fingerprint")
            )
        ):
            what = (
                f"{st.st_size} bytes"
                if st.st_size != want.get("bytes")
                else "a file rewritten since (another modification time or content)"
            )
            raise UserError(
                f"decoded cache '{p}': expected the {want.get('bytes')} bytes written with the cache, got "
                f"{what}; delete '{cache}' to decode the images again"
            )
        try:
            if k.endswith("_x") and st.st_size >= mmap_min_bytes():
                out[k] = mapped_tensor(p)
            else:
                a = np.load(p, allow_pickle=False)
                out[k] = torch.from_numpy(np.ascontiguousarray(a)) if k.endswith("_x") else a
        except (OSError, ValueError) as e:
            raise UserError(
                f"decoded cache '{p}': expected a .npy array, got an unreadable file ({e}); delete "
                f"'{cache}' to decode the images again"
            ) from None
    return out
