"""What keeping freed tensor memory (mmix_eval/memory.py) buys on a CPU, in fresh processes.

Each round starts one process with glibc's defaults (MMIX_EVAL_MALLOC=system) and one with the setting the
command line makes, in alternating order, and each process times the same work:
  - a plain inference pass of smallnet over --images 3x32x32 images, batch 500 (the evaluators' CPU batch);
  - a plain inference pass of PreActResNet18 over 500 images, batch 500;
  - a smallnet training step (forward, backward, SGD step), batch 100, median of 10 after 3 warm-up steps;
and reports the system (kernel) share of its CPU time and its peak RSS. Medians over --rounds are printed,
with the speed-up (glibc defaults / kept) per measure.

    python benchmarks/bench_malloc.py [--rounds 3] [--images 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORK = r"""
import json, os, resource, statistics, sys, time
from mmix_eval import memory
how = memory.apply()
import torch
import torch.nn.functional as F
from mmix_eval.models import create_model

torch.manual_seed(0)
n = int(sys.argv[1])
x = torch.rand(n, 3, 32, 32)
y = torch.randint(0, 10, (n,))
norm = ([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
out = {"how": how}

def timed(fn):
    t, c = time.perf_counter(), os.times()
    fn()
    c2 = os.times()
    return time.perf_counter() - t, (c2.system - c.system) / max(1e-9, (c2.user - c.user) + (c2.system - c.system))

def passes(model, images, bs=500):
    with torch.inference_mode():
        for i in range(0, len(images), bs):
            model(images[i:i + bs])

small = create_model("smallnet", 10, 3, *norm).eval()
resnet = create_model("preactresnet18", 10, 3, *norm).eval()
passes(small, x[:500]), passes(resnet, x[:500])  # warm-up
out["smallnet pass"] = timed(lambda: passes(small, x))
out["preactresnet18 pass"] = timed(lambda: passes(resnet, x[:500]))
model = create_model("smallnet", 10, 3, *norm).train()
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
xb, yb = x[:100], y[:100]

def step():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(xb), yb).backward()
    opt.step()

for _ in range(3):
    step()
steps = [timed(step) for _ in range(10)]
out["smallnet train step"] = (statistics.median(s[0] for s in steps), statistics.median(s[1] for s in steps))
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

MEASURES = ("smallnet pass", "preactresnet18 pass", "smallnet train step")


def run(mode: str, images: int) -> dict:
    env = {**os.environ, "MMIX_EVAL_MALLOC": "system" if mode == "glibc defaults" else ""}
    done = subprocess.run(
        [sys.executable, "-c", WORK, str(images)], env=env, capture_output=True, text=True, check=True, timeout=1800
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=2000)
    args = ap.parse_args()
    modes = ("glibc defaults", "kept")
    got: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for m in modes if r % 2 == 0 else modes[::-1]:
            got[m].append(run(m, args.images))
    print(f"{args.rounds} rounds, fresh processes; settings: " + "; ".join(f"{m}: {got[m][0]['how']}" for m in modes))
    print(f"\n{'measure':<24}" + "".join(f"{m + ' (s, kernel %)':>30}" for m in modes) + f"{'speed-up':>10}")
    for k in MEASURES:
        med = {m: statistics.median(g[k][0] for g in got[m]) for m in modes}
        sys_share = {m: statistics.median(g[k][1] for g in got[m]) for m in modes}
        cells = "".join(f"{med[m]:>22.3f} ({100 * sys_share[m]:4.1f} %)" for m in modes)
        print(f"{k:<24}{cells}{med['glibc defaults'] / med['kept']:>9.2f}x")
    rss = {m: statistics.median(g["peak_rss_mb"] for g in got[m]) for m in modes}
    print(
        f"{'peak RSS (MB)':<24}"
        + "".join(f"{rss[m]:>30.0f}" for m in modes)
        + f"{rss['kept'] / rss['glibc defaults']:>9.2f}x more"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
