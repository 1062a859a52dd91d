"""Evaluation-speed benchmark against the true floors, measured in one run on this machine.

The floors are what any implementation must compute (P = one plain inference pass over the images, FB = one
forward + backward pass for the input gradient, D = 8 Table 4 deformations, E = 4 values of ε):
  1. deformation evaluation / ((1 + D) · P): the clean pass and one pass per deformation  target <= 1.05
  2. FGSM evaluation / (P + FB + E · P): the clean pass, one gradient, one pass per ε        target <= 1.15
  3. calibration metrics (netcal ECE + MCE, NLL, Brier, bins) / P                            target <= 0.05
     and the calibration evaluator with its own clean pass / P (information)
  4. `evaluate` with all three evaluators on one checkpoint / (P + D · P + FB + E · P): one shared clean pass
                                                                                             target <= 1.15
  5. storing the per-image outcomes of a Table 4 evaluation / that evaluation               target <= 0.01
  6. with --corruptions, benchmarks/bench_corruptions.py's measures: corruptions from files / ((1 + C) P)
     <= 1.10, generated <= 1.5 P per condition, peak RSS at 10,000 images < 1.5 GB
Every deformation and FGSM condition also records NLL, ECE and Brier from the logits it already has. Each
round runs every measure once, in an order rotated from round to round (so drift favours none); medians
and the min–max spread over the rounds are printed.

    python benchmarks/bench_eval.py [--images 2000] [--model smallnet] [--device cpu] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import torch
import torch.nn.functional as F

from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
from mmix_eval.evaluate.geometry import TABLE4
from mmix_eval.evaluate.metrics import calibration_metrics, fit_temperature
from mmix_eval.evaluate.outcomes import write_outcomes
from mmix_eval.evaluate.target import Images, Target
from mmix_eval.models import create_model

ARCHIVE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def images(n: int) -> tuple[Images, str]:
    if ARCHIVE.exists():
        from mmix_eval.data import load_data

        d = load_data(f"imagefolder:{ARCHIVE}", test_limit=n)
        return Images(d.test.x, d.test.y), f"{n} CIFAR-10 test images (../shared/data)"
    g = torch.Generator().manual_seed(0)
    return Images(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                  torch.randint(0, 10, (n,), generator=g)), f"{n} synthetic 3x32x32 images"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*temperature scaling skipped")  # no validation split here, by design
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--model", default="smallnet")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--corruptions", action="store_true",
                    help="also the corruption measures (bench_corruptions.py: files, generated, peak memory)")
    args = ap.parse_args()
    device, bs = torch.device(args.device), args.batch_size
    data, desc = images(args.images)
    torch.manual_seed(0)
    model = create_model(args.model, 10, 3, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).to(device).eval()
    fresh = lambda: Target(model, data, None, "bench", {"run": "bench"})  # its clean pass not yet cached
    common = EvalOptions(device=str(device), batch_size=bs, progress=False)
    print(f"device {device} ({torch.get_num_threads()} threads), model {args.model}, batch {bs}, {desc}, torch {torch.__version__}")

    def plain_pass():
        with torch.inference_mode():
            for i in range(0, len(data), bs):
                model(data.batch(i, i + bs, device)[0])

    def grad_pass():
        for i in range(0, len(data), bs):
            x, y = data.batch(i, i + bs, device)
            x.requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(x), y), x)

    eps = [1, 2, 4, 8]
    deform, fgsm, cal = get_evaluator("deformations"), get_evaluator("fgsm"), get_evaluator("calibration")
    d_opts, f_opts, c_opts = deform.options({}), fgsm.options({"eps": eps}), cal.options({})

    def evaluate_all():
        t = fresh()
        for ev, o in ((deform, d_opts), (fgsm, f_opts), (cal, c_opts)):
            run_evaluator(ev, t, o, common)

    with torch.inference_mode():
        logits = torch.cat([model(data.batch(i, i + bs, device)[0]).float().cpu() for i in range(0, len(data), bs)])
    measures = {
        "P": plain_pass, "FB": grad_pass,
        "deformations": lambda: run_evaluator(deform, fresh(), d_opts, common),
        "fgsm": lambda: run_evaluator(fgsm, fresh(), f_opts, common),
        "calibration evaluator": lambda: run_evaluator(cal, fresh(), c_opts, common),
        "calibration metrics": lambda: calibration_metrics(logits, data.y, 15),
        "evaluate (3 evaluators)": evaluate_all,
    }
    for fn in measures.values():  # warm-up: imports (kornia, netcal, torchattacks), allocator
        fn()
    times: dict[str, list[float]] = {k: [] for k in measures}
    names = list(measures)
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(timed(measures[k], device))
    ts = timed(lambda: fit_temperature(logits, data.y), device)
    # Per-image outcomes: what the runner adds to a Table 4 evaluation (9 conditions packed and written).
    rows = run_evaluator(deform, fresh(), d_opts, common)
    outcomes = {r["condition"]: r["_correct"] for r in rows if "_correct" in r}
    with tempfile.TemporaryDirectory() as tmp:
        store = [timed(lambda: write_outcomes(Path(tmp) / "o.npz", outcomes, np.arange(len(data))), device) for _ in range(5)]
        size = (Path(tmp) / "o.npz").stat().st_size

    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (min(v) / med[k], max(v) / med[k]) for k, v in times.items()}
    p, fb, d = med["P"], med["FB"], len(TABLE4)
    floors = {"deformations": (1 + d) * p, "fgsm": p + fb + len(eps) * p, "evaluate (3 evaluators)": p + d * p + fb + len(eps) * p}
    print(f"\n{'measure':<26}{'median':>10}   spread over {args.rounds} rounds")
    for k in names:
        print(f"{k:<26}{med[k] * 1e3:>8.1f} ms   {spread[k][0]:.3f}–{spread[k][1]:.3f}")
    print(f"{'temperature fit (info)':<26}{ts * 1e3:>8.1f} ms")
    print(f"{'per-image outcomes':<26}{statistics.median(store) * 1e3:>8.2f} ms   ({size} bytes for {len(outcomes)} conditions x "
          f"{len(data)} images: {size / len(outcomes) * 10_000 / len(data) / 1000:.2f} KB per condition per 10,000 images)")
    ratios = [("deformations / ((1 + D) P)", med["deformations"] / floors["deformations"], 1.05),
              ("FGSM / (P + FB + E P)", med["fgsm"] / floors["fgsm"], 1.15),
              ("calibration metrics / P", med["calibration metrics"] / p, 0.05),
              ("evaluate, 3 evaluators / floor", med["evaluate (3 evaluators)"] / floors["evaluate (3 evaluators)"], 1.15),
              ("storing outcomes / deformations", statistics.median(store) / med["deformations"], 0.01)]
    print()
    for name, r, target in ratios:
        print(f"{name:<34}: {r:.4f}  (target <= {target}: {'met' if r <= target else 'MISSED'})")
    print(f"{'calibration evaluator / P (info)':<34}: {med['calibration evaluator'] / p:.4f}  (its own clean pass included)")
    print(f"{'FB / P (info)':<34}: {fb / p:.3f}")
    print(f"{'FGSM / (E (FB + P)) (info)':<34}: {med['fgsm'] / (len(eps) * (fb + p)):.4f}  (the first version's floor: "
          f"a gradient per ε)")
    if args.corruptions:  # files / ((1 + C) P), generated per condition, peak RSS at 10,000 images
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_corruptions import report, run

        print()
        report(run(args.images, 3, min(args.rounds, 3), args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
