"""Library parameters as the command line's flags, in one place. The library names parameters (``ckpt``,
``image_size``); its errors carry them (``errors.ParamError``, ``errors.mention``); the command line shows the
same messages with its flags (``--ckpt``, ``--image-size``)."""

from __future__ import annotations

from mmix_eval.errors import UserError, one_line

# Where a flag is not the parameter's name with dashes.
FLAGS: dict[str, str] = {}


def flag(param: str) -> str:
    """The flag of a library parameter: ``image_size`` -> ``--image-size``."""
    return FLAGS.get(param) or "--" + param.replace("_", "-")


def as_flags(e: UserError) -> str:
    """A library error's message as the command line shows it: every parameter it names as its flag."""
    return one_line(e.render(flag))


def launcher_flags(g, unit: str) -> None:
    """The launchers' flags, shared by ``bench`` (a ``unit`` is a run: trained, then evaluated) and ``evaluate`` (a
    checkpoint x evaluator)."""
    g.add_argument(
        "--launcher",
        choices=["inline", "local", "slurm"],
        help=f"inline: one {unit} after another in this process; local: --jobs worker processes side by side; "
        f"slurm: one submitit job per {unit}",
    )
    g.add_argument("--jobs", type=int, help=f"local: {unit}s at a time (default: the free cores on a CPU, one per GPU)")
    g.add_argument("--partition", help="slurm: partition")
    g.add_argument("--gpus-per-run", type=int, help="slurm: GPUs per job (>1 runs with DDP across them)")
    g.add_argument("--cpus-per-run", type=int, help="slurm: CPUs per task (default 4)")
    g.add_argument("--mem-gb", type=int, help="slurm: memory per job")
    g.add_argument(
        "--timeout-min",
        type=int,
        help=f"slurm: time limit per job in minutes (default 1440); a job that reaches it, or is preempted, is "
        f"requeued and resumes its {unit}",
    )
    g.add_argument("--max-parallel", type=int, help="slurm: at most N jobs running at once (array throttle)")
    g.add_argument("--no-wait", action="store_true", help="slurm: submit and exit")
    g.add_argument(
        "--submitit-cluster",
        choices=["slurm", "local", "debug"],
        help="slurm launcher's submitit executor: slurm (default), or local/debug to run the jobs here",
    )
