"""Wall time of the README's main command on an idle machine and beside one and two busy-loop processes (as on
a shared CI runner, workstation or cluster node), with mmix-eval's defaults and with the defaults before
issue 30 (every usable core, the OpenMP runtime's own spin time).

    python benchmarks/bench_threads.py [--config configs/bench/digits-quick.yaml] [--rounds 2] [--timeout 240]

Each run is a fresh `mmix-eval bench CONFIG --out TMP` in its own process (so it trains and evaluates
everything), with OMP_NUM_THREADS, MMIX_EVAL_THREADS and the OpenMP spin variables unset unless the setting names them.
Settings alternate within a round so that drift in the machine's speed hits both alike; the median over
rounds is printed, then the ratios the issue sets targets for:

    default beside 1 busy / default idle      <= 2
    default idle / old defaults idle          <= 1.05

A run past --timeout is reported as such ("> T s"), not waited for.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLEARED = ("OMP_NUM_THREADS", "MMIX_EVAL_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MMIX_EVAL_OPENMP",
           "MMIX_EVAL_OPENMP_SET")


def run(config: str, extra_env: dict, timeout: float) -> float | None:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(extra_env)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-m", "mmix_eval", "bench", config, "--out", out, "--no-progress"],
                           cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.perf_counter() - t0


def spinners(k: int) -> list[subprocess.Popen]:
    """k processes each spinning on one core, like other jobs on the same machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]
    time.sleep(1.0)  # let them get scheduled before the measured command looks at the load
    return procs


def shown(t: float | None, timeout: float) -> str:
    return f"{t:7.1f} s" if t is not None else f"> {timeout:.0f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/bench/digits-quick.yaml")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--timeout", type=float, default=240.0)
    p.add_argument("--busy", default="0,1,2", help="numbers of busy processes to measure beside (default %(default)s)")
    p.add_argument("--old-beside-busy", action="store_true",
                   help="also time the old defaults beside busy processes (26x in the issue: slow)")
    args = p.parse_args()
    from mmix_eval.threads import usable_cores

    cores = usable_cores()
    settings = {"default": {}, "old defaults": {"MMIX_EVAL_THREADS": str(cores), "MMIX_EVAL_OPENMP": "default"}}
    print(f"{args.config}: {cores} usable cores; {args.rounds} rounds, median shown; timeout {args.timeout:.0f} s")
    results: dict = {}
    for busy in [int(b) for b in args.busy.split(",")]:
        names = ["default", "old defaults"] if busy == 0 or args.old_beside_busy else ["default"]
        procs = spinners(busy)
        try:
            for r in range(args.rounds):
                for name in (names if r % 2 == 0 else names[::-1]):
                    wall = run(args.config, settings[name], args.timeout)
                    results.setdefault((busy, name), []).append(wall)
                    print(f"  round {r + 1}: {busy} busy, {name:<12} {shown(wall, args.timeout)}", flush=True)
        finally:
            for q in procs:
                q.kill()
                q.wait()
    med = {}
    print("\nmedian wall time:")
    for (busy, name), walls in results.items():
        done = [w for w in walls if w is not None]
        med[busy, name] = statistics.median(done) if len(done) == len(walls) else None
        print(f"  {busy} busy, {name:<12} {shown(med[busy, name], args.timeout)}   (runs: "
              + ", ".join(shown(w, args.timeout).strip() for w in walls) + ")")
    idle = med.get((0, "default"))
    print("\nratios:")
    if idle and med.get((0, "old defaults")):
        print(f"  default idle / old defaults idle = {idle / med[0, 'old defaults']:.3f}   (target <= 1.05)")
    for busy in sorted({b for b, _ in results if b > 0}):
        for name in ("default", "old defaults"):
            m = med.get((busy, name))
            if (busy, name) in results and idle:
                text = f"{m / idle:.2f}" if m else f"> {args.timeout / idle:.1f}"
                target = "   (target <= 2)" if busy == 1 and name == "default" else ""
                print(f"  {name} beside {busy} busy / default idle = {text}{target}")


if __name__ == "__main__":
    main()
