"""Run evaluators over checkpoints and write the records: out/<run>/<evaluator>.{jsonl,csv,meta.json}."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import summary_table, write_records
from mmix_eval.io import atomic_write_json

EVALUATORS = ("deformations", "fgsm", "calibration")


@dataclass
class EvalOptions:
    data: str | None = None
    data_root: str | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int | None = None
    device: str = "auto"
    progress: bool = True
    grid: str = "table4"
    interpolation: str = "nearest"
    eps: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    attack: str = "fgsm"
    pgd_steps: int = 7
    bins: int = 15
    allow_import: bool = False


def safe_name(name: str) -> str:
    """A run name usable as one folder name: letters, digits, '.', '_', '-' only, never '.' or '..'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    return cleaned[:100]


def _run_names(ckpts: list[Path]) -> list[str]:
    names, seen = [], {}
    for c in ckpts:
        name = safe_name(c.resolve().parent.name or c.stem)
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def run_evaluation(ckpts: list[str | Path], evaluators: list[str], out: str | Path, opts: EvalOptions,
                   echo=print, skip_done: bool = False, names: list[str] | None = None) -> list[dict]:
    """Evaluate each checkpoint with each evaluator. ``skip_done``: keep results whose checkpoint hash and
    options are unchanged (bench uses this to continue where it stopped)."""
    from mmix_eval import distributed
    from mmix_eval.checkpoint import read_metadata
    from mmix_eval.device import resolve_device
    from mmix_eval.evaluate.calibration import evaluate_calibration
    from mmix_eval.evaluate.deformations import evaluate_deformations
    from mmix_eval.evaluate.fgsm import evaluate_fgsm, parse_eps
    from mmix_eval.evaluate.geometry import load_grid
    from mmix_eval.evaluate.records import read_records
    from mmix_eval.evaluate.target import load_target
    from mmix_eval.provenance import git_commit, hardware, versions

    # Everything that can be checked cheaply is checked before the first result is written.
    for e in evaluators:
        if e not in EVALUATORS:
            raise UserError(f"evaluator '{e}': expected one of {', '.join(EVALUATORS)}")
    ckpts = [Path(c) for c in ckpts]
    if not ckpts:
        raise UserError("--ckpt: expected at least one checkpoint, got none")
    metas = [read_metadata(c) for c in ckpts]  # headers only; kept for the hashes below
    device = resolve_device(distributed.device_for(opts.device))
    if "deformations" in evaluators:
        load_grid(opts.grid)
    if "fgsm" in evaluators:
        opts.eps = parse_eps(opts.eps)
    if opts.seed < 0:
        raise UserError(f"--seed: expected an integer >= 0, got {opts.seed}")

    out = Path(out)
    common = dict(batch_size=opts.batch_size, device=device, progress=opts.progress)
    run = {
        "deformations": lambda t: evaluate_deformations(t, opts.grid, opts.seed, opts.interpolation, **common),
        "fgsm": lambda t: evaluate_fgsm(t, opts.eps, opts.attack, opts.pgd_steps, opts.seed, **common),
        "calibration": lambda t: evaluate_calibration(t, opts.bins, **common),
    }
    all_rows = []
    options = {**vars(opts), "device": str(device), "progress": None}
    main = distributed.is_main()  # under torchrun every rank evaluates its shard; rank 0 alone writes
    if not main:
        opts.progress = common["progress"] = False
    for ckpt, meta, name in zip(ckpts, metas, names or _run_names(ckpts)):
        sha = meta.get("data_sha256")
        target = None
        for e in evaluators:
            folder = out / name
            if skip_done and distributed.agree(lambda: _done(folder, e, sha, options)):
                all_rows += read_records(folder / f"{e}.jsonl")
                continue
            if target is None:
                target = load_target(ckpt, device, opts.data, opts.data_root, opts.limit, opts.seed, name, opts.allow_import)
            t0 = time.perf_counter()
            rows = run[e](target)
            wall = time.perf_counter() - t0
            all_rows += rows
            if not main:
                continue
            write_records(rows, folder / e)
            atomic_write_json(folder / f"{e}.meta.json", {
                "checkpoint": str(ckpt), "checkpoint_sha256": sha, "run": name, "evaluator": e, "options": options,
                "n_images": len(target.test), "wall_time_s": round(wall, 3), "versions": versions(),
                "git_commit": git_commit(), "hardware": hardware(str(device)),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            echo(f"{name}  {e}  (n={len(target.test)}, {wall:.1f} s) -> {folder / e}.csv")
            echo(summary_table(rows))
    return all_rows


def _done(folder: Path, evaluator: str, sha: str | None, options: dict) -> bool:
    import json

    try:
        meta = json.loads((folder / f"{evaluator}.meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (sha is not None and meta.get("checkpoint_sha256") == sha and meta.get("options") == options
            and (folder / f"{evaluator}.jsonl").exists())
