"""Cached image-folder loads of CIFAR-10 (../shared/data/cifar10-jpeg.tar.gz), measured in fresh processes.

    python benchmarks/bench_data.py [--rounds 5]

Prints the wall time of `load_data("imagefolder:…")` (1) from the decoded .npz cache in a new process
(cache key from the archive's path, size and mtime: no hashing, no listing) and (2) again in the same
process (the in-process cache a bench uses). Target for (1): <= 0.3 s. The first decode is timed once,
for information, into a temporary cache folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CHILD = """
import sys, time
t0 = time.perf_counter()
from mmix_eval.data import imagefolder, load_data, sources  # the modules a load uses, imported first
t1 = time.perf_counter()
d = load_data("imagefolder:" + sys.argv[1])
t2 = time.perf_counter()
load_data("imagefolder:" + sys.argv[1])
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, len(d.train), len(d.test))
"""


def child(cache: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ARCHIVE)], capture_output=True, text=True, check=True,
                         env={**os.environ, "MMIX_EVAL_CACHE": cache})
    return [float(v) for v in out.stdout.split()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not ARCHIVE.exists():
        print(f"{ARCHIVE} is absent: nothing to measure")
        return 1
    with tempfile.TemporaryDirectory() as cache:
        first = child(cache)
        runs = [child(cache) for _ in range(args.rounds)]
    cached, again = statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)
    print(f"CIFAR-10 image folder ({int(first[3])} train + {int(first[4])} test images), {args.rounds} fresh processes")
    print(f"first load (decode + write the cache, information) : {first[1]:.2f} s")
    print(f"cached load in a new process (median)              : {cached:.3f} s  "
          f"(spread {min(r[1] for r in runs):.3f}–{max(r[1] for r in runs):.3f}; target <= 0.3: "
          f"{'met' if cached <= 0.3 else 'MISSED'})")
    print(f"second load in the same process (median)           : {again * 1e3:.2f} ms")
    print(f"importing the data modules (information, not in (1)): {statistics.median(r[0] for r in runs):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
