"""``mmix-eval evaluate --launcher local|slurm``: one job per checkpoint × evaluator, through the bench's launchers.

Every job is idempotent: it keeps a result already written for the same checkpoint and options, and an evaluator
interrupted mid-grid (killed, preempted, out of time) resumes at its first missing condition from the journal the
runner keeps (``evaluate/journal.py``). A job's numbers do not depend on how many ran beside it (each worker uses the
same CPU thread count, 1 unless told otherwise); a job computes its checkpoint's clean logits itself where an inline
``evaluate`` shares one pass between the evaluators of a checkpoint. Slurm goes through submitit (requeued on
preemption); what a job did is read from the result files it wrote, never from submitit's result pickle."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from mmix_eval.errors import ParamError, UserError, one_line
from mmix_eval.evaluate.base import EvalOptions
from mmix_eval.evaluate.runner import (
    EvalJob,
    Plan,
    discard_journal,
    evaluation_done,
    evaluation_units,
    file_stem,
    option_record,
)
from mmix_eval.io import atomic_write_text


@dataclass(frozen=True)
class Task:
    """One job: an evaluator on a checkpoint (or on one deep ensemble's members)."""

    ckpts: tuple[str, ...]
    name: str  # the run folder under OUT
    label: str | None
    evaluator: object  # (Evaluator, its options)
    sha: str | None

    @property
    def title(self) -> str:
        return f"{self.name}/{file_stem(*self.evaluator)}"


def eval_tasks(ckpts: list[str], plan: Plan, job: EvalJob) -> list[Task]:
    """Every checkpoint × evaluator, the checkpoints' headers read (and checked) here, before any job starts."""
    units = evaluation_units([Path(c) for c in ckpts], job)
    return [
        Task(
            tuple(str(m) for m in (u.members or [u.ckpt])),
            u.name,
            u.label,
            pair,
            u.meta.get("data_sha256"),
        )
        for u in units
        for pair in plan
    ]


def launch_evaluation(
    launcher: str,
    tasks: list[Task],
    out: Path,
    common: EvalOptions,
    job: EvalJob,
    res: dict,
    cluster: str | None = None,
    wait: bool = True,
    echo=print,
) -> dict[str, str] | None:
    """Run the tasks with the ``local`` or ``slurm`` launcher; returns the failed ones (title -> why), or None when
    Slurm jobs were submitted without waiting."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [t for t in tasks if not _done(t, out, common)]
    if len(todo) < len(tasks):
        echo(f"{len(tasks) - len(todo)} of {len(tasks)} evaluation(s) already done, kept")
    if not todo:
        return {}
    if launcher == "local":
        return _local(todo, out, common, job, res["jobs"], echo)
    if launcher == "slurm":
        return _slurm(todo, out, common, job, res, cluster, wait, echo)
    raise ParamError("launcher", f"expected inline, local or slurm, got '{launcher}'")


def _done(t: Task, out: Path, common: EvalOptions) -> bool:
    """The task's result is written (for this checkpoint and options); a journal a killed job left beside it goes."""
    ev, opts = t.evaluator
    options = option_record(ev, opts, common, common.device)
    done = evaluation_done(out / t.name, file_stem(ev, opts), t.sha, options, t.label)
    if done:
        discard_journal(out / t.name, file_stem(ev, opts))
    return done


def run_task(t: Task, out: str, common: EvalOptions, job: EvalJob) -> str:
    """What each job runs: one evaluator on one checkpoint, resuming what a killed job of it left."""
    from mmix_eval.bench.job import slurm_torch_env
    from mmix_eval.evaluate.runner import run_evaluation

    slurm_torch_env()
    run_evaluation(
        list(t.ckpts),
        [t.evaluator],
        out,
        replace(common, progress=False),
        replace(job, names=[t.name], labels=[t.label], skip_done=True, echo=print),
    )
    return "evaluated"


def _local(todo: list[Task], out: Path, common: EvalOptions, job: EvalJob, jobs: int, echo) -> dict[str, str]:
    """``jobs`` worker processes (the bench's pool: spawned, 1 CPU thread each unless told otherwise, GPUs dealt
    round-robin), each job's output in OUT/logs/RUN-EVALUATOR.log."""
    from concurrent.futures import as_completed

    from mmix_eval.bench.launchers import _result, start_pool

    jobs = max(1, min(int(jobs), len(todo)))
    (out / "logs").mkdir(exist_ok=True)
    failed: dict[str, str] = {}
    job = replace(job, echo=print)
    with (
        start_pool(jobs, common.device) as pool,
        tqdm(
            total=len(todo), desc=f"evaluate (local, {jobs} at a time)", unit="job", disable=not common.progress
        ) as bar,
    ):
        pending = {pool.submit(_worker_task, t, str(out), common, job): t for t in todo}
        for f in as_completed(pending):
            t = pending[f]
            status, wall, why, _ = _result(f)
            if status == "FAILED":
                failed[t.title] = f"{one_line(why)[:500]} (log: {_log(out, t)})"
            bar.write(f"{t.title}: {'failed, ' + failed[t.title] if t.title in failed else status} ({wall:.1f} s)")
            bar.update(1)
    return failed


def _log(out: Path, t: Task) -> Path:
    return out / "logs" / f"{t.title.replace('/', '-')}.log"


def _worker_task(t: Task, out: str, common: EvalOptions, job: EvalJob) -> tuple[str, float, str, list]:
    """One task in a worker, its output in its log: (status, wall seconds, why it failed, [])."""
    t0 = time.perf_counter()
    with (
        open(_log(Path(out), t), "a", encoding="utf-8") as fh,
        contextlib.redirect_stdout(fh),
        contextlib.redirect_stderr(fh),
    ):
        try:
            return run_task(t, out, common, job), time.perf_counter() - t0, "", []
        except Exception as e:  # noqa: BLE001  (one job's failure: the others go on and the command says so)
            traceback.print_exc(file=fh)
            text = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            return "FAILED", time.perf_counter() - t0, text, []


class EvalTaskJob:
    """What each Slurm job runs: ``run_task``, checkpointable for submitit. When Slurm preempts the job or its time
    limit nears, submitit calls ``checkpoint`` and requeues the same call; the requeued job keeps the evaluations
    already written and resumes the interrupted one at its first missing condition."""

    def __call__(self, t: Task, out: str, common: EvalOptions, job: EvalJob) -> str:
        return run_task(t, out, common, job)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission  # submitit: an optional extra

        return DelayedSubmission(EvalTaskJob(), *args, **kwargs)


def _slurm(todo: list[Task], out: Path, common, job: EvalJob, res: dict, cluster, wait: bool, echo):
    """One submitit job per task (a job array), waited on through the scheduler's state; a task failed when its
    result files are not there once its job ended."""
    from mmix_eval.bench.slurm import _job_error_from_log, executor_for, require_submitit

    submitit = require_submitit()
    executor = executor_for(submitit, res, out / "slurm", cluster, "mmix-evaluate")
    job = replace(job, echo=print)
    with executor.batch():
        jobs = [(t, executor.submit(EvalTaskJob(), t, str(out.resolve()), common, job)) for t in todo]
    ids = {t.title: str(j.job_id) for t, j in jobs}
    atomic_write_text(out / "jobs.yaml", yaml.safe_dump({"executor": executor.cluster, "jobs": ids}, sort_keys=False))
    echo(f"submitted {len(jobs)} job(s) to {executor.cluster}")
    if not wait:
        echo("not waiting; run the same command again when they are done: it keeps what is written and redoes the rest")
        return None
    failed = {}
    pending = {t.title: (t, j) for t, j in jobs}
    with tqdm(
        total=len(pending), desc=f"evaluate ({executor.cluster})", unit="job", disable=not common.progress
    ) as bar:
        while pending:
            for title, (t, j) in list(pending.items()):
                if not j.done():
                    continue
                del pending[title]
                if not _done(t, out, common):
                    failed[t.title] = f"job {j.job_id} failed: {_job_error_from_log(j)} (logs: {j.paths.stderr})"
                bar.write(f"{t.title}: {'failed' if t.title in failed else 'evaluated'}")
                bar.update(1)
            if pending:
                time.sleep(0.5)
    return failed


def auto_jobs(device: str) -> int:
    """Jobs at a time when not told: the free cores on a CPU, one per visible GPU (``MMIX_EVAL_JOBS`` overrides)."""
    from mmix_eval.threads import _parse, free_cores

    if os.environ.get("MMIX_EVAL_JOBS", "").strip():
        return _parse(os.environ["MMIX_EVAL_JOBS"], "MMIX_EVAL_JOBS", "jobs at a time")
    if device == "cpu" or not _gpus():
        return free_cores()[0]
    import torch

    return max(1, torch.cuda.device_count())


def _gpus() -> bool:
    from mmix_eval.bench.launchers import _may_have_gpus

    return _may_have_gpus()


def say_failed(failed: dict[str, str]) -> None:
    for title, why in failed.items():
        print(f"mmix-eval: {title}: {why}", file=sys.stderr)
