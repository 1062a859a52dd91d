"""What the paired bootstrap replicates and reliability bins (issue 26, ``evaluate/boot.py``) cost inside an
evaluation: a Table 4 deformation evaluation (2,000 CIFAR-sized random images, smallnet, temperature fitted on 500
held-out images) with them, and the same evaluation with both stubbed out, alternating, medians of the per-round
ratios. Also the outcome file's size per condition at 2,000 / 10,000 / 50,000 images.

    python benchmarks/bench_boot.py [--rounds 4] [--images 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mmix_eval import memory
from mmix_eval.evaluate import boot, metrics
from mmix_eval.evaluate.evaluators.deformations.evaluator import evaluate_deformations
from mmix_eval.evaluate.outcomes import pack
from mmix_eval.evaluate.target import target_from_module
from mmix_eval.models.factory import create_model


def outcome_bytes_per_condition(n: int) -> int:
    """The growth of an outcome file by one condition (bits, raw and calibrated replicates and bins)."""
    rng = np.random.default_rng(0)

    def condition(seed):
        r = np.random.default_rng(seed)
        conf, correct = r.uniform(0.1, 1.0, n), r.random(n) < 0.6
        d = {
            cal: (
                boot.replicates(r.exponential(1.0, n), r.uniform(0, 2, n), conf, correct, 15),
                boot.reliability(conf, correct, 15),
            )
            for cal in ("none", "temperature")
        }
        return correct, d

    indices = rng.permutation(max(60_000, n))[:n]
    sizes = []
    for k in (1, 2):
        outcomes, detail = {}, {}
        for c in range(k):
            bits, d = condition(c)
            outcomes[f"c{c}"] = bits
            detail.update({(f"c{c}", cal): v for cal, v in d.items()})
        sizes.append(len(pack(outcomes, indices, detail)))
    return sizes[1] - sizes[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--images", type=int, default=2000)
    args = ap.parse_args()
    memory.apply()
    torch.manual_seed(0)
    x, y = torch.rand(args.images, 3, 32, 32), torch.randint(0, 10, (args.images,))
    val = (torch.rand(500, 3, 32, 32), torch.randint(0, 10, (500,)))
    model = create_model("smallnet", num_classes=10, in_channels=3, width=32).eval()
    target = target_from_module(model, x, y, val=val)
    real = metrics.replicates, metrics.reliability
    stub = (
        lambda *a, **k: np.zeros((boot.BOOT_RESAMPLES, len(boot.BOOT_STATS)), np.float16),
        lambda conf, correct, bins: np.zeros((3, bins), np.float32),
    )
    evaluate_deformations(target, bins=15, progress=False)  # warm-up: imports, the count matrix, the fit
    times = {"with": [], "without": []}
    for r in range(args.rounds):
        for mode in ("with", "without") if r % 2 == 0 else ("without", "with"):
            metrics.replicates, metrics.reliability = real if mode == "with" else stub
            t0 = time.perf_counter()
            evaluate_deformations(target, bins=15, progress=False)
            times[mode].append(time.perf_counter() - t0)
    metrics.replicates, metrics.reliability = real
    ratios = [a / b for a, b in zip(times["with"], times["without"])]
    print(f"{args.images} images, smallnet, {torch.get_num_threads()} threads, {args.rounds} alternating rounds")
    print(
        f"Table 4 evaluation with / without the replicates and bins: median {statistics.median(ratios):.4f} "
        f"(min–max {min(ratios):.4f}–{max(ratios):.4f}); medians {statistics.median(times['with']):.2f} s / "
        f"{statistics.median(times['without']):.2f} s"
    )
    for n in (2_000, 10_000, 50_000):
        print(f"outcome file growth per condition at {n:,} images: {outcome_bytes_per_condition(n) / 1024:.1f} KB")


if __name__ == "__main__":
    main()
