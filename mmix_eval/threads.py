"""How many CPU threads torch uses: one per process unless the user says otherwise, so that a run's numbers do
not depend on the machine's load. Imports no torch until it applies the number.

The thread count changes the numbers: a trained network's weights differed by up to 0.02 at 1 and at 2 threads
(float reductions split differently), so the count the first versions chose from the free cores made the same
seed give other tables on a busy machine. Now:

* **The default is 1 thread per process** (``DEFAULT_THREADS``). Speed comes from processes instead: ``bench``
  runs its runs side by side, as many at a time as there are free cores (``bench.launchers.auto_jobs``), and the
  number of processes changes no number. A busy machine then gets fewer processes, never other results.
* **An explicit count wins**: ``--threads N``, then ``MMIX_EVAL_THREADS``, then ``OMP_NUM_THREADS`` (the OpenMP
  convention, and what an outer scheduler exports). It is recorded in every run's and every evaluation's
  provenance, and a report whose runs used different counts says so.
* **Waiting threads sleep sooner.** ``GOMP_SPINCOUNT=10000`` (GNU OpenMP, which PyTorch's Linux wheels ship: a
  waiting thread spins about 0.1 ms instead of about 3 ms, then sleeps) and ``KMP_BLOCKTIME=1`` (Intel's OpenMP,
  which MKL builds use: 1 ms instead of 200 ms), unless the user set them or ``OMP_WAIT_POLICY``: with an explicit
  count above the free cores, spinning threads slowed every parallel region. libgomp reads these when it loads,
  so they must be in the environment before ``import torch`` (``configure_runtime``, first thing in ``cli.main``).
  ``MMIX_EVAL_OPENMP=default`` leaves the runtime's own.

The free cores (the affinity mask capped by the cgroup's CPU quota, less the other runnable tasks from
``/proc/loadavg``) are still measured: for the bench's number of processes and for provenance.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from mmix_eval.errors import UserError

SOURCES = ("--threads", "MMIX_EVAL_THREADS", "OMP_NUM_THREADS", "default")
# Set before torch loads its OpenMP runtime, each only where the user has not set it.
RUNTIME_ENV = {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "1"}
MARKER = "MMIX_EVAL_OPENMP_SET"  # what mmix-eval put there, so a child process does not read it as the user's
LOADAVG = Path("/proc/loadavg")
SAMPLES, SAMPLE_GAP_S = 5, 0.01  # busy = the fewest other runnable tasks over 5 looks, 10 ms apart
_applied: dict = {}
_runtime: dict = {}


def affinity_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_quota(root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota in cores of this process's cgroup and its parents (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us / cpu.cfs_period_us``), the smallest found; None where there is none."""
    text = _read(self_cgroup)
    if not text:
        return None
    quotas = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = Path(path.lstrip("/"))
        chain = [rel, *rel.parents] if str(rel) not in ("", ".") else [Path(".")]
        if controllers == "":  # cgroup v2: "QUOTA PERIOD" or "max PERIOD" in cpu.max
            for folder in (base / p for base in (root, root / "unified") for p in chain):
                quota, _, period = (_read(folder / "cpu.max") or "").partition(" ")
                quotas.append(_cores(quota, period or "100000"))
        elif "cpu" in controllers.split(","):  # cgroup v1: quota -1 means none
            for folder in (
                base / p for base in (root / "cpu", root / controllers, root / "cpu,cpuacct") for p in chain
            ):
                quotas.append(_cores(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")))
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def _cores(quota: str | None, period: str | None) -> float | None:
    """quota / period in cores, or None where there is no finite, positive quota (absent, "max", -1, garbage)."""
    try:
        q, p = float(quota), float(period)
    except (TypeError, ValueError):
        return None
    return q / p if math.isfinite(q) and math.isfinite(p) and q > 0 and p > 0 else None


def usable_cores() -> int:
    """The cores this process may use: its affinity mask, capped by its cgroup's CPU quota (rounded up)."""
    cores = affinity_cores()
    quota = cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _own_running() -> int:
    """This process's threads that are runnable now (state R in /proc/self/task/*/stat)."""
    n = 0
    try:
        for task in os.scandir("/proc/self/task"):
            stat = _read(Path(task.path) / "stat")
            if stat and stat[stat.rfind(")") + 2 :].startswith("R"):
                n += 1
    except OSError:
        return 1
    return max(1, n)


def other_runnable(samples: int = SAMPLES, gap: float = SAMPLE_GAP_S) -> tuple[float, str]:
    """(runnable tasks of other processes, how it was measured). ``/proc/loadavg``'s fourth field counts the
    runnable tasks, the reading thread included; this process's own running threads are taken off. The
    fewest over ``samples`` looks: a task that runs for a moment is not a busy core. Elsewhere, the 1-minute
    load average, less this process."""
    seen = []
    for i in range(samples):
        text = _read(LOADAVG)
        try:
            running = int(text.split()[3].split("/")[0]) if text else None
        except (IndexError, ValueError):
            running = None
        if running is None:
            break
        seen.append(max(0, running - _own_running()))
        if seen[-1] == 0 or i + 1 == samples:
            break  # nothing else runs (no need to look again), or enough looks
        time.sleep(gap)
    if seen:
        return float(min(seen)), "/proc/loadavg running"
    try:
        return max(0.0, os.getloadavg()[0] - 1.0), "1-minute load average"
    except (AttributeError, OSError):
        return 0.0, "unknown (no /proc/loadavg, no load average)"


THREADS_PER_CORE_MAX = 4  # an explicit thread count above 4 x the usable cores is refused (each thread has a stack)


def _most_threads() -> int:
    return THREADS_PER_CORE_MAX * affinity_cores()


def _parse(text, where: str, what: str = "CPU threads", most: int | None = None) -> int:
    try:
        n = int(str(text).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"{where}: expected an integer >= 1 ({what}), got {text!r}")
    if most is not None and n > most:
        raise UserError(
            f"{where}: expected at most {most} {what} ({THREADS_PER_CORE_MAX} x the {affinity_cores()} "
            f"usable cores), got {n}"
        )
    return n


def free_cores() -> tuple[int, dict]:
    """(cores left free, the inputs of that figure as strings for provenance)."""
    usable = usable_cores()
    busy, how = other_runnable()
    free = max(1, usable - int(math.floor(busy)))
    return free, {"usable_cores": str(usable), "busy_tasks": f"{busy:g} ({how})", "free_cores": str(free)}


def resolve(flag: int | str | None = None, jobs: int = 1) -> tuple[int, str]:
    """(threads, where the number came from) for a process that is one of ``jobs`` running side by side."""
    n, source, _ = decide(flag, jobs)
    return n, source


DEFAULT_THREADS = 1  # per process: a run's numbers are then a function of what is recorded, never of the load


def decide(flag: int | str | None = None, jobs: int = 1) -> tuple[int, str, dict]:
    """(threads, source, the decision's inputs). Explicit counts win (recorded: they can change the last digits);
    the default is ``DEFAULT_THREADS``: the thread count changed a trained network's weights (by up to 0.02 at 1
    and 2 threads), so a count that followed the machine's load made the same seed give other numbers on a busy
    machine. Speed comes from running runs side by side (``bench``'s jobs), which changes no number. The free
    cores are still measured, for provenance."""
    if flag is not None:
        return _parse(flag, "--threads", most=_most_threads()), "--threads", {}
    for var in ("MMIX_EVAL_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").strip():
            return _parse(os.environ[var], var, most=_most_threads()), var, {}
    free, inputs = free_cores()
    return DEFAULT_THREADS, "default", inputs


def configure_runtime() -> dict:
    """Put the OpenMP spin settings in the environment, each variable only where the user has not set it.
    Must run before torch is imported to take effect in this process (libgomp reads it when it loads);
    processes started from this one inherit it. Returns {variable: value and who set it}."""
    if not _runtime and os.environ.get("MMIX_EVAL_OPENMP", "").strip().lower() == "default":
        _runtime["MMIX_EVAL_OPENMP"] = "default (the OpenMP runtime's own wait policy)"
    if not _runtime:
        ours = dict(kv.split("=", 1) for kv in os.environ.get(MARKER, "").split(";") if "=" in kv)
        for var, value in RUNTIME_ENV.items():
            if os.environ.get(var, "").strip() and ours.get(var) == os.environ[var]:
                _runtime[var] = f"{value} (mmix-eval, inherited from its parent process)"
            elif os.environ.get(var, "").strip():
                _runtime[var] = f"{os.environ[var]} (set by the user)"
            elif os.environ.get("OMP_WAIT_POLICY", "").strip():  # the user chose a policy: leave the spin to it
                _runtime[var] = f"unset (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} set by the user)"
            else:
                os.environ[var] = value
                ours[var] = value
                os.environ[MARKER] = ";".join(f"{k}={v}" for k, v in ours.items())
                late = " (torch was already loaded: from the next process on)" if "torch" in sys.modules else ""
                _runtime[var] = f"{value} (mmix-eval){late}"
    return dict(_runtime)


def apply(flag: int | str | None = None, jobs: int = 1) -> tuple[int, str]:
    """Resolve and set torch's intra-op threads; returns (threads, source). Decided once per process: a later
    call without an explicit ``flag`` keeps the first decision (a process that calls the command line many
    times, as a test suite or a notebook does, never flips torch's pool back and forth on a changed
    environment; growing the pool again after shrinking it has crashed this torch build's OpenMP runtime)."""
    if flag is None and _applied:
        return _applied["threads"], _applied["source"]
    n, source, inputs = decide(flag, jobs)
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _applied.clear()
    _applied.update(threads=n, source=source, jobs=max(1, jobs), checked_at=time.monotonic(), **inputs)
    return n, source


def prepare_torch(flag: int | str | None = None) -> None:
    """This process's torch threads (``apply``) and allocator (``memory.py``), before it runs any torch. ``bench``
    calls it after spawning its workers (they set their own; torch's import here would delay them), every other
    torch command at its start (``cli._threads``)."""
    from mmix_eval import memory  # ctypes: loaded for the commands that run torch

    apply(flag)
    memory.apply()  # freed tensor memory kept for the next batch (see memory.py)


def applied() -> dict:
    """What this process set (empty if it never applied a count), with the decision's inputs and the OpenMP
    runtime settings: recorded in provenance."""
    out = {k: v for k, v in _applied.items() if k != "checked_at"}
    if _runtime:
        out["openmp"] = "; ".join(f"{k}={v}" for k, v in _runtime.items())
    return out
