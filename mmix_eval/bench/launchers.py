"""Launchers: how a bench's runs are run, behind one ``launch(name, ctx, todo) -> failed``.

inline: one after the other in this process. local: ``jobs`` worker processes, each running runs one after
another (GPUs shared round-robin).
slurm: one submitit job per run (submitit's local executors for tests). Each returns the failed runs (name ->
why), or None when jobs were submitted without waiting for them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time
import traceback
from pathlib import Path

from tqdm.auto import tqdm

from mmix_eval.bench.job import run_one
from mmix_eval.bench.launch import LAUNCHERS, Launch
from mmix_eval.bench.plan import Bench, Run
from mmix_eval.bench.slurm import slurm_launch
from mmix_eval.errors import UserError, one_line


def launch(name: str, ctx: Launch, todo: list[Run]) -> dict[str, str] | None:
    if name not in LAUNCHERS:
        raise UserError(f"launcher: expected one of {', '.join(LAUNCHERS)}, got '{name}'")
    return {"inline": _inline, "local": _local, "slurm": slurm_launch}[name](ctx, todo)


def auto_jobs(bench: Bench, device: str | None) -> tuple[int, str]:
    """How many runs at a time when the user did not say (``jobs: auto``): on the CPU, the cores free now (the
    other runnable tasks taken off the usable cores; each run uses 1 thread, so the numbers do not depend on this:
    only the wall time does); on GPUs, one run per visible GPU. ``MMIX_EVAL_JOBS`` overrides both (a scheduler's
    share of the node, or a test suite that wants runs in its own process). (jobs, why)."""
    import torch  # loaded when a bench runs

    from mmix_eval.threads import _parse, free_cores

    if os.environ.get("MMIX_EVAL_JOBS", "").strip():
        return _parse(os.environ["MMIX_EVAL_JOBS"], "MMIX_EVAL_JOBS", "runs at a time"), "MMIX_EVAL_JOBS"

    devices = {device or r.cfg.train.device for r in bench.runs}
    cpu = all(d == "cpu" or (d == "auto" and not torch.cuda.is_available()) for d in devices)
    if cpu:
        free, inputs = free_cores()
        return free, f"{free} of {inputs['usable_cores']} cores free ({inputs['busy_tasks']})"
    n = max(1, torch.cuda.device_count())
    return n, f"{n} visible GPU{'s' if n != 1 else ''}"


def launcher_resources(section: dict, overrides: dict) -> dict:
    """The launcher's resources: defaults, then a bench YAML's ``launcher:`` section, then the command line's,
    checked."""
    res = {
        "jobs": None,
        "partition": None,
        "gpus_per_run": 0,
        "cpus_per_run": None,
        "mem_gb": None,
        "timeout_min": 24 * 60,
        "slurm_extra": {},
        "max_parallel": None,
    }
    res.update({k: v for k, v in section.items() if k != "name"})
    res.update({k: v for k, v in overrides.items() if v is not None})
    for k in ("jobs", "gpus_per_run", "cpus_per_run", "mem_gb", "timeout_min", "max_parallel"):
        v = res[k]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if k != "gpus_per_run" else 0)):
            raise UserError(f"launcher '{k}': expected an integer >= {1 if k != 'gpus_per_run' else 0}, got {v!r}")
    if not isinstance(res["slurm_extra"], dict):
        raise UserError(f"launcher 'slurm_extra': expected a mapping of sbatch options, got {res['slurm_extra']!r}")
    return res


def _inline(ctx: Launch, todo: list[Run]) -> dict[str, str]:
    """One run after the other, in this process. A run that fails (training, or an evaluator: a plugin's bug)
    is reported and the others go on, as with the other launchers; its traceback goes to OUT/logs/RUN.log."""
    failed = {}
    with tqdm(
        total=len(todo), desc=f"bench {ctx.bench.name}", unit="run", disable=not ctx.progress, dynamic_ncols=True
    ) as bar:
        for r in todo:
            bar.set_postfix_str(r.name)
            t0 = time.perf_counter()
            try:
                status = run_one(ctx.config, ctx.out, r.name, ctx.device)
            except Exception as e:  # noqa: BLE001  (any failure of one run: the bench goes on and says so)
                log = ctx.out / "logs" / f"{r.name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(traceback.format_exc(), encoding="utf-8")
                text = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                failed[r.name] = f"{one_line(text)[:500]} (log: {log})"
                status = "FAILED"
            ctx.stages[r.name] = round(time.perf_counter() - t0, 3)
            bar.write(
                f"{r.name}: {status if status == 'FAILED' else status + ', evaluated'} ({ctx.stages[r.name]:.1f} s)"
            )
            bar.update(1)
    return failed


def _local(ctx: Launch, todo: list[Run]) -> dict[str, str]:
    """``jobs`` worker processes, each running runs one after another (torch imported once per worker, not per run):
    every run's output goes to OUT/logs/RUN.log. Each worker uses the same CPU thread count as an inline run (1 by
    default, or the explicit --threads), so a run's numbers do not depend on how many ran beside it; visible GPUs are
    dealt to the workers round-robin."""
    import contextlib
    from concurrent.futures import as_completed

    out, device, stages = ctx.out, ctx.device, ctx.stages
    if not todo:
        return {}
    jobs = max(1, min(int(ctx.res["jobs"]), len(todo)))
    (out / "logs").mkdir(exist_ok=True)
    failed = {}
    # a pool the bench started is the bench's to close (it draws the report's figures next); one started here, ours
    pool = ctx.pool or start_pool(jobs, device)
    trained: dict[str, str] = {}
    with (
        tqdm(
            total=len(todo),
            desc=f"bench {ctx.bench.name} (local, {jobs} at a time)",
            unit="run",
            disable=not ctx.progress,
            dynamic_ncols=True,
        ) as bar,
        contextlib.nullcontext() if ctx.pool else pool,
    ):
        # Every training first, each run's evaluation queued behind them as its training ends (the pool's queue is
        # first in, first out): 9 runs on 2 workers left one idle for a whole last run; now the other worker
        # evaluates meanwhile.
        pending = {
            pool.submit(_worker_run, str(ctx.config), str(out), r.name, device, "train"): (r.name, "train")
            for r in todo
        }
        if ctx.pool is not None:  # a worker with no run left loads the plotting code: the report's figures come next
            for _ in range(jobs):
                pool.submit(_load_plots)
        while pending:
            f = next(as_completed(pending))
            rn, stage = pending.pop(f)
            if ctx.started is not None:
                ctx.started.set()  # the workers' start-up is over: the report's code may load beside the runs
            status, wall, why, notices = _result(f)
            for line in notices:  # what the run said about itself (re-training, and why): as an inline run says it
                bar.write(line, file=sys.stderr)
            stages[rn] = round(stages.get(rn, 0.0) + wall, 3)
            if stage == "train" and status != "FAILED":
                trained[rn] = status
                bar.set_postfix_str(f"trained {len(trained)}/{len(todo)}")
                pending[pool.submit(_worker_run, str(ctx.config), str(out), rn, device, "evaluate")] = (rn, "evaluate")
                continue
            log = out / "logs" / f"{rn}.log"
            if status == "FAILED":
                failed[rn] = f"{one_line(why)[:500]} (log: {log})"
            said = trained.get(rn, status) + ", evaluated"
            bar.write(f"{rn}: {'failed, ' + failed[rn] if rn in failed else said} ({stages[rn]:.1f} s)")
            bar.update(1)
    return failed


def _result(f) -> tuple[str, float, str, list[str]]:
    """A worker task's (status, wall seconds, why it failed, notices), or FAILED where the worker process itself
    died (killed, out of memory)."""
    try:
        return f.result()
    except Exception as e:  # noqa: BLE001
        return "FAILED", 0.0, f"worker process ended: {type(e).__name__}: {e}", []


def start_pool(jobs: int, device: str | None):
    """The local launcher's ``jobs`` worker processes (spawned: a fresh interpreter each, no state shared with this
    one), started now and each set up (``_worker_init``: threads, torch, the training and evaluation code) while this
    process goes on (the bench's preflight): their start-up overlaps it instead of following it."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from mmix_eval import threads as thread_setting

    gpus = 0 if device == "cpu" or not _may_have_gpus() else _cuda_count()
    n_threads, _ = thread_setting.resolve(None)  # the run's threads: 1 unless the user said otherwise (recorded)
    spawn = mp.get_context("spawn")
    slots = spawn.Queue()
    for k in range(jobs):
        slots.put(k)
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=spawn, initializer=_worker_init, initargs=(slots, gpus, n_threads)
    )
    for _ in range(jobs):
        pool.submit(_ready)  # each submit starts a worker while none is idle
    return pool


def _may_have_gpus() -> bool:
    """False where no GPU can be: Linux without NVIDIA's or AMD's device nodes (then torch, 1.2 s, is not loaded
    here before the workers start). Elsewhere, and wherever the nodes exist, torch counts them."""
    if not sys.platform.startswith("linux"):
        return True
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd"))


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


def _ready() -> bool:
    return True


def _worker_init(slots, gpus: int, n_threads: int) -> None:
    """A local worker's set-up, once: its GPU (round-robin), the OpenMP settings and the thread count, then torch."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    os.environ["MMIX_EVAL_THREADS"] = str(n_threads)
    from mmix_eval import memory, threads

    threads.configure_runtime()
    threads.apply(n_threads)
    memory.apply()
    import mmix_eval.bench.job  # noqa: F401  (the training and evaluation code, loaded once per worker)

    _warm_up()
    atexit.register(_leave_now)  # registered after torch's own handlers, so it runs before them


def _leave_now() -> None:
    """A worker leaves without tearing its interpreter down (torch, kornia and netcal took 0.9 s to unload, and the
    bench's exit waited for both workers). A set-up worker's interpreter exits only after the pool's stop sentinel (a
    task's exception, KeyboardInterrupt included, is that task's result): every task has returned, each run's files
    were written atomically before its task returned, and multiprocessing's own finalisers (the result queue's
    feeder thread) ran before the interpreter's exit began. A crash never reaches here and keeps its exit code."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(0)


# What a run imports late, loaded while the bench's preflight runs instead of in each worker's first run (about
# 2.5 s there): torch's optimizers import torch._dynamo on first use, the built-in evaluators these.
WARM_MODULES = ("netcal.metrics", "torchattacks", "kornia.geometry.transform")


def _warm_up() -> None:
    import importlib

    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)  # imports torch._dynamo, as training's first step
    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):  # a missing optional package is the run's to report, not the worker's
            importlib.import_module(name)


class _Notices:
    """A worker's stderr: everything to the run's log, and the run's own one-line notices (``NAME: ...``, such as
    why it is re-trained) kept to be said by the bench, as an inline run says them."""

    def __init__(self, fh, prefix: str):
        self.fh, self.prefix, self.lines, self._part = fh, prefix, [], ""

    def write(self, text: str) -> int:
        self.fh.write(text)
        self._part += text
        *done, self._part = self._part.split("\n")
        self.lines += [ln for ln in done if ln.startswith(self.prefix)]
        return len(text)

    def flush(self) -> None:
        self.fh.flush()


def _load_plots() -> None:
    import mmix_eval.report.plots  # noqa: F401  (matplotlib: the figures a bench's report draws in these workers)


def _worker_run(
    config: str, out: str, name: str, device: str | None, stage: str = "all"
) -> tuple[str, float, str, list[str]]:
    """One run (or one ``stage`` of it: ``run_one``) in a worker, its output in OUT/logs/NAME.log (an evaluation
    appends to its training's): (status, wall seconds, why it failed, its notices)."""
    import contextlib

    log = Path(out) / "logs" / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "a" if stage == "evaluate" else "w", encoding="utf-8") as fh, contextlib.redirect_stdout(fh):
        err = _Notices(fh, f"{name}: ")
        with contextlib.redirect_stderr(err):
            try:
                return run_one(config, out, name, device, stage), time.perf_counter() - t0, "", err.lines
            except Exception as e:  # noqa: BLE001  (any failure of one run: the bench goes on and says so)
                traceback.print_exc(file=fh)
                text = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                return "FAILED", time.perf_counter() - t0, text, err.lines
