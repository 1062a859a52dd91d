"""Evaluation-speed benchmark against the true floors, measured in one run on this machine.

A floor is the computation any implementation must do, timed for real on the same images in the same round:
P = one plain inference pass over the clean images, D = the 8 Table 4 deformations (one inference pass each
over the images already rendered), FB = one forward + backward for the input gradient, whose forward also
gives the clean logits, E = 4 values of ε (one inference pass each over the adversarial images already made).
  1. deformation evaluation / (P + D passes)                                                target <= 1.05
  2. FGSM evaluation / (FB + E passes)                                                      target <= 1.15
  3. calibration metrics (netcal ECE + MCE, NLL, Brier, bins) / P                           target <= 0.05
     and the calibration evaluator with its own clean pass / P (information)
  4. `evaluate` with all three evaluators on one checkpoint / (FB + D passes + E passes)    target <= 1.15
  5. storing the per-image outcomes of a Table 4 evaluation / that evaluation               target <= 0.01
  6. the deformation evaluation with every condition's calibrated rows (the calibrator already fitted, as
     the first evaluator of a checkpoint leaves it) / the same evaluation with raw rows only   target <= 1.03
     and the fit itself (the held-out pass and temperature scaling) / the deformation evaluation (information)
  6. with --corruptions, benchmarks/bench_corruptions.py's measures: corruptions from files / ((1 + C) P)
     <= 1.10, generated <= 1.5 P per condition, peak RSS at 10,000 images < 1.5 GB
What the floors leave out is the evaluators' own work: rendering, attack steps, metrics, the trap checks'
64-image probes. Each evaluator is timed next to its floor (the pair's order alternating from round to
round, the pairs' order rotated), so a floor lasts as long as what it is compared with and drift on a
shared VM hits both; the ratio is taken per round, and its median and min–max over the rounds printed.
For comparison with earlier figures it also prints deformations / (9 × P timed alone), the formula used
before, whose short floor measure is the noisier one.

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

from mmix_eval import memory
from mmix_eval.calibrators.temperature import fit_temperature
from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
from mmix_eval.evaluate.calibrate import fitted_calibration
from mmix_eval.evaluate.evaluators.attacks.steps import fgsm_step, input_grad_sign
from mmix_eval.evaluate.evaluators.deformations.geometry import TABLE4, sample_matrices, warp
from mmix_eval.evaluate.metrics import calibration_metrics
from mmix_eval.evaluate.outcomes import write_outcomes
from mmix_eval.evaluate.passes import logits_of
from mmix_eval.evaluate.runner import run_order
from mmix_eval.evaluate.target import Images, Target
from mmix_eval.models import create_model

ARCHIVE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def images(n: int) -> tuple[Images, str]:
    if ARCHIVE.exists():
        from mmix_eval.data import load_data

        d = load_data(f"imagefolder:{ARCHIVE}", test_limit=n)
        return Images(d.test.x, d.test.y), f"{n} CIFAR-10 test images (../shared/data)"
    g = torch.Generator().manual_seed(0)
    return Images(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
    ), f"{n} synthetic 3x32x32 images"


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

    warnings.filterwarnings("ignore", message=".*no calibrated rows")  # no validation split here, by design
    memory.apply()  # as the command line runs: freed tensor memory kept (memory.py)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--model", default="smallnet")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--corruptions",
        action="store_true",
        help="also the corruption measures (bench_corruptions.py: files, generated, peak memory)",
    )
    args = ap.parse_args()
    device, bs = torch.device(args.device), args.batch_size
    data, desc = images(args.images)
    torch.manual_seed(0)
    model = create_model(args.model, 10, 3, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).to(device).eval()
    common = EvalOptions(device=str(device), batch_size=bs, progress=False)
    raw_only = EvalOptions(device=str(device), batch_size=bs, progress=False, calibrator="none")
    val = Images(data.x[: len(data) // 4], data.y[: len(data) // 4])  # held-out images for the calibrator
    print(
        f"device {device} ({torch.get_num_threads()} threads), model {args.model}, batch {bs}, {desc}, torch {torch.__version__}, "
        f"malloc: {memory.state()}"
    )

    eps = [1, 2, 4, 8]
    deform, fgsm, cal = get_evaluator("deformations"), get_evaluator("fgsm"), get_evaluator("calibration")
    d_opts, f_opts, c_opts = deform.options({}), fgsm.options({"eps": eps}), cal.options({})
    plan = run_order([(deform, d_opts), (fgsm, f_opts), (cal, c_opts)])  # as `evaluate` runs them

    # What the floors run on, made once: the clean batches, each deformation's and each ε's images.
    starts = range(0, len(data), bs)
    clean = [data.batch(i, i + bs, device) for i in starts]
    deformed = [
        [warp(x, sample_matrices(d, len(data), 0)[i : i + bs].to(device)) for i, (x, _) in zip(starts, clean)]
        for d in TABLE4
    ]
    signs = [input_grad_sign(model, x, y) for x, y in clean]
    adversarial = [[fgsm_step(x, s, e) for (x, _), s in zip(clean, signs)] for e in eps]

    def passes(batches):
        with torch.inference_mode():
            for x in batches:
                model(x)

    def gradient_pass():  # FB: its forward's logits are the clean logits
        for x, y in clean:
            input_grad_sign(model, x, y, with_logits=True)

    floor_p = lambda: passes([x for x, _ in clean])
    floor_deform = lambda: (floor_p(), [passes(b) for b in deformed])
    floor_fgsm = lambda: (gradient_pass(), [passes(b) for b in adversarial])
    floor_evaluate = lambda: (gradient_pass(), [passes(b) for b in deformed], [passes(b) for b in adversarial])

    def fresh(n=None):  # a target whose clean pass is not cached yet
        d = data if n is None else Images(data.x[:n], data.y[:n])
        return Target(model, d, None, "bench", {"run": "bench"})

    def evaluate_all():
        t = fresh()
        for ev, o in plan:
            run_evaluator(ev, t, o, common)

    with torch.inference_mode():
        logits = torch.cat([model(x).float().cpu() for x, _ in clean])
    fitted_on = Target(model, data, val, "bench", {"run": "bench"})
    fitted_calibration(fitted_on, "temperature", lambda im: logits_of(model, im, bs, device))

    def calibrated():  # a target whose calibrator is fitted (by the evaluator before), clean pass not cached
        t = Target(model, data, val, "bench", {"run": "bench"})
        t.calibration, t.val_logits = dict(fitted_on.calibration), fitted_on.val_logits
        return run_evaluator(deform, t, d_opts, common)

    def fit_only():
        fitted_calibration(
            Target(model, data, val, "bench", {"run": "bench"}),
            "temperature",
            lambda im: logits_of(model, im, bs, device),
        )

    # (name, floor, the measure, its floor's name)
    pairs = [
        ("deformations", floor_deform, lambda: run_evaluator(deform, fresh(), d_opts, common), "P + D passes"),
        ("fgsm", floor_fgsm, lambda: run_evaluator(fgsm, fresh(), f_opts, common), "FB + E passes"),
        ("evaluate (3 evaluators)", floor_evaluate, evaluate_all, "FB + D + E passes"),
        ("calibration evaluator", floor_p, lambda: run_evaluator(cal, fresh(), c_opts, common), "P"),
        (
            "deformations, calibrated rows",
            lambda: run_evaluator(deform, fresh(), d_opts, raw_only),
            calibrated,
            "raw rows only",
        ),
    ]
    small = min(len(data), bs)  # warm-up on one batch: imports (kornia, netcal, torchattacks), allocator
    for ev, o in plan:
        run_evaluator(ev, fresh(small), o, common)
    floor_p(), gradient_pass(), calibration_metrics(logits, data.y, 15)

    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {name: [] for name, *_ in pairs}
    for r in range(args.rounds):
        k = r % len(pairs)
        for name, floor, measure, _ in pairs[k:] + pairs[:k]:
            order = [("floor", floor), ("measure", measure)]
            got = {what: timed(fn, device) for what, fn in (order if r % 2 == 0 else order[::-1])}
            times.setdefault(name, []).append(got["measure"])
            times.setdefault(f"floor of {name}", []).append(got["floor"])
            ratios[name].append(got["measure"] / got["floor"])
        times.setdefault("calibration metrics", []).append(
            timed(lambda: calibration_metrics(logits, data.y, 15), device)
        )
    ts = timed(lambda: fit_temperature(logits, data.y), device)
    fit = statistics.median(timed(fit_only, device) for _ in range(3))
    fb = statistics.median(timed(gradient_pass, device) for _ in range(3))
    # Per-image outcomes: what the runner adds to a Table 4 evaluation (9 conditions packed and written).
    rows = run_evaluator(deform, fresh(), d_opts, common)
    outcomes = {
        r["condition"]: r["per_image"].correct for r in rows if "per_image" in r and r["per_image"].correct is not None
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = [
            timed(lambda: write_outcomes(Path(tmp) / "o.npz", outcomes, np.arange(len(data))), device) for _ in range(5)
        ]
        size = (Path(tmp) / "o.npz").stat().st_size

    med = {k: statistics.median(v) for k, v in times.items()}
    p = med["floor of calibration evaluator"]  # P timed alone
    print(f"\n{'measure':<38}{'median':>10}   spread over {args.rounds} rounds")
    for k, v in times.items():
        print(f"{k:<38}{med[k] * 1e3:>8.1f} ms   {min(v) / med[k]:.3f}–{max(v) / med[k]:.3f}")
    print(f"{'temperature fit (info)':<38}{ts * 1e3:>8.1f} ms")
    print(
        f"{'per-image outcomes':<38}{statistics.median(store) * 1e3:>8.2f} ms   ({size} bytes for {len(outcomes)} conditions x "
        f"{len(data)} images: {size / len(outcomes) * 10_000 / len(data) / 1000:.2f} KB per condition per 10,000 images)"
    )
    targets = {
        "deformations": 1.05,
        "fgsm": 1.15,
        "evaluate (3 evaluators)": 1.15,
        "deformations, calibrated rows": 1.03,
    }
    print(f"\n{'ratio (median of the per-round ratios)':<44}{'median':>8}   min–max")
    for name, _, _, floor_name in pairs:
        v = ratios[name]
        r = statistics.median(v)
        verdict = (
            f"  (target <= {targets[name]}: {'met' if r <= targets[name] else 'MISSED'})"
            if name in targets
            else "  (info: its own clean pass and the output checks' probes)"
        )
        print(f"{name + ' / (' + floor_name + ')':<44}{r:>8.4f}   {min(v):.4f}–{max(v):.4f}{verdict}")
    extra = [
        ("calibration metrics / P", med["calibration metrics"] / p, 0.05),
        ("storing outcomes / deformations", statistics.median(store) / med["deformations"], 0.01),
    ]
    for name, r, target in extra:
        print(f"{name:<44}{r:>8.4f}   (target <= {target}: {'met' if r <= target else 'MISSED'})")
    e, d = len(eps), len(TABLE4)
    print(f"{'FB / P (info)':<44}{fb / p:>8.3f}")
    print(
        f"{'calibrator fit / deformations (info)':<44}{fit / med['deformations']:>8.4f}   (a pass over {len(val)} "
        f"held-out images and the temperature fit, once per checkpoint)"
    )
    print(
        f"{'deformations / (9 × P timed alone) (info)':<44}{med['deformations'] / ((1 + d) * p):>8.4f}   (the formula "
        f"before: a short floor measure, 9 times)"
    )
    print(
        f"{'FGSM / (E (FB + P)) (info)':<44}{med['fgsm'] / (e * (fb + p)):>8.4f}   (the first version's floor: "
        f"a gradient per ε)"
    )
    if args.corruptions:  # files / ((1 + C) P), generated per condition, peak RSS at 10,000 images
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_corruptions import report, run

        print()
        report(run(args.images, 3, min(args.rounds, 3), args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
