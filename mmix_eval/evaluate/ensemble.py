"""Deep ensembles (Lakshminarayanan et al. 2017) from checkpoints already trained: one model whose softmax is
the mean of its members' softmax, evaluated by every evaluator like any model (attacks attack the ensemble;
deformations and corruptions render the same images as for the members; the calibrator is fitted on the same
held-out images). Members must share the data (set, classes, image size, the split they held out) and the
input; anything else is refused in one line before any evaluation."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from mmix_eval.errors import UserError
from mmix_eval.upgrade import method_record


class Ensemble(torch.nn.Module):
    """The mean of the members' softmax; its logits are the log of that mean (so their softmax is the mean)."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(m(x).float(), 1) for m in self.members])
        return torch.logsumexp(logp, 0) - math.log(len(self.members))


class MeanLogits(torch.nn.Module):
    """An ensemble's members' mean logits: what its logit-based scores (the max logit, the energy logsumexp) are
    defined on. The ensemble's own logits, log of the mean softmax, would make the energy 0 for every image and the
    max logit the log of the max softmax."""

    def __init__(self, ensemble: Ensemble):
        super().__init__()
        self.members = ensemble.members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).mean(0)


# What every member must share: (where in the metadata, what it is called in the error).
SHARED = (
    (("data", "spec"), "data set"),
    (("data", "classes"), "classes"),
    (("data", "image_size"), "image size"),
    (("model", "kwargs", "in_channels"), "input channels"),
    (("model", "kwargs", "num_classes"), "number of classes"),
    (("config", "data"), "data configuration (split, subset, validation images held out)"),
)


def _get(meta: dict, keys: tuple):
    for k in keys:
        meta = meta.get(k) if isinstance(meta, dict) else None
    return meta


def check_members(paths: list[Path], metas: list[dict]) -> None:
    """At least two members, sharing everything in ``SHARED``: else one line naming the two files and what differs."""
    if len(paths) < 2:
        raise UserError(f"ensemble: expected at least 2 checkpoints, got {len(paths)}")
    if len({str(Path(p).resolve()) for p in paths}) < len(paths):
        raise UserError("ensemble: expected different checkpoints, got one file twice")
    for keys, what in SHARED:
        first = _get(metas[0], keys)
        for p, m in zip(paths[1:], metas[1:]):
            if _get(m, keys) != first:
                raise UserError(
                    f"ensemble: members must share the {what}; '{paths[0]}' has {first!r:.80} and '{p}' has "
                    f"{_get(m, keys)!r:.80}"
                )


def ensemble_sha(metas: list[dict]) -> str | None:
    """One hash for the ensemble from its members' (their order kept): a stored evaluation of the same members is reused."""
    shas = [m.get("data_sha256") for m in metas]
    if any(s is None for s in shas):
        return None
    return hashlib.sha256("\n".join(["ensemble", *shas]).encode()).hexdigest()


def ensemble_method(metas: list[dict]) -> str:
    names = {method_record(m.get("method", {})).get("name") for m in metas}
    return names.pop() if len(names) == 1 else "ensemble"


def load_ensemble(paths: list[Path], device, allow_import: bool = False, trusted=()) -> tuple[Ensemble, dict]:
    """The members loaded (each checked as any checkpoint) into one Ensemble; the metadata is the first member's,
    with the members listed and no training seed of its own."""
    from mmix_eval.checkpoint import load_checkpoint

    models, metas = zip(*(load_checkpoint(p, device, allow_import=allow_import, trusted=trusted) for p in paths))
    check_members(paths, list(metas))
    meta = dict(metas[0])
    meta["train"] = {**(meta.get("train") or {}), "seed": None}
    meta["ensemble"] = {"members": [str(p) for p in paths], "member_sha256": [m.get("data_sha256") for m in metas]}
    return Ensemble(list(models)).to(device).eval(), meta
