"""CPU memory: keep freed tensor memory in the process instead of handing it back to the kernel after every batch.

glibc's malloc serves a request above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it
when it is freed. A CPU forward pass over a 500-image CIFAR batch allocates activations of 65 MB per layer,
so every batch of every pass faults hundreds of MB of pages back in and has the kernel zero them. On the
project's 2-core VM that was 45 % of a plain inference pass's time, spent in the kernel: with the setting
below the same pass takes about half as long (see the README's speed section). ``mallopt(M_MMAP_MAX, 0)``
serves every request from the heap and ``mallopt(M_TRIM_THRESHOLD, 2 GiB)`` keeps what is freed at its top,
so from the second batch on the memory is reused. PyTorch's CPU tuning guide gets the same by preloading
jemalloc or tcmalloc; this needs nothing installed and changes no number, only where freed memory goes.

The cost: the process holds on to its peak memory until it exits. ``MMIX_EVAL_MALLOC=system`` keeps glibc's
defaults. Linux with glibc only; elsewhere nothing is changed. Applied once per process by the command line
(and by the test suite), recorded in provenance (``hardware.malloc``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc malloc.h
TRIM = 2**31 - 1  # the largest value mallopt's int takes: 2 GiB kept at the heap's top
_state: dict = {}


def apply() -> str:
    """Set the allocator once per process; returns what was done (also what ``state()`` reports)."""
    if "malloc" in _state:
        return _state["malloc"]
    if os.environ.get("MMIX_EVAL_MALLOC", "").strip().lower() == "system":
        result = "glibc defaults (MMIX_EVAL_MALLOC=system)"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        result = "system default (not glibc)"
    else:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM) == 1
        except (OSError, AttributeError):
            ok = False
        result = "glibc, freed memory kept (mmap off, trim 2 GiB)" if ok else "glibc defaults (mallopt refused)"
    _state["malloc"] = result
    return result


def state() -> str:
    """What this process set, for provenance."""
    return _state.get(
        "malloc", "glibc defaults (not applied)" if platform.libc_ver()[0] == "glibc" else "system default"
    )
