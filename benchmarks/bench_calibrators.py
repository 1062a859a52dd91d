"""Several calibrators in one evaluation against one: `evaluate` (deformations, FGSM and calibration, as the command
runs them) on one checkpoint with held-out images, each measure on a fresh target, so the held-out pass, every fit,
the conformal thresholds and every calibrated row are in it:

  1. --calibrator temperature,dirichlet,isotonic / --calibrator temperature                    target <= 1.05
  2. all seven calibrators / --calibrator temperature                                          (information)
  3. --calibrator temperature / --calibrator none (no held-out pass, no calibrated or conformal rows) (information)
  and each calibrator's fit alone, on the held-out logits (information)

The measures alternate in order from round to round; the ratio is taken per round and its median and min–max
printed. Images: CIFAR-10 test images from ../shared/data (synthetic 3x32x32 without it). The model: a network trained briefly here (2 epochs on 10,000 CIFAR-10 training images), its 500 validation images held
out of training as the calibrators' images, as a checkpoint's own.

    python benchmarks/bench_calibrators.py [--images 2000] [--model smallnet] [--rounds 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import ARCHIVE  # noqa: E402

from mmix_eval import memory  # noqa: E402
from mmix_eval.calibrators import fit_checked, get_calibrator  # noqa: E402
from mmix_eval.data import load_data  # noqa: E402
from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator  # noqa: E402
from mmix_eval.evaluate.passes import logits_of  # noqa: E402
from mmix_eval.evaluate.runner import run_order  # noqa: E402
from mmix_eval.evaluate.target import Images, Target  # noqa: E402
from mmix_eval.models import create_model  # noqa: E402

THREE = "temperature,dirichlet,isotonic"
ALL = "temperature,vector,matrix,dirichlet,histogram,isotonic,ensemble_temperature"


def trained(name: str, n_test: int, n_train: int, epochs: int, device) -> tuple:
    """A network trained briefly on CIFAR-10 (the calibrators fit held-out logits of a trained network: a random
    one's are near 0 and make every fit a degenerate one), its test images and its held-out validation images
    (500, from the training split, as a checkpoint's own). Synthetic images without the archive."""
    if ARCHIVE.exists():
        d = load_data(f"imagefolder:{ARCHIVE}", train_limit=n_train, test_limit=n_test, val_size=500)
        where = f"CIFAR-10 (../shared/data): {n_train} training images, {epochs} epochs"
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n_train + n_test + 500, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (len(x),), generator=g)
        split = lambda a, b: Images(x[a:b], y[a:b])  # noqa: E731
        d = type("D", (), {"train": split(0, n_train), "val": split(n_train, n_train + 500)})()
        d.test = split(n_train + 500, len(x))
        where = "synthetic 3x32x32 images (no archive)"
    torch.manual_seed(0)
    model = create_model(name, 10, 3, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(d.train.y))
        for i in range(0, len(order), 128):
            idx = order[i : i + 128]
            xb = d.train.x[idx].to(device).float() / 255
            loss = torch.nn.functional.cross_entropy(model(xb), d.train.y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test, val = Images(d.test.x, d.test.y), Images(d.val.x, d.val.y)
    with torch.inference_mode():
        acc = float((model(test.x[:1000].to(device).float() / 255).argmax(1).cpu() == test.y[:1000]).float().mean())
    return (
        model,
        test,
        val,
        f"{where}; {len(test)} test images evaluated ({100 * acc:.1f} % right), {len(val)} held out",
    )


def main() -> int:
    warnings.filterwarnings("ignore")  # fit caveats (a separable held-out set) are not what is measured
    memory.apply()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--model", default="smallnet")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--train-images", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device, bs = torch.device(args.device), args.batch_size
    model, test, val, desc = trained(args.model, args.images, args.train_images, args.epochs, device)
    print(
        f"device {device} ({torch.get_num_threads()} threads), model {args.model}, batch {bs}, {desc}; "
        f"torch {torch.__version__}"
    )
    ev = [get_evaluator(n) for n in ("deformations", "fgsm", "calibration")]
    plan = run_order([(e, e.options({"eps": [1, 2, 4, 8]} if e.name == "fgsm" else {})) for e in ev])

    def evaluate(calibrator: str):
        common = EvalOptions(device=str(device), batch_size=bs, progress=False, calibrator=calibrator)

        def run():
            t = Target(model, test, None if calibrator == "none" else val, "bench", {"run": "bench"})
            return sum(len(run_evaluator(e, t, o, common)) for e, o in plan)

        return run

    measures = {
        "none": evaluate("none"),
        "one": evaluate("temperature"),
        "three": evaluate(THREE),
        "all": evaluate(ALL),
    }
    rows = {name: fn() for name, fn in measures.items()}  # warm-up, and the records each writes
    times: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(args.rounds):
        names = list(measures)[r % 4 :] + list(measures)[: r % 4]
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            measures[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    print(f"\n{'measure':<46}{'median':>10}   records")
    for name, v in times.items():
        print(f"{'evaluate, calibrators: ' + name:<46}{statistics.median(v):>8.3f} s   {rows[name]:,}")
    ratio = lambda a, b: [x / y for x, y in zip(times[a], times[b])]  # noqa: E731
    print(f"\n{'ratio (median of per-round ratios)':<46}{'median':>8}   min–max")
    for label, a, b, target in (
        (f"{THREE} / temperature", "three", "one", 1.05),
        ("all seven / temperature", "all", "one", None),
        ("temperature / none", "one", "none", None),
    ):
        v = ratio(a, b)
        m = statistics.median(v)
        verdict = f"(target <= {target}: {'met' if m <= target else 'MISSED'})" if target else "(information)"
        print(f"{label:<46}{m:>8.4f}   {min(v):.4f}–{max(v):.4f}  {verdict}")
    z = logits_of(model, val, bs, device)
    print(f"\n{'fit alone on ' + str(len(val)) + ' held-out logits (information)':<46}")
    for name in ALL.split(","):
        cal = get_calibrator(name)
        fit = statistics.median(
            (lambda t0: (fit_checked(cal, z, val.y), time.perf_counter() - t0)[1])(time.perf_counter())
            for _ in range(3)
        )
        print(f"  {name:<44}{fit * 1e3:>8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
