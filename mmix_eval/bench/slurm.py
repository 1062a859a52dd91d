"""The Slurm launcher: one submitit job per run (requeued on preemption, resumed from its state file), waited on
through the scheduler's state, never through submitit's result pickle."""

from __future__ import annotations

import re
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from mmix_eval.bench.job import run_one
from mmix_eval.bench.launch import Launch
from mmix_eval.bench.plan import Run
from mmix_eval.bench.status import complete
from mmix_eval.errors import ParamError
from mmix_eval.io import atomic_write_text


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise ParamError(
            "launcher", "expected the submitit package, which is not installed; pip install 'mmix-eval[slurm]'", "slurm"
        ) from None
    return submitit


def slurm_launch(ctx: Launch, todo: list[Run]) -> dict[str, str] | None:
    """One submitit job per run. ``cluster``: None (Slurm), or 'local'/'debug' to run the same jobs on this
    machine through submitit's own executors."""
    submitit = require_submitit()
    config, out, device, echo = ctx.config, ctx.out, ctx.device, ctx.echo
    if not todo:
        return {}
    executor = executor_for(submitit, ctx.res, ctx.out / "slurm", ctx.cluster, f"mmix-{ctx.bench.name}")
    jobs = []
    with executor.batch():
        for r in todo:
            jobs.append(
                (r.name, executor.submit(RunJob(), str(Path(config).resolve()), str(out.resolve()), r.name, device))
            )
    ids = {rn: str(j.job_id) for rn, j in jobs}
    atomic_write_text(out / "jobs.yaml", yaml.safe_dump({"executor": executor.cluster, "jobs": ids}, sort_keys=False))
    echo(
        f"submitted {len(jobs)} job(s) to {executor.cluster}: {', '.join(f'{k}={v}' for k, v in ids.items()) or 'none'}"
    )
    if not ctx.wait:
        echo(
            f"not waiting; when they are done (or to see what is missing): mmix-eval bench {config} --out {out} --report-only"
        )
        return None
    return _wait(ctx, dict(jobs), executor.cluster)


def executor_for(submitit, res: dict, folder: Path, cluster: str | None, name: str):
    """submitit's executor with the launcher's resources: time, tasks and GPUs per run, memory, and on Slurm the
    partition, extra parameters and the array's parallelism (bench runs and ``evaluate --launcher slurm``)."""
    gpus = res["gpus_per_run"]
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {
        "name": name,
        "timeout_min": res["timeout_min"],
        "nodes": 1,
        "tasks_per_node": max(1, gpus),
        "cpus_per_task": res["cpus_per_run"] or 4,
    }
    if gpus:
        params["gpus_per_node"] = gpus
    if res["mem_gb"]:
        params["mem_gb"] = res["mem_gb"]
    if executor.cluster == "slurm":
        if res["partition"]:
            params["slurm_partition"] = res["partition"]
        if res["slurm_extra"]:
            params["slurm_additional_parameters"] = dict(res["slurm_extra"])
        if res["max_parallel"]:
            params["slurm_array_parallelism"] = res["max_parallel"]  # at most this many of the array's jobs at once
    executor.update_parameters(**params)
    return executor


def _wait(ctx: Launch, pending: dict, cluster: str) -> dict[str, str]:
    """Each job's end, from the scheduler's state (sacct) or its process; what it did is read from the records and
    checkpoint it wrote, never from submitit's result pickle (nothing is unpickled); a failed job is explained by
    the last error line of its log."""
    failed, runs, out, bench = {}, {r.name: r for r in ctx.bench.runs}, ctx.out, ctx.bench
    bar_args = {"desc": f"bench {bench.name} ({cluster})", "unit": "run", "dynamic_ncols": True}
    with tqdm(total=len(pending), disable=not ctx.progress, **bar_args) as bar:
        while pending:
            for rn, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[rn]
                if complete(out, bench, runs[rn]):
                    status = "trained and evaluated"
                else:
                    failed[rn] = f"job {job.job_id} failed: {_job_error_from_log(job)} (logs: {job.paths.stderr})"
                    status = "failed"
                bar.write(f"{rn}: {status}")
                bar.update(1)
            if pending:
                time.sleep(0.5)
    return failed


class RunJob:
    """What each Slurm job runs: ``run_one``, made checkpointable for submitit. When Slurm preempts the job or
    its time limit nears, submitit calls ``checkpoint`` and requeues the same call; the requeued job resumes
    the run from its last state file (bitwise: every RNG is in it) and skips evaluations already written."""

    def __call__(self, config: str, out: str, name: str, device: str | None = None) -> str:
        return run_one(config, out, name, device)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission  # submitit: an optional extra

        return DelayedSubmission(RunJob(), *args, **kwargs)


def _job_error_from_log(job) -> str:
    """The job's own error line from its stderr log (submitit writes the traceback there)."""
    try:
        text = Path(job.paths.stderr).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    return _job_error(Exception(text)) if text.strip() else "no error in its log (killed?)"


def _job_error(e: Exception) -> str:
    """The job's own exception line out of submitit's error text (its traceback, then log paths)."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    cause = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*", ln)]
    return (cause[-1] if cause else type(e).__name__ + (f": {lines[0]}" if lines and lines[0] else ""))[:300]
