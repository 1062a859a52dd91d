"""An ensemble's evaluation against its members' evaluations, measured in one run on this machine.

    python benchmarks/bench_ensemble.py [--members 3] [--images 2000] [--model smallnet] [--rounds 3]

k freshly initialised models (the cost does not depend on the weights) and their Ensemble (evaluate/ensemble.py)
are evaluated by the default evaluators (deformations, FGSM, calibration with a held-out split of a quarter of the
images' size), each time on a fresh target (no cached clean pass). Per round, the ensemble's time is divided by
the sum of the k single-model times measured in the same round (the two measures' order alternating), and the
median over rounds printed with its min–max. Target (the calibration issue): <= 1.10.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from mmix_eval import memory
from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
from mmix_eval.evaluate.ensemble import Ensemble
from mmix_eval.evaluate.runner import run_order
from mmix_eval.evaluate.target import Images, Target
from mmix_eval.models import create_model


def main() -> int:
    memory.apply()
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--model", default="smallnet")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    n = args.images
    test = Images(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
    )
    val = Images(test.x[: n // 4].clone(), test.y[: n // 4].clone())
    models = []
    for k in range(args.members):
        torch.manual_seed(k)
        models.append(create_model(args.model, 10, 3, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).eval())
    ens = Ensemble(models).eval()
    common = EvalOptions(device="cpu", progress=False)
    plan = run_order(
        [(get_evaluator(e), get_evaluator(e).options({})) for e in ("deformations", "fgsm", "calibration")]
    )

    def evaluate(model):
        t = Target(model, test, val, "bench", {"run": "bench"})
        for ev, opts in plan:
            run_evaluator(ev, t, opts, common)

    evaluate(models[0]), evaluate(ens)  # warm-up: imports, allocator
    ratios, singles, ensembles = [], [], []
    for r in range(args.rounds):
        order = ["singles", "ensemble"] if r % 2 == 0 else ["ensemble", "singles"]
        got = {}
        for what in order:
            t0 = time.perf_counter()
            if what == "singles":
                for m in models:
                    evaluate(m)
            else:
                evaluate(ens)
            got[what] = time.perf_counter() - t0
        singles.append(got["singles"]), ensembles.append(got["ensemble"])
        ratios.append(got["ensemble"] / got["singles"])
        print(
            f"  round {r + 1}: {args.members} single models {got['singles']:.2f} s, their ensemble {got['ensemble']:.2f} s"
        )
    med = statistics.median(ratios)
    print(
        f"{args.model}, {n} images, {torch.get_num_threads()} threads: {args.members} single-model evaluations "
        f"{statistics.median(singles):.2f} s, the ensemble {statistics.median(ensembles):.2f} s"
    )
    print(
        f"ensemble / sum of its members' evaluations = {med:.3f} (min–max {min(ratios):.3f}–{max(ratios):.3f}; "
        f"target <= 1.10: {'met' if med <= 1.10 else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
