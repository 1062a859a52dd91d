"""Data at scale: decode-to-cache, cached loads and the peak memory of an evaluation against the data size.

    python benchmarks/bench_data.py [--sizes 10000,50000,200000] [--work DIR] [--rounds 3] [--cifar-rounds 5]

On synthetic image folders (10 classes, 64x64 JPEGs; train/ holds 200 images, test/ holds N), each step in a
fresh process:

1. decode-to-cache: ``load_data("imagefolder:…")`` on a cold cache, seconds per image and the process's peak RSS;
2. cached load: the same in a new process (the cache read, its manifest checked, large arrays memory-mapped);
3. an evaluation: ``mmix-eval deformations`` of one small checkpoint with ``--limit`` none (every test image)
   over a one-rotation grid (clean + 1 condition: two passes over the data), its peak RSS (ru_maxrss of the child;
   the median of ``--rounds`` processes, as one process's peak varies by ±150 MB whatever N) for the
   memory-mapped path and, for contrast, once with every array held in memory (MMIX_EVAL_MMAP_MIN_MB huge);
4. throughput at the smallest N: the evaluation's own wall time (as it prints it), memory-mapped against in
   memory, alternating, ``--rounds`` each, medians.

Goals (issue 31): peak RSS of the memory-mapped evaluation flat in N (within 10 % from the smallest to the largest
N), and its throughput within 5 % of the in-memory path at the smallest N. Then, if the shared CIFAR-10 archive is
there, the cached CIFAR-10 load of earlier versions (target <= 0.3 s), ``--cifar-rounds`` fresh processes.
Needs about 4 GB of disk for N = 200,000 (JPEGs 0.5 GB, decoded cache 2.5 GB) and ~25 minutes on 2 cores (with --rounds 3).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLASSES = [f"c{k}" for k in range(10)]

# Runs a command and prints its peak RSS (the only child this process waits for: ru_maxrss is that child's).
RSS = """
import resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
sys.stderr.write(r.stderr[-2000:] if r.returncode else "")
print("RESULT", r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, wall)
print(r.stdout)
"""
LOAD = """
import sys, time
from mmix_eval.data import load_data
t = time.perf_counter()
d = load_data("imagefolder:" + sys.argv[1], need_train=False)
print("LOADED", time.perf_counter() - t, len(d.test), tuple(d.test.x.shape))
"""


def measured(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, stdout) of ``cmd`` run in a fresh process (its --out emptied first: a finished
    evaluation is otherwise skipped)."""
    if "--out" in cmd:
        shutil.rmtree(cmd[cmd.index("--out") + 1], ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", RSS, *cmd], capture_output=True, text=True, env=env)
    m = re.search(r"RESULT (\d+) ([\d.]+) ([\d.]+)", out.stdout)
    if out.returncode or m is None or m.group(1) != "0":
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}{out.stdout[-2000:]}")
    return float(m.group(2)), float(m.group(3)), out.stdout


def write_images(folder: Path, n: int, offset: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(offset)
    for k in range(n):
        c = (offset + k) % 10
        d = folder / CLASSES[c]
        img = (rng.integers(0, 60, (64, 64, 3)) + 19 * c).astype(np.uint8)
        Image.fromarray(img).save(d / f"{offset + k:07d}.jpg", quality=90)


def make_folders(work: Path, sizes: list[int]) -> dict[int, Path]:
    """One pool of max(sizes) test JPEGs; each size's folder hard-links the first N (no copies on disk)."""
    from concurrent.futures import ProcessPoolExecutor

    pool_dir = work / "pool"
    biggest = max(sizes)
    if not (pool_dir / "done").exists():
        shutil.rmtree(pool_dir, ignore_errors=True)
        for s in ("train", "test"):
            for c in CLASSES:
                (pool_dir / s / c).mkdir(parents=True)
        t = time.perf_counter()
        write_images(pool_dir / "train", 200, 10**6)
        starts = list(range(0, biggest, 10_000))
        with ProcessPoolExecutor(2) as ex:
            list(
                ex.map(
                    write_images, [pool_dir / "test"] * len(starts), [min(10_000, biggest - s) for s in starts], starts
                )
            )
        (pool_dir / "done").write_text(str(biggest))
        print(f"wrote {biggest + 200:,} synthetic 64x64 JPEGs in {time.perf_counter() - t:.0f} s (not measured)")
    names = sorted(p.relative_to(pool_dir / "test") for p in (pool_dir / "test").rglob("*.jpg"))
    out = {}
    for n in sizes:
        f = work / f"synth-{n}"
        if not (f / "done").exists():
            shutil.rmtree(f, ignore_errors=True)
            shutil.copytree(pool_dir / "train", f / "train", copy_function=os.link)
            keep = [p for p in names if int(p.stem) < n]
            for c in CLASSES:
                (f / "test" / c).mkdir(parents=True)
            for p in keep:
                os.link(pool_dir / "test" / p, f / "test" / p)
            (f / "done").write_text("")
        out[n] = f
    return out


def eval_wall(stdout: str) -> float:
    m = re.search(r"\(n=\d+, ([\d.]+) s\)", stdout)
    return float(m.group(1)) if m else float("nan")


def cifar(rounds: int) -> None:
    child = """
import sys, time
from mmix_eval.data import load_data
t = time.perf_counter(); d = load_data("imagefolder:" + sys.argv[1]); print(time.perf_counter() - t, len(d.train), len(d.test))
"""
    if not ARCHIVE.exists():
        print(f"\n{ARCHIVE} is absent: no CIFAR-10 load measured")
        return
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "MMIX_EVAL_CACHE": cache}
        run = lambda: [
            float(v)
            for v in subprocess.run(
                [sys.executable, "-c", child, str(ARCHIVE)], capture_output=True, text=True, check=True, env=env
            ).stdout.split()
        ]
        first = run()
        loads = [run()[0] for _ in range(rounds)]
    med = statistics.median(loads)
    print(
        f"\nCIFAR-10 archive ({int(first[1])} train + {int(first[2])} test): first load (decode + cache) {first[0]:.2f} s; "
        f"cached load in a new process {med:.3f} s median of {rounds} (target <= 0.3: {'met' if med <= 0.3 else 'MISSED'})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument(
        "--work", default=None, help="where the synthetic folders and caches go (default: a temporary folder)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cifar-rounds", type=int, default=5)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    folders = make_folders(work, sizes)
    mm = {**os.environ, "MMIX_EVAL_CACHE": str(work / "cache"), "MMIX_EVAL_MMAP_MIN_MB": "0"}
    held = {**mm, "MMIX_EVAL_MMAP_MIN_MB": "1000000"}
    cli = [sys.executable, "-m", "mmix_eval"]
    grid = work / "grid.yaml"
    grid.write_text("- {rotation: 20}\n")
    run = work / "run"
    if not (run / "model.safetensors").exists():
        subprocess.run(
            [
                *cli,
                "train",
                "--data",
                f"imagefolder:{folders[sizes[0]]}",
                "--method",
                "vanilla",
                "--epochs",
                "1",
                "--set",
                "train.device=cpu",
                "--set",
                "model.kwargs={width: 8}",
                "--out",
                str(run),
                "--overwrite",
                "--no-progress",
            ],
            check=True,
            env=mm,
            capture_output=True,
        )
    print(
        f"{'N':>8} | {'decode s/img':>12} | {'decode peak MB':>14} | {'cached load s':>13} | "
        f"{'eval peak MB, mmap (range)':>26} | {'eval peak MB (in memory)':>24} | {'eval s (mmap)':>13}"
    )
    rss = {}
    for n in sizes:
        shutil.rmtree(work / "cache", ignore_errors=True) if n == sizes[0] else None
        dec_rss, dec_wall, _ = measured([sys.executable, "-c", LOAD, str(folders[n])], mm)
        _, _, out = measured([sys.executable, "-c", LOAD, str(folders[n])], mm)
        load_s = float(re.search(r"LOADED ([\d.]+)", out).group(1))
        ev = [
            *cli,
            "deformations",
            "--ckpt",
            str(run),
            "--data",
            f"imagefolder:{folders[n]}",
            "--grid",
            str(grid),
            "--out",
            str(work / f"res-{n}"),
            "--no-progress",
            "--device",
            "cpu",
        ]
        # the peak of one process varies by ±150 MB from run to run whatever N (the allocator's high-water mark,
        # measured 1.40-1.73 GB at 10,000 images): the median of --rounds processes
        runs = [measured(ev, mm) for _ in range(args.rounds)]
        ev_rss = statistics.median(r[0] for r in runs)
        held_rss, _, _ = measured(ev, held)
        rss[n] = ev_rss
        per_img = dec_wall / (n + 200)
        spread = f"{min(r[0] for r in runs):.0f}-{max(r[0] for r in runs):.0f}"
        print(
            f"{n:>8,} | {per_img * 1e3:>9.3f} ms | {dec_rss:>14.0f} | {load_s:>13.3f} | {ev_rss:>6.0f} ({spread:>9}) | "
            f"{held_rss:>24.0f} | {statistics.median(eval_wall(r[2]) for r in runs):>13.1f}"
        )
    lo, hi = sizes[0], sizes[-1]
    growth = rss[hi] / rss[lo] - 1
    print(
        f"\npeak RSS of the memory-mapped evaluation (median of {args.rounds} processes), N = {lo:,} -> {hi:,}: "
        f"{rss[lo]:.0f} -> {rss[hi]:.0f} MB "
        f"({growth * 100:+.1f} %; goal within 10 %: {'met' if abs(growth) <= 0.10 else 'MISSED'})"
    )
    n = sizes[0]
    ev = lambda env: eval_wall(
        measured(
            [
                *cli,
                "deformations",
                "--ckpt",
                str(run),
                "--data",
                f"imagefolder:{folders[n]}",
                "--grid",
                str(grid),
                "--out",
                str(work / "res-t"),
                "--no-progress",
                "--device",
                "cpu",
            ],
            env,
        )[2]
    )
    walls = {"mmap": [], "memory": []}
    for _ in range(args.rounds):
        walls["mmap"].append(ev(mm))
        walls["memory"].append(ev(held))
    a, b = statistics.median(walls["mmap"]), statistics.median(walls["memory"])
    print(
        f"evaluation wall at N = {n:,} (median of {args.rounds}): memory-mapped {a:.2f} s, in memory {b:.2f} s; "
        f"ratio {a / b:.3f} (goal <= 1.05: {'met' if a / b <= 1.05 else 'MISSED'}); "
        f"spreads {min(walls['mmap']):.2f}–{max(walls['mmap']):.2f} / {min(walls['memory']):.2f}–{max(walls['memory']):.2f}"
    )
    if args.cifar_rounds:
        cifar(args.cifar_rounds)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
