"""Wall time of the README's main command with 1 thread and with the default thread count, on an idle machine
and with one busy-loop process beside it (as on a shared CI runner or cluster node).

    python benchmarks/bench_threads.py [--config configs/bench/digits-quick.yaml] [--timeout 900]

Each of the four runs is a fresh `mmix-eval bench CONFIG --out TMP` in its own process (so it trains and
evaluates everything), with OMP_NUM_THREADS unset and MMIX_EVAL_THREADS=1 or unset. Prints the four wall
times and the ratios; a run past --timeout is reported as such, not waited for.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, threads: str | None, timeout: float) -> float | None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MMIX_EVAL_THREADS")}
    if threads is not None:
        env["MMIX_EVAL_THREADS"] = threads
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-m", "mmix_eval", "bench", config, "--out", out, "--no-progress"],
                           cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/bench/digits-quick.yaml")
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args()
    from mmix_eval.threads import usable_cores

    cores = usable_cores()
    print(f"{args.config}: {cores} usable cores; default threads = {cores} (one job)")
    results = {}
    for load in ("idle", "busy"):
        busy = None
        if load == "busy":  # one process spinning on one core, like another job on the same machine
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for label, threads in (("1 thread", "1"), (f"default ({cores})", None)):
                wall = run(args.config, threads, args.timeout)
                results[load, label] = wall
                shown = f"{wall:7.1f} s" if wall is not None else f"> {args.timeout:.0f} s (stopped)"
                print(f"  {load:<5} {label:<12} {shown}", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    for load in ("idle", "busy"):
        one, default = results[load, "1 thread"], results[load, f"default ({cores})"]
        if one and default:
            print(f"  {load}: default / 1 thread = {default / one:.2f}")


if __name__ == "__main__":
    main()
