"""The OOD evaluator's feature scores against the forward passes they need (issue 45, item 7):

  1. `ood` with every score (logit scores; Mahalanobis, RMDS, KNN at 4 layers: the 3 stage outputs and the
     penultimate features; ViM, ReAct, ASH-S at the penultimate) / the forward passes it cannot avoid (the test
     images, each OOD source, the training subset the fits need), timed alone                       target <= 1.3
  2. `ood` with every score / `ood` with the logit scores only                                     (information)
  3. KNN on 50,000 x 512 training features, 10,000 queries: wall time and the process's peak memory growth
     (a fresh process; its bank is 100 MB in float32, each chunk of similarities 205 MB)           (information)

The measures alternate in order from round to round; ratios are taken per round, median and min–max printed.
Images: CIFAR-10 from ../shared/data (synthetic 3x32x32 without it); the model: a SmallNet (width 32) as
initialised (the time of a forward pass and of a fit does not depend on the weights).

    python benchmarks/bench_ood_features.py [--images 2000] [--fit 5000] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import ARCHIVE  # noqa: E402

from mmix_eval.data import load_data  # noqa: E402
from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator  # noqa: E402
from mmix_eval.evaluate.evaluators.ood import ood_images  # noqa: E402
from mmix_eval.evaluate.passes import logits_of  # noqa: E402
from mmix_eval.evaluate.target import Images, Target  # noqa: E402
from mmix_eval.models import create_model  # noqa: E402

SOURCES = ["noise:gaussian", "noise:blobs"]
LOGITS = "msp,max_logit,energy"

KNN_PROBE = """
import os, threading, time, torch
from mmix_eval.evaluate.evaluators.ood.features import knn_distances, normalised
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
g = torch.Generator().manual_seed(0)
bank = normalised(torch.randn(50_000, 512, generator=g).relu())
q = torch.randn(10_000, 512, generator=g).relu()
before, peak, done = rss(), [0], []
def watch():  # the current resident set every 2 ms while KNN runs (ru_maxrss keeps the set-up's own peak)
    while not done:
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
w = threading.Thread(target=watch)
w.start()
t = time.perf_counter()
d = knn_distances(bank, q, (50,))[50]
wall = time.perf_counter() - t
done.append(1)
w.join()
print(f"{wall:.3f} {(peak[0] - before) / 2**20:.0f} {before / 2**20:.0f}")
"""


def data(n_test: int, n_fit: int):
    if ARCHIVE.exists():
        d = load_data(f"imagefolder:{ARCHIVE}", train_limit=n_fit, test_limit=n_test)
        return Images(d.test.x, d.test.y), Images(d.train.x, d.train.y), "CIFAR-10 (../shared/data)"
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_fit + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(len(x)) % 10
    return Images(x[n_fit:], y[n_fit:]), Images(x[:n_fit], y[:n_fit]), "synthetic 3x32x32 images (no archive)"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--fit", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    test, train, where = data(a.images, a.fit)
    torch.manual_seed(0)
    model = create_model("smallnet", 10, 3, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).to(a.device).eval()
    print(f"images: {where}; {len(test)} test, {len(train)} training images for the fits; smallnet (width 32)")
    print(f"threads: {torch.get_num_threads()}, device {a.device}")
    ev = get_evaluator("ood")
    common = EvalOptions(progress=False, device=a.device, calibrator="none")

    def ood(scores: str) -> float:
        t = Target(model, test, run="m", base={"run": "m", "data": "cifar"}, train=lambda: train)
        start = time.perf_counter()
        rows = run_evaluator(ev, t, {"ood": SOURCES, "scores": scores}, common)
        took = time.perf_counter() - start
        assert rows, "no rows"
        return took

    sources = [ood_images(s, len(test), (3, 32, 32), 0) for s in SOURCES]

    def passes() -> float:
        start = time.perf_counter()
        for images in [test, train, *(Images(x, torch.zeros(len(x), dtype=torch.int64)) for x in sources)]:
            logits_of(model, images, 500, torch.device(a.device))
        return time.perf_counter() - start

    ood("all")  # warm-up: the first call pays imports and allocator growth
    measures = {"all": lambda: ood("all"), "logits": lambda: ood(LOGITS), "passes": passes}
    got: dict = {k: [] for k in measures}
    for r in range(a.rounds):
        order = list(measures) if r % 2 == 0 else list(reversed(measures))
        for k in order:
            got[k].append(measures[k]())
        print(f"round {r + 1}: " + ", ".join(f"{k} {got[k][-1]:.2f} s" for k in measures), flush=True)

    def ratio(num: str, den: str) -> str:
        q = [x / y for x, y in zip(got[num], got[den])]
        return f"{statistics.median(q):.3f} ({min(q):.3f}-{max(q):.3f})"

    print(f"1. ood, every score / its forward passes: {ratio('all', 'passes')}  (target <= 1.3)")
    print(f"2. ood, every score / logit scores only: {ratio('all', 'logits')}")
    out = subprocess.run([sys.executable, "-c", KNN_PROBE], capture_output=True, text=True, check=True).stdout.split()
    print(
        f"3. KNN, 50,000 x 512 bank, 10,000 queries, k = 50: {float(out[0]):.2f} s, peak memory +{out[1]} MB "
        f"(resident set above the {out[2]} MB of the process holding the bank and the queries)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
