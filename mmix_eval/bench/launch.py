"""What every bench launcher is given besides the runs to do (Launch), and the launchers' names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from mmix_eval.bench.plan import Bench

LauncherName = Literal["inline", "local", "slurm"]
LAUNCHERS = get_args(LauncherName)


@dataclass
class Launch:
    """What every launcher is given besides the runs to do."""

    bench: Bench
    config: str | Path
    out: Path
    device: str | None = None
    progress: bool = True
    res: dict = field(default_factory=dict)  # the launcher's resources (``resources``)
    wait: bool = True
    cluster: str | None = None  # submitit's executor: None (Slurm), local or debug
    echo: Callable = print
    stages: dict = field(default_factory=dict)  # run -> wall seconds, filled as runs end
    pool: object = None  # the local launcher's worker pool, started early (``start_pool``) so its imports overlap
    started: object = None  # a threading.Event the local launcher sets when its first task ends
