"""How the report's cost grows with the number of records (issue 32, item 8): synthetic result folders of
2 methods x 2 seeds x one plugin-like evaluator with many conditions (5 metrics each), then `mmix-eval report`
in a child process, timed, with its peak resident memory. Prints one line per size; no assertion (a
benchmark, not a test).

    python benchmarks/bench_report_scale.py            # 40k and 200k records
    python benchmarks/bench_report_scale.py 8000       # any sizes
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from mmix_eval.evaluate.base import MetricSpec
from mmix_eval.evaluate.records import record, with_specs, write_records

METRICS = {
    "acc": MetricSpec("accuracy (%)", "higher", ".2f", headline=True),
    "nll": MetricSpec("NLL", "lower"),
    "ece": MetricSpec("ECE", "lower"),
    "brier": MetricSpec("Brier", "lower"),
    "mce": MetricSpec("MCE", "lower"),
}
RUNS = [("vanilla", 0), ("vanilla", 1), ("manifold_mixup", 0), ("manifold_mixup", 1)]


def make(root: Path, n_records: int, numeric: bool = False) -> None:
    """``numeric``: each condition has a shift strength (line plots); else categories (bars, a table row each)."""
    conditions = max(1, n_records // (len(RUNS) * len(METRICS)))
    ev = SimpleNamespace(name="sweep", metrics=METRICS)
    for method, seed in RUNS:
        base = {
            "run": f"{method}-s{seed}",
            "checkpoint": "x",
            "model": "smallnet",
            "method": method,
            "method_settings": {},
            "train_seed": seed,
            "data": "digits",
            "n": 1000,
            "eval_seed": 0,
            "evaluator": "sweep",
            "settings": {},
        }
        rows = []
        for c in range(conditions):
            cond = "clean" if c == 0 else f"shift{c:06d}"
            for k, m in enumerate(METRICS):
                v = (
                    50.0 + (c % 37) + seed + (3 if method != "vanilla" else 0)
                    if m == "acc"
                    else 0.1 + (c % 11) / 100 + k / 10
                )
                extra = {"strength": float(c)} if numeric and c else {}
                rows.append(record(base, cond, m, v, label=None if c == 0 else f"shift {c}", **extra))
        write_records(with_specs(rows, ev), root / base["run"] / "sweep")


def measure(n_records: int, numeric: bool) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "res"
        make(res, n_records, numeric)
        size = sum(f.stat().st_size for f in res.rglob("*.jsonl"))
        # a child of its own measures it: ru_maxrss of this process's children is their maximum so far
        script = (
            "import resource, subprocess, sys, time; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode); "
            "sys.stderr.write(r.stderr[-2000:])"
        )
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                sys.executable,
                "-m",
                "mmix_eval",
                "report",
                str(res),
                "--out",
                str(Path(tmp) / "rep"),
                "--baseline",
                "vanilla",
            ],
            capture_output=True,
            text=True,
        )
        wall, peak_mb, rc = r.stdout.split()
        if rc != "0":
            raise SystemExit(f"report failed ({rc}): {r.stderr}")
        return float(wall), float(peak_mb), size


def main(sizes: list[int]) -> None:
    print("records  conditions      file MB  report s  peak RSS MB")
    for n in sizes:
        for numeric in (False, True):
            wall, peak, size = measure(n, numeric)
            kind = "with strengths" if numeric else "categories"
            print(f"{n:>7}  {kind:<14}  {size / 2**20:>7.1f}  {wall:>8.1f}  {peak:>11.0f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [40_000, 200_000])
