"""The README's main command on an idle machine, beside one and beside two busy-loop processes (a shared CI runner,
a workstation, a cluster node): its wall time, and whether every record and every checkpoint's weights come back
bitwise equal (issue 43: the numbers depend only on what is recorded, never on the machine's load).

    python benchmarks/bench_threads.py [--config configs/bench/digits-quick.yaml] [--rounds 1] [--timeout 300]

Each run is a fresh `mmix-eval bench CONFIG --out TMP` in its own process (it trains and evaluates everything),
with the thread and OpenMP variables unset: the defaults (1 CPU thread per process, as many runs at a time as cores
are free). Settings alternate within a round; the median over rounds is printed, then the ratios the issue sets
targets for (beside 1 busy <= 2 x idle, beside 2 busy <= 3 x idle), then the equality checks against the idle run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLEARED = (
    "OMP_NUM_THREADS",
    "MMIX_EVAL_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "MMIX_EVAL_OPENMP",
    "MMIX_EVAL_OPENMP_SET",
    "MMIX_EVAL_JOBS",
)


def run(config: str, out: Path, timeout: float) -> float | None:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    t0 = time.perf_counter()
    try:
        subprocess.run(
            [sys.executable, "-m", "mmix_eval", "bench", config, "--out", str(out), "--no-progress"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - t0


def spinners(k: int) -> list[subprocess.Popen]:
    """k processes each spinning on one core, like other jobs on the same machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]
    time.sleep(1.0)  # let them get scheduled before the measured command looks at the load
    return procs


def fingerprint(out: Path) -> tuple[dict, dict]:
    """(run -> the checkpoint's tensor-data SHA-256, cell -> value of every record)."""
    shas = {
        p.parent.name: json.loads(p.read_text())["data_sha256"] for p in sorted((out / "runs").glob("*/model.json"))
    }
    cells = {}
    for line in (out / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        cells[r["run"], r["evaluator"], r["condition"], r["metric"], r.get("calibrator"), r.get("bin")] = r["value"]
    return shas, cells


def shown(t: float | None, timeout: float) -> str:
    return f"{t:7.1f} s" if t is not None else f"> {timeout:.0f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/bench/digits-quick.yaml")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args()
    times: dict[int, list] = {0: [], 1: [], 2: []}
    prints: dict[int, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for busy in (0, 1, 2):
                procs = spinners(busy)
                try:
                    out = Path(tmp) / f"r{rnd}-b{busy}"
                    t = run(args.config, out, args.timeout)
                finally:
                    for q in procs:
                        q.kill()
                times[busy].append(t)
                if t is not None:
                    prints[busy] = fingerprint(out)
                print(f"round {rnd + 1}, beside {busy} busy process(es): {shown(t, args.timeout)}", flush=True)
    med = {b: statistics.median(v) if all(x is not None for x in v) else None for b, v in times.items()}
    print(f"\n{args.config}, median of {args.rounds} round(s), defaults (1 thread per process, runs side by side):")
    for b in (0, 1, 2):
        ratio = f"  {med[b] / med[0]:.2f} x idle" if med[b] is not None and med[0] else ""
        print(f"  beside {b} busy: {shown(med[b], args.timeout)}{ratio}")
    if 0 in prints:
        shas0, cells0 = prints[0]
        for b in (1, 2):
            if b in prints:
                shas, cells = prints[b]
                same_w = shas == shas0
                same_c = cells.keys() == cells0.keys() and all(
                    cells[k] == cells0[k] or (cells[k] != cells[k] and cells0[k] != cells0[k]) for k in cells
                )
                print(
                    f"  beside {b} busy vs idle: checkpoints' weights {'bitwise equal' if same_w else 'DIFFER'} "
                    f"({len(shas)} runs); records {'bitwise equal' if same_c else 'DIFFER'} ({len(cells):,} cells)"
                )


if __name__ == "__main__":
    main()
