"""How the report's time and memory grow with the number of runs (issue 44, item 7): the README's main bench
(digits-quick: 3 methods x 3 seeds, about 450 records per run with per-image outcomes, bootstrap replicates and
reliability bins) is run once, then its 9 runs' result folders are copied under new seeds to 27 ... 513 runs,
and `mmix-eval report` is timed in a child process with its peak resident memory. Prints one line per size and
the growth between sizes; no assertion (a benchmark, not a test). Goal: 513 runs (about 230k records) in
<= 60 s and <= 2 GB.

    python benchmarks/bench_report_runs.py                 # 27, 54, 108, 216, 513 runs
    python benchmarks/bench_report_runs.py 27 513          # any sizes (multiples of 3)
    python benchmarks/bench_report_runs.py --plots 513     # with figures (default: --no-plots, the issue's case)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "configs" / "bench" / "digits-quick.yaml"


def seed_results(work: Path) -> Path:
    out = work / "bench"
    subprocess.run(
        [sys.executable, "-m", "mmix_eval", "bench", str(BENCH), "--out", str(out), "--no-progress"],
        check=True,
        capture_output=True,
        env={**os.environ, "MMIX_EVAL_JOBS": "1"},
    )
    return out / "results"


def grow(results: Path, dest: Path, runs: int) -> int:
    """``runs`` run folders: each of the 9 copied under seeds 0, 1, 2, ... (names and seeds rewritten)."""
    base = sorted(p for p in results.iterdir() if p.is_dir())
    methods = sorted({p.name.rsplit("-s", 1)[0] for p in base})
    per = runs // len(methods)
    records = 0
    for m in methods:
        src = {int(p.name.rsplit("-s", 1)[1]): p for p in base if p.name.rsplit("-s", 1)[0] == m}
        for seed in range(per):
            folder = src[seed % len(src)]
            run = f"{m}-s{seed}"
            (dest / run).mkdir(parents=True)
            for f in folder.iterdir():
                if f.suffix == ".jsonl":
                    lines = []
                    for line in f.read_text().splitlines():
                        r = json.loads(line)
                        r["run"], r["train_seed"] = run, seed
                        lines.append(json.dumps(r))
                    records += len(lines)
                    (dest / run / f.name).write_text("\n".join(lines) + "\n")
                elif f.name.endswith(".outcomes.npz") or f.name.endswith(".meta.json"):
                    shutil.copy(f, dest / run / f.name)
    return records


def timed_report(results: Path, out: Path, plots: bool) -> tuple[float, float]:
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode); "
        "sys.stderr.write(r.stderr[-2000:] if r.returncode else '')"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        sys.executable,
        "-m",
        "mmix_eval",
        "report",
        str(results),
        "--out",
        str(out),
        *([] if plots else ["--no-plots"]),
    ]
    got = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall, rss_mb, rc = got.stdout.split()
    if rc != "0":
        raise SystemExit(f"report failed at {results}: {got.stderr}")
    return float(wall), float(rss_mb)


def main(argv: list[str]) -> None:
    plots = "--plots" in argv
    sizes = [int(a) for a in argv if a.isdigit()] or [27, 54, 108, 216, 513]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        results = seed_results(work)
        print(f"seed bench (9 runs): {time.perf_counter() - t:.0f} s; report {'with' if plots else 'without'} plots")
        last = None
        for n in sizes:
            dest = work / f"r{n}"
            records = grow(results, dest, n)
            wall, rss = timed_report(dest, work / f"rep{n}", plots)
            growth = f", x{wall / last[1]:.2f} time for x{n / last[0]:.2f} runs" if last else ""
            print(f"{n:4d} runs, {records:7,d} records: {wall:6.1f} s, peak RSS {rss:6.0f} MB{growth}", flush=True)
            last = (n, wall)
            shutil.rmtree(dest)


if __name__ == "__main__":
    main(sys.argv[1:])
