"""The models one ``evaluate`` call evaluates: each checkpoint, or one deep ensemble of them, with its run folder's
name, method label and swept values, read from the headers only (nothing loaded yet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmix_eval.errors import UserError, mention
from mmix_eval.io import safe_name


@dataclass(frozen=True)
class Unit:
    """One evaluated model: a checkpoint (``members`` None) or a deep ensemble's members, with its header
    metadata (kept for the hashes), its run folder's name, method label and swept values."""

    ckpt: Path
    meta: dict
    name: str
    label: str | None
    sweep: dict | None
    members: list[Path] | None = None
    origin: str | None = None  # where it was fetched from (hf://ORG/REPO@COMMIT/FILE); None for a local file


def _repo_name(origin: str) -> str:
    """hf://ORG/REPO@COMMIT/FILE -> REPO."""
    return origin.split("/", 3)[3].split("@")[0]


def _run_names(ckpts: list[Path], by_stem: bool = False, origins: dict | None = None) -> list[str]:
    """A run per checkpoint: its folder's name (a run folder holds model.safetensors), or with ``by_stem``
    its file name (plain state dicts, often many in one folder); a checkpoint fetched from the Hub: its repo's
    name."""
    names, seen = [], {}
    for c in ckpts:
        origin = (origins or {}).get(str(c))
        if origin is not None:
            name = safe_name(_repo_name(origin))
        else:
            name = safe_name(c.stem if by_stem else (c.resolve().parent.name or c.stem))
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def evaluation_units(ckpts: list[Path], job) -> list[Unit]:
    """The models to evaluate, their metadata read from the headers only (nothing loaded yet)."""
    from mmix_eval.checkpoint import read_metadata

    if not ckpts:
        raise UserError("ckpt: expected at least one checkpoint, got none")
    names, labels = job.names, job.labels
    if job.ensemble:
        return [_ensemble_unit(ckpts, job)]
    if job.foreign is not None:
        from mmix_eval.foreign import metadata

        metas = [metadata(c, job.foreign) for c in ckpts]
        origins = job.origins or {}
        labels = labels or [_repo_name(origins[str(c)]) if str(c) in origins else c.stem for c in ckpts]
        names = names or _run_names(ckpts, by_stem=True, origins=job.origins)
    else:
        metas = [read_metadata(c) for c in ckpts]
    names = names or _run_names(ckpts, origins=job.origins)
    origins = [(job.origins or {}).get(str(c)) for c in ckpts]
    return [
        Unit(c, m, n, lab, s, origin=o)
        for c, m, n, lab, s, o in zip(
            ckpts, metas, names, labels or [None] * len(ckpts), job.sweeps or [None] * len(ckpts), origins
        )
    ]


def _ensemble_unit(ckpts: list[Path], job) -> Unit:
    """A deep ensemble's members as one unit, checked as members before anything is loaded or written."""
    from mmix_eval.checkpoint import read_metadata
    from mmix_eval.evaluate.ensemble import check_members, ensemble_method, ensemble_sha

    if job.foreign is not None:
        raise UserError(
            f"ensemble: expected mmix-eval checkpoints, got plain state dicts ({mention('model')}); evaluate them one by one"
        )
    metas = [read_metadata(c) for c in ckpts]
    check_members(ckpts, metas)
    method = ensemble_method(metas)
    return Unit(
        ckpts[0],
        {**metas[0], "data_sha256": ensemble_sha(metas)},
        (job.names or [safe_name(f"{method}-ensemble")])[0],
        (job.labels or [f"{method} ensemble of {len(ckpts)}"])[0],
        (job.sweeps or [None])[0],
        list(ckpts),
    )
