"""Where a bench's run stands: trained with this configuration (or why not), evaluated, epochs done."""

from __future__ import annotations

from pathlib import Path

from mmix_eval.bench.plan import Bench, Run
from mmix_eval.config import Config, merge
from mmix_eval.errors import UserError
from mmix_eval.evaluate.runner import evaluation_done, file_stem, option_record
from mmix_eval.upgrade import method_record


def stale(run_dir: Path, cfg: Config, method: dict | None = None) -> str | None:
    """Why the checkpoint in ``run_dir`` is not this run's (None: it is): missing, another configuration,
    or the method's settings or plugin source changed since it was trained."""
    from mmix_eval.checkpoint import read_metadata  # torch: loaded when a run is checked

    ckpt = run_dir / "model.safetensors"
    if not ckpt.exists():
        return "no checkpoint yet"
    try:
        meta = read_metadata(ckpt)
    except UserError as e:
        return f"unreadable checkpoint ({e})"
    try:  # a checkpoint written by an earlier version has its configuration in that version's layout
        saved = merge(Config(), meta.get("config") or {}, "checkpoint configuration").to_dict()
    except UserError:
        saved = meta.get("config")
    if saved != cfg.to_dict():
        return "its configuration changed"
    if method is not None and method_record(meta.get("method")) != method:
        old, new = method_record(meta.get("method") or {}), method
        old, new = {**old.get("settings", {}), **old}, {**new.get("settings", {}), **new}
        keys = sorted(k for k in {*old, *new} if k != "settings" and old.get(k) != new.get(k))
        return f"the method changed since it was trained ({', '.join(keys)})"
    return None


def finished(run_dir: Path, cfg: Config, method: dict | None = None) -> bool:
    return stale(run_dir, cfg, method) is None


def complete(out: Path, bench: Bench, r: Run) -> bool:
    """Trained with this configuration and evaluated by every evaluator of the bench: the evaluation runner's own
    notion of done (same checkpoint, options on any device, label and swept values)."""
    from mmix_eval.checkpoint import read_metadata  # torch: loaded when a run is checked

    ckpt = out / "runs" / r.name / "model.safetensors"
    if not finished(ckpt.parent, r.cfg, r.method):
        return False
    sha = read_metadata(ckpt).get("data_sha256")
    folder = out / "results" / r.name
    return all(
        evaluation_done(folder, file_stem(ev, opts), sha, option_record(ev, opts, bench.options, ""), r.label, r.sweep)
        for ev, opts in bench.plan
    )


def epochs_done(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError:
        return 0
