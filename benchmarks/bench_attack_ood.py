"""AutoAttack cost and OOD-evaluation overhead, measured in one run on this machine.

  1. AutoAttack (standard, or --quick) time per image for the model, and its ratio to (the gradient steps
     the cascade ran x one forward + backward of a batch), FB measured here on the same images
     (information: the cascade's own bookkeeping and Square's forward-only queries move it)
  2. OOD evaluation / (one inference pass over the in-distribution images + one over the OOD images)
     target <= 1.05
Synthetic 3x32x32 images and an untrained model, since speed does not depend on what the images show;
AutoAttack then fools most points in APGD-CE, so the later attacks run on few: the figure is a lower bound
for a robust model (each attack costs about its iterations x FB on the points it still has to attack).

    python benchmarks/bench_attack_ood.py [--model smallnet] [--images 64] [--ood-images 2000] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
from mmix_eval.evaluate.images import Images
from mmix_eval.evaluate.target import Target
from mmix_eval.models import create_model


def data(n: int, seed: int = 0) -> Images:
    g = torch.Generator().manual_seed(seed)
    return Images(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
    )


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smallnet")
    ap.add_argument("--images", type=int, default=64, help="images for AutoAttack")
    ap.add_argument("--ood-images", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ckpt", help="a trained checkpoint (and its own test images) for the AutoAttack measure")
    ap.add_argument("--eps", type=float, default=8.0, help="AutoAttack Linf ε in /255 (default 8)")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = create_model(a.model, 10, 3).eval()
    common = EvalOptions(progress=False, batch_size=500)

    imgs = data(a.images)
    aa_model = model
    if a.ckpt:
        from mmix_eval.evaluate.target import load_target

        t = load_target(a.ckpt, "cpu", limit=a.images, seed=0, with_val=False)
        aa_model, imgs = t.model.eval(), t.test
    x, y = imgs.batch(0, a.images, "cpu")

    def fb():
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(aa_model(xr), y), xr)

    fb()
    t_fb = statistics.median(timed(fb) for _ in range(5))
    t_aa = timed(
        lambda: run_evaluator(
            get_evaluator("attack"), Target(aa_model, imgs, run="b"), {"eps": [a.eps], "quick": a.quick}, common
        )
    )
    steps = 100 + 9 * 100 + (0 if a.quick else 9 * 100)  # APGD-CE, APGD-T x 9 targets, FAB-T x 9 (Square: forwards)
    print(
        f"AutoAttack ({'quick' if a.quick else 'standard'}, ε = {a.eps:g}/255) on {a.images} images, "
        f"{a.ckpt or a.model + ' (untrained)'}: {t_aa:.1f} s, "
        f"{t_aa / a.images:.2f} s per image; FB of the batch {t_fb * 1e3:.1f} ms; "
        f"time / ({steps} steps x FB) = {t_aa / (steps * t_fb):.3f} (information: steps run only on points "
        f"still robust)"
    )

    ins = data(a.ood_images, 1)
    from mmix_eval.evaluate.evaluators.ood import ood_images
    from mmix_eval.evaluate.passes import logits_of

    outs = Images(ood_images("noise:uniform", a.ood_images, (3, 32, 32), 0), torch.zeros(a.ood_images))
    ratios = []
    for _ in range(a.rounds):
        p = timed(lambda: logits_of(model, ins, 500, torch.device("cpu"))) + timed(
            lambda: logits_of(model, outs, 500, torch.device("cpu"))
        )
        target = Target(model, ins, run="b")
        target.checked = True  # the trap checks run once per checkpoint, shared by every evaluator: not OOD's cost
        logit_scores = {"ood": ["noise:uniform"], "scores": "msp,max_logit,energy"}
        t = timed(lambda: run_evaluator(get_evaluator("ood"), target, logit_scores, common))  # noqa: B023
        ratios.append(t / p)
    print(
        f"OOD evaluation / (in pass + out pass), {a.ood_images} + {a.ood_images} images: "
        f"{statistics.median(ratios):.3f} (median of {a.rounds}; spread {min(ratios):.3f}-{max(ratios):.3f}; "
        f"target <= 1.05)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
