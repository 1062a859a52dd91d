"""How many CPU threads torch uses, decided once per process. Imports no torch until it applies the number.

OpenMP threads spin while they wait for each other; on a machine whose cores are already busy (a CI runner,
a shared node, or ``bench --launcher local --jobs 2`` on 2 cores) more threads than free cores make every
parallel region wait for a descheduled thread, and a run can take 20x longer. So the default is the cores
this process may use (``os.sched_getaffinity``, which honours taskset, cgroups' cpusets and Slurm's binding)
divided by the number of jobs its launcher runs side by side.

Order of precedence: ``--threads N``, then ``MMIX_EVAL_THREADS``, then ``OMP_NUM_THREADS`` when set (the
OpenMP convention, and what an outer scheduler exports), then the default. Results can depend on the count
in their last digits (float reductions are split differently), so it is recorded in every run's and every
evaluation's provenance, and a report whose runs used different counts says so.
"""

from __future__ import annotations

import os

from mmix_eval.errors import UserError

SOURCES = ("--threads", "MMIX_EVAL_THREADS", "OMP_NUM_THREADS", "default")
_applied: dict = {}


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _parse(text, where: str) -> int:
    try:
        n = int(str(text).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"{where}: expected an integer >= 1 (CPU threads), got {text!r}")
    return n


def resolve(flag: int | str | None = None, jobs: int = 1) -> tuple[int, str]:
    """(threads, where the number came from) for a process that is one of ``jobs`` running side by side."""
    if flag is not None:
        return _parse(flag, "--threads"), "--threads"
    for var in ("MMIX_EVAL_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").strip():
            return _parse(os.environ[var], var), var
    return max(1, usable_cores() // max(1, jobs)), "default"


def apply(flag: int | str | None = None, jobs: int = 1) -> tuple[int, str]:
    """Resolve and set torch's intra-op threads; returns (threads, source). Decided once per process: a later
    call without an explicit ``flag`` keeps the first decision (a process that calls the command line many
    times, as a test suite or a notebook does, never flips torch's pool back and forth on a changed
    environment; growing the pool again after shrinking it has crashed this torch build's OpenMP runtime)."""
    if flag is None and _applied:
        return _applied["threads"], _applied["source"]
    n, source = resolve(flag, jobs)
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _applied.update(threads=n, source=source)
    return n, source


def applied() -> dict:
    """What this process set (empty if it never applied a count): recorded in provenance."""
    return dict(_applied)
