"""The unit of work every launcher runs: train (or resume) one run of a bench, then evaluate it."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from mmix_eval.bench.plan import load_bench
from mmix_eval.bench.status import stale
from mmix_eval.errors import ParamError, did_you_mean
from mmix_eval.evaluate.runner import EvalJob, run_evaluation

STAGES = ("all", "train", "evaluate")


def run_one(config: str | Path, out: str | Path, name: str, device: str | None = None, stage: str = "all") -> str:
    """Train and evaluate one run of a bench, idempotently: the unit of work every launcher runs.
    Returns 'done already', 'resumed' or 'trained' ('evaluated' for ``stage="evaluate"``). Under a multi-GPU Slurm
    job (several tasks) it joins the job's process group first, as torchrun would. ``stage``: ``train`` or
    ``evaluate`` alone (the local launcher runs every training first and the evaluations after, so the last round
    of trainings does not leave a worker idle); the evaluation reads the checkpoint from disk either way, so the
    records are the same bytes."""
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {', '.join(STAGES)}, got '{stage}'")
    from mmix_eval import distributed  # torch: loaded in the job only

    bench = load_bench(config)
    runs = {r.name: r for r in bench.runs}
    if name not in runs:
        raise ParamError(
            "only",
            f"expected a run of bench '{bench.name}' ({', '.join(runs)}), got '{name}'{did_you_mean(name, list(runs))}",
        )
    r, out = runs[name], Path(out)
    slurm_torch_env()
    distributed.init_from_env(device or r.cfg.train.device)
    if device is not None:
        r.cfg.train.device = device
        bench.options = replace(bench.options, device=device)
    bench.options = replace(bench.options, progress=False)
    run_dir = out / "runs" / r.name
    status = "evaluated" if stage == "evaluate" else _train(r, run_dir)
    if stage == "train":
        return status
    run_evaluation(
        [run_dir / "model.safetensors"],
        bench.plan,
        out / "results",
        bench.options,
        EvalJob(echo=lambda *_: None, skip_done=True, names=[r.name], labels=[r.label], sweeps=[r.sweep]),
    )
    return status


def _train(r, run_dir: Path) -> str:
    from mmix_eval.training import train

    why = stale(run_dir, r.cfg, r.method)
    if why is None:
        status = "done already"
    elif why.startswith("the method changed"):  # its old state files are of the old method: start over
        print(f"{r.name}: re-training, {why}", file=sys.stderr)
        train(r.cfg, run_dir, overwrite=True, progress=False)
        status = f"re-trained ({why})"
    else:
        resume = (run_dir / "config.yaml").exists()
        train(r.cfg, run_dir, resume=resume, progress=False)
        status = "resumed" if resume else "trained"
    return status


def slurm_torch_env() -> None:
    """Inside a submitit job with several tasks (gpus_per_run > 1), export RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR and MASTER_PORT as torchrun would, so the run trains with DDP across the job's tasks."""
    if "WORLD_SIZE" in os.environ:
        return
    try:
        import submitit

        env = submitit.JobEnvironment()
        tasks = env.num_tasks
    except Exception:  # not inside a submitit job (inline or local launcher), or no submitit
        return
    if tasks > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
