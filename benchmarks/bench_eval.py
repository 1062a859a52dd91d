"""Evaluation-speed benchmark, measured in one run on this machine.

Prints three ratios (medians of repetitions; the same model, images and batch size on both sides):
  1. deformation evaluation time / (number of conditions × one plain inference pass)   target <= 1.15
     (Table 4: 9 conditions = clean + 8 deformations, each one pass over the images)
  2. FGSM evaluation time / (number of ε × a bare forward + backward + forward)          target <= 1.15
     (the default grid {1, 2, 4, 8}/255; the clean pass is shared by every ε)
  3. calibration metrics time (NLL, ECE and MCE through netcal, Brier, reliability bins) / one inference pass
                                                                                           target <= 0.05
  4. storing the per-image outcomes of a Table 4 evaluation / that evaluation            target <= 0.01
Every deformation and FGSM condition also records NLL, ECE and Brier from the logits it already has.

    python benchmarks/bench_eval.py [--images 2000] [--model smallnet] [--device cpu]
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

from mmix_eval.evaluate.metrics import calibration_metrics, fit_temperature
from mmix_eval.evaluate.deformations import evaluate_deformations
from mmix_eval.evaluate.fgsm import evaluate_fgsm
from mmix_eval.evaluate.geometry import TABLE4
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--model", default="smallnet")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device, bs = torch.device(args.device), args.batch_size
    data, desc = images(args.images)
    torch.manual_seed(0)
    model = create_model(args.model, 10, 3, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).to(device).eval()
    fresh = lambda: Target(model, data, None, "bench", {"run": "bench"})  # its clean pass not yet cached
    print(f"device {device} ({torch.get_num_threads()} threads), model {args.model}, batch {bs}, {desc}, torch {torch.__version__}")

    def plain_pass():
        with torch.inference_mode():
            for i in range(0, len(data), bs):
                model(data.batch(i, i + bs, device)[0])

    def bare_fgsm(eps=8 / 255):
        for i in range(0, len(data), bs):
            x, y = data.batch(i, i + bs, device)
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
            with torch.inference_mode():
                model((x + eps * g.sign()).clamp(0, 1))

    eps = [1, 2, 4, 8]
    run_deform = lambda: evaluate_deformations(fresh(), "table4", 0, "nearest", bs, device, progress=False)
    run_fgsm = lambda: evaluate_fgsm(fresh(), eps, "fgsm", 7, 0, bs, device, progress=False)
    for warm in (plain_pass, bare_fgsm, run_deform, run_fgsm):  # imports (kornia, netcal, torchattacks), allocator
        warm()
    plain, bare, deform, fgsm = [], [], [], []
    for _ in range(args.rounds):
        plain.append(timed(plain_pass, device))
        deform.append(timed(run_deform, device))
        bare.append(timed(bare_fgsm, device))
        fgsm.append(timed(run_fgsm, device))

    with torch.inference_mode():
        logits = torch.cat([model(data.batch(i, i + bs, device)[0]).float().cpu() for i in range(0, len(data), bs)])
    calibration_metrics(logits, data.y, 15)  # warm (netcal import)
    cal = [timed(lambda: calibration_metrics(logits, data.y, 15), device) for _ in range(5)]
    ts = timed(lambda: fit_temperature(logits, data.y), device)
    # Per-image outcomes: what the runner adds to a Table 4 evaluation (9 conditions packed and written).
    rows = run_deform()
    outcomes = {r["condition"]: r["_correct"] for r in rows if "_correct" in r}
    indices = np.arange(len(data))
    with tempfile.TemporaryDirectory() as tmp:
        store = [timed(lambda: write_outcomes(Path(tmp) / "o.npz", outcomes, indices), device) for _ in range(5)]
        size = (Path(tmp) / "o.npz").stat().st_size

    n_cond = len(TABLE4) + 1
    p, b = statistics.median(plain), statistics.median(bare)
    r1 = statistics.median(deform) / (n_cond * p)
    r2 = statistics.median(fgsm) / (len(eps) * b)
    r3 = statistics.median(cal) / p
    print(f"\none plain inference pass             {p * 1e3:9.1f} ms")
    print(f"deformation evaluation, Table 4      {statistics.median(deform) * 1e3:9.1f} ms  ({n_cond} conditions incl. clean)")
    print(f"bare forward + backward + forward    {b * 1e3:9.1f} ms")
    print(f"FGSM evaluation, eps {{1,2,4,8}}/255   {statistics.median(fgsm) * 1e3:9.1f} ms  ({len(eps)} eps + one shared clean pass)")
    print(f"calibration metrics                  {statistics.median(cal) * 1e3:9.1f} ms  (NLL, netcal ECE + MCE, Brier, bins)")
    print(f"temperature fit (information)        {ts * 1e3:9.1f} ms")
    r4 = statistics.median(store) / statistics.median(deform)
    print(f"per-image outcomes, 9 conditions         {statistics.median(store) * 1e3:9.2f} ms  ({size} bytes on disk for "
          f"{len(data)} images: {size / len(outcomes) * 10_000 / len(data) / 1000:.2f} KB per condition per 10,000 images)")
    print(f"\ndeformations / (conditions x inference pass) : {r1:.3f}  (target <= 1.15: {'met' if r1 <= 1.15 else 'MISSED'})")
    print(f"FGSM / (eps x bare fwd+bwd+fwd)              : {r2:.3f}  (target <= 1.15: {'met' if r2 <= 1.15 else 'MISSED'})")
    print(f"calibration metrics / inference pass         : {r3:.4f} (target <= 0.05: {'met' if r3 <= 0.05 else 'MISSED'})")
    print(f"storing outcomes / deformation evaluation    : {r4:.4f} (target <= 0.01: {'met' if r4 <= 0.01 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
