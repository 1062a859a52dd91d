"""GPU evaluation throughput per condition, against a bare inference loop on the same images.

For each condition (clean, the 8 Table 4 deformations, FGSM over ε = 1, 2, 4, 8 /255): images/s of the
evaluator as `evaluate` runs it on a checkpoint (test images resident on the device as uint8, bf16 autocast
and channels_last as for a checkpoint trained so, the clean logits cached after the first pass), and of a
bare loop that only runs the model over the same images prepared in advance (uint8 on the device -> /255,
channels_last, bf16 autocast; FGSM: one fp32 forward + backward for the gradient, then a bf16 pass per ε).
Ratio = bare time / evaluator time (issue 20's target: >= 0.9). Medians over --rounds, the order of
evaluator and bare loop alternating.

    python benchmarks/bench_gpu_eval.py                       # a CUDA machine: PreActResNet18, 10,000 images
    python benchmarks/bench_gpu_eval.py --device cpu --model smallnet --images 500 --precision fp32 \
        --rounds 1                                            # a quick check that the script runs
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import images, timed  # noqa: E402

from mmix_eval import memory  # noqa: E402
from mmix_eval.data.augment import to_float  # noqa: E402
from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator  # noqa: E402
from mmix_eval.evaluate.evaluators.attacks.steps import fgsm_step, input_grad_sign  # noqa: E402
from mmix_eval.evaluate.evaluators.deformations.geometry import TABLE4, sample_matrices, warp  # noqa: E402
from mmix_eval.evaluate.passes import logits_of  # noqa: E402
from mmix_eval.evaluate.target import Images, Target  # noqa: E402
from mmix_eval.inference import autocast  # noqa: E402
from mmix_eval.models import create_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--model", default="preactresnet18")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    args = ap.parse_args()
    memory.apply()  # as the command line runs (matters on a CPU run only)
    device, bs, prec = torch.device(args.device), args.batch_size, args.precision
    data, desc = images(args.images)
    torch.manual_seed(0)
    model = create_model(args.model, 10, 3, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).to(device).eval()
    cl = device.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    test = Images(data.x.to(device), data.y)  # resident uint8, as load_target keeps them on a GPU
    common = EvalOptions(device=str(device), batch_size=bs, progress=False)
    name = torch.cuda.get_device_name(device) if cl else "cpu"
    print(
        f"{name}, model {args.model}, {prec}{' + channels_last' if cl else ''}, batch {bs}, {desc}, "
        f"torch {torch.__version__}"
    )

    cached = Target(model, test, None, "bench", {"run": "bench"}, precision=prec, channels_last=cl)
    cached.clean = logits_of(model, test, bs, device, None, prec)

    def prep(x):
        return x.contiguous(memory_format=torch.channels_last) if cl else x

    def bare(batches):
        with torch.inference_mode(), autocast(device, prec):
            for x in batches:
                model(prep(x)).float()

    starts = range(0, len(test), bs)
    clean = [to_float(test.x[i : i + bs]) for i in starts]
    labels = [test.y[i : i + bs].to(device) for i in starts]
    deform, fgsm = get_evaluator("deformations"), get_evaluator("fgsm")
    eps = [1, 2, 4, 8]
    tmp = Path(tempfile.mkdtemp())  # the one-condition grid files, removed at the end
    rows = []  # (condition, images, evaluator fn, bare fn)
    rows.append(("clean", len(test), lambda: logits_of(model, test, bs, device, None, prec), lambda: bare(clean)))
    for d in TABLE4:
        grid = tmp / f"{d.name}.yaml"
        grid.write_text(f"- {{name: {d.name}, {d.kind}: {d.value}}}\n", encoding="utf-8")
        mats = sample_matrices(d, len(test), 0)
        rendered = [warp(x, mats[i : i + bs]) for i, x in zip(starts, clean)]
        opts = deform.options({"grid": str(grid)})
        rows.append(
            (d.name, len(test), lambda o=opts: run_evaluator(deform, cached, o, common), lambda r=rendered: bare(r))
        )
    signs = [input_grad_sign(model, x, y) for x, y in zip(clean, labels)]
    adversarial = [fgsm_step(x, s, e) for e in eps for x, s in zip(clean, signs)]

    def bare_fgsm():
        for x, y in zip(clean, labels):
            input_grad_sign(model, prep(x), y)
        bare(adversarial)

    f_opts = fgsm.options({"eps": eps})
    rows.append(
        (
            f"fgsm eps {','.join(map(str, eps))} (one gradient)",
            len(eps) * len(test),
            lambda: run_evaluator(fgsm, cached, f_opts, common),
            bare_fgsm,
        )
    )
    for _, _, ev, b in rows:  # warm-up: kernels, autotuning, imports
        ev(), b()
    print(f"\n{'condition':<34}{'evaluator img/s':>16}{'bare img/s':>12}{'bare / evaluator':>18}")
    ratios = []
    for cond, n, ev, b in rows:
        t_ev, t_b = [], []
        for r in range(args.rounds):
            pair = [(t_ev, ev), (t_b, b)]
            for store, fn in pair if r % 2 == 0 else pair[::-1]:
                store.append(timed(fn, device))
        me, mb = statistics.median(t_ev), statistics.median(t_b)
        ratios.append(mb / me)
        print(f"{cond:<34}{n / me:>16.0f}{n / mb:>12.0f}{mb / me:>18.3f}")
    shutil.rmtree(tmp, ignore_errors=True)
    worst = min(ratios)
    print(
        f"\nlowest bare / evaluator: {worst:.3f} (target >= 0.9: {'met' if worst >= 0.9 else 'MISSED'}); "
        f"median {statistics.median(ratios):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
