"""Corruption-evaluation speed and memory against the floors, measured in one run on this machine.

P = one plain inference pass over the evaluated images; C = the number of (corruption, severity) conditions.
  1. from files: the corruptions evaluator on a CIFAR-10-C-layout tree / ((1 + C) · P)         target <= 1.10
     (the clean pass plus one pass per condition; the reads are memory-mapped)
  2. generated: per corruption, its 5 severities / (5 · P), and the whole set / ((1 + C) · P)   target <= 1.5
  3. peak resident memory of a fresh process evaluating the files with 10,000 images            target < 1.5 GB
The tree holds full-size (50000, 32, 32, 3) uint8 files of random pixels (timing does not depend on what
they show), labelled like the evaluated images. Called by bench_eval.py --corruptions, or on its own:

    python benchmarks/bench_corruptions.py [--images 2000] [--files 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
from mmix_eval.evaluate.evaluators.corruptions.corrupt import BENCHMARK, GENERATED
from mmix_eval.evaluate.images import Images
from mmix_eval.evaluate.target import Target
from mmix_eval.models import create_model

TEST = 10_000


def make_tree(folder: Path, names, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    rng = np.random.default_rng(0)
    for c in names:
        arr = np.lib.format.open_memmap(folder / f"{c}.npy", mode="w+", dtype=np.uint8, shape=(5 * TEST, 32, 32, 3))
        for s in range(0, 5 * TEST, 10_000):
            arr[s : s + 10_000] = rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8)
        arr.flush()
        del arr


def target_for(model, n: int, labels: np.ndarray, seed: int = 0) -> Target:
    idx = np.sort(np.random.default_rng(seed).choice(TEST, n, replace=False))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return Target(
        model,
        Images(x, torch.from_numpy(labels[idx]).long()),
        run="bench",
        indices=idx,
        base={"run": "bench", "data": "cifar10"},
    )


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(images: int = 2000, n_files: int = 3, rounds: int = 3, model_name: str = "smallnet") -> dict:
    torch.manual_seed(0)
    model = create_model(model_name, 10, 3).eval()
    labels = np.random.default_rng(2).integers(0, 10, TEST)
    ev = get_evaluator("corruptions")
    common = EvalOptions(progress=False, batch_size=500)
    files = list(BENCHMARK[:n_files])
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "CIFAR-10-C"
        make_tree(folder, files, labels)

        def inference():  # one condition's pass as shift evaluators run it, with the identity for a transform
            from mmix_eval.evaluate.passes import batch_logits, shard_batches

            t = target_for(model, images, labels)
            batch_logits(t.model, t.test, shard_batches(images, 500), torch.device("cpu"), lambda x, y, i, j: x)

        def from_files():
            run_evaluator(
                ev,
                target_for(model, images, labels),
                {"source": "files", "files": str(folder), "corruptions": files},
                common,
            )

        per: dict[str, list[float]] = {c: [] for c in GENERATED}
        p_times, f_times = [], []
        for _ in range(rounds):
            p_times.append(timed(inference))
            f_times.append(timed(from_files))
            for c in GENERATED:
                per[c].append(
                    timed(
                        lambda c=c: run_evaluator(
                            ev, target_for(model, images, labels), {"source": "generated", "corruptions": [c]}, common
                        )
                    )
                )
        p = statistics.median(p_times)
        conditions = 5 * len(files)
        out["P_s"] = p
        out["files_ratio"] = statistics.median(f_times) / ((1 + conditions) * p)
        # each generated run holds its own clean pass: subtract one P, then per condition
        out["generated_per_condition"] = {c: (statistics.median(v) - p) / (5 * p) for c, v in per.items()}
        total = sum(statistics.median(v) - p for v in per.values()) + p
        out["generated_ratio"] = total / ((1 + 5 * len(GENERATED)) * p)
        code = textwrap.dedent(f"""
            import resource, sys
            from mmix_eval import memory
            memory.apply()  # as the command line runs: freed tensor memory kept, which raises the peak
            import numpy as np, torch
            sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
            from bench_corruptions import target_for
            from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
            from mmix_eval.models import create_model
            labels = np.random.default_rng(2).integers(0, 10, {TEST})
            t = target_for(create_model({model_name!r}, 10, 3).eval(), {TEST}, labels)
            run_evaluator(get_evaluator("corruptions"), t, {{"source": "files", "files": {str(folder)!r},
                          "corruptions": {files!r}}}, EvalOptions(progress=False, batch_size=500))
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out["peak_rss_gb"] = int(res.stdout.strip().splitlines()[-1]) / 1024**2
    out.update(images=images, files=files, rounds=rounds, model=model_name)
    return out


def report(r: dict) -> None:
    print(f"corruptions, {r['images']} images, {r['model']}, median of {r['rounds']} rounds; P = {r['P_s']:.3f} s")
    print(
        f"  1. from files ({len(r['files'])} corruptions x 5 severities) / ((1 + C) P) = {r['files_ratio']:.3f}"
        f"  (target <= 1.10)"
    )
    print(
        f"  2. generated, all {len(r['generated_per_condition'])} x 5 / ((1 + C) P) = {r['generated_ratio']:.3f}"
        f"  (target <= 1.5 per condition); per condition, in P:"
    )
    for c, v in sorted(r["generated_per_condition"].items(), key=lambda kv: -kv[1]):
        print(f"       {c:18s} {v:.3f}")
    print(f"  3. peak RSS, files, 10,000 images: {r['peak_rss_gb']:.2f} GB  (target < 1.5 GB)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--files", type=int, default=3, help="corruption files in the synthetic tree (150 MB each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="smallnet")
    a = ap.parse_args()
    report(run(a.images, a.files, a.rounds, a.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
