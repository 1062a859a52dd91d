"""How long the command line takes before it does anything: `mmix-eval --help`, `ls models`, a typo, and the
import cost of mmix_eval beside torch's.

    python benchmarks/bench_startup.py [--repeat 5]

Medians over --repeat fresh processes each. Prints `mmix-eval --help` wall / `python -c pass` wall and
`import mmix_eval` − `import torch` (the goal: under 0.3 s, i.e. the package adds nothing heavy of its own).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    py = sys.executable
    base = wall([py, "-c", "pass"], args.repeat)
    rows = {
        "python -c pass": base,
        "mmix-eval --help": wall([py, "-m", "mmix_eval", "--help"], args.repeat),
        "mmix-eval train --help": wall([py, "-m", "mmix_eval", "train", "--help"], args.repeat),
        "mmix-eval ls models": wall([py, "-m", "mmix_eval", "ls", "models"], args.repeat),
        "mmix-eval trian (a typo)": wall([py, "-m", "mmix_eval", "trian"], args.repeat),
        "import torch": wall([py, "-c", "import torch"], args.repeat),
        "import mmix_eval": wall([py, "-c", "import mmix_eval"], args.repeat),
        "import torch, mmix_eval.training": wall([py, "-c", "import torch, mmix_eval.training"], args.repeat),
    }
    for k, v in rows.items():
        print(f"  {k:<32} {v:6.3f} s")
    print(f"  mmix-eval --help / python -c pass = {rows['mmix-eval --help'] / base:.1f}")
    print(
        f"  import mmix_eval.training - import torch = {rows['import torch, mmix_eval.training'] - rows['import torch']:.3f} s "
        f"(the package's own import cost on top of torch's)"
    )


if __name__ == "__main__":
    main()
