"""bench: a YAML of methods × seeds (× sweeps) trained, evaluated on identical images and reported.

``plan`` reads the YAML into runs, ``status`` says where each run stands, ``job`` is the unit of work,
``launchers`` run the jobs (inline, local, slurm), ``run`` ties them together (and the dry run).
"""

from mmix_eval.bench.job import run_one
from mmix_eval.bench.launch import LAUNCHERS
from mmix_eval.bench.plan import Bench, Run, baseline_and_checks, load_bench
from mmix_eval.bench.run import dry_run, preflight, run_bench
from mmix_eval.bench.slurm import RunJob

__all__ = [
    "LAUNCHERS",
    "Bench",
    "Run",
    "RunJob",
    "baseline_and_checks",
    "dry_run",
    "load_bench",
    "preflight",
    "run_bench",
    "run_one",
]
