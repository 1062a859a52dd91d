"""Issue 44 item 5: the decode cache checked by every byte, decoders of one data set taking turns, and the
temporary folders of killed decoders removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from builders import write_tree
from conftest import ROOT

from mmix_eval.data import decode_cache, imagefolder, load_data
from mmix_eval.errors import UserError


def _cache_of():
    caches = [p for p in decode_root().glob("imagefolder-*") if p.is_dir() and (p / decode_cache.MANIFEST).exists()]
    assert len(caches) == 1, caches
    return caches[0]


def decode_root():
    from mmix_eval.data.core import default_cache_dir

    return default_cache_dir()


def test_a_cache_edited_between_the_sampled_blocks_with_its_time_restored_is_refused(tmp_path):
    """Zeroing 358 of 400 cached test images between the 18 fingerprinted blocks, mtime restored, went unnoticed
    (accuracy 20.25 -> 10.00)."""
    root = write_tree(tmp_path / "t", size=16, per_class=40)
    first = load_data(f"imagefolder:{root}")
    cache = _cache_of()
    f = cache / "test_x.npy"
    st = f.stat()
    size = st.st_size
    blocks = {max(0, (size - 4096) * k // 17) for k in range(18)}
    data = bytearray(f.read_bytes())
    kept = bytearray(data)
    header = 128
    for i in range(header, size):  # every byte outside the sampled 4 KiB blocks and the .npy header
        if not any(b <= i < b + 4096 for b in blocks):
            data[i] = 0
    assert data != kept
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (
        decode_cache.fingerprint(f, size)
        == json.loads((cache / decode_cache.MANIFEST).read_text())["files"]["test_x.npy"]["fingerprint"]
    )
    imagefolder._MEMORY.clear()
    with pytest.raises(
        UserError,
        match=r"decoded cache '.*test_x.npy': expected the \d+ bytes written with the cache, "
        r"got a file rewritten since",
    ):
        load_data(f"imagefolder:{root}")
    f.write_bytes(bytes(kept))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    imagefolder._MEMORY.clear()
    assert np.array_equal(load_data(f"imagefolder:{root}").test.x.numpy(), first.test.x.numpy())


def test_two_processes_decoding_one_data_set_both_finish_with_the_same_arrays(tmp_path):
    """One of them failed: the second to finish found the first's cache folder in the way."""
    root = write_tree(tmp_path / "t", size=32, per_class=150)
    script = (
        "import sys, hashlib; from mmix_eval.data import load_data; d = load_data(sys.argv[1]); "
        "print(hashlib.sha256(d.train.x.numpy().tobytes() + d.test.x.numpy().tobytes()).hexdigest())"
    )
    env = {**os.environ, "MMIX_EVAL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"imagefolder:{root}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert outs[0][0] == outs[1][0] and len(outs[0][0].strip()) == 64
    assert not list((tmp_path / "cache").glob("*.tmp-*"))


def test_temporary_folders_of_killed_decoders_are_removed(tmp_path):
    """kill -9 mid-decode left a 130 MB temporary folder forever."""
    root = write_tree(tmp_path / "t")
    key = imagefolder._source_key(root)
    cache = decode_root() / f"imagefolder-{key}"
    cache.parent.mkdir(parents=True, exist_ok=True)
    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    stale = cache.with_name(f"{cache.name}.tmp-{dead}")
    live = cache.with_name(f"{cache.name}.tmp-{os.getppid()}")  # a live process's decode in progress: kept
    for d in (stale, live):
        d.mkdir()
        (d / "train_x.npy").write_bytes(b"half")
    load_data(f"imagefolder:{root}")
    assert not stale.exists() and live.exists()
