"""Learning-rate schedules as one pure function of the global step (so resuming needs no scheduler state)."""

from __future__ import annotations

import bisect
import math


def lr_factor(
    schedule: str,
    step: int,
    steps_per_epoch: int,
    epochs: int,
    milestones=(),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
) -> float:
    """Multiplier of the base lr for global optimizer step ``step`` (0-based).

    step: ×gamma at each milestone epoch (per-epoch, as the paper's 400/800 decay);
    cosine: half a cosine from 1 to 0 over the run, per step;
    onecycle: linear warm-up then linear decay to 0, per step (warm-up 20 % of the run by default);
    constant: 1. An optional linear warm-up of ``warmup_epochs`` multiplies any of them.
    """
    total = epochs * steps_per_epoch
    t = step / steps_per_epoch  # epochs elapsed
    if schedule == "onecycle":
        warm = warmup_epochs or 0.2 * epochs
        if t < warm:
            return (step + 1) / (warm * steps_per_epoch)
        return max(0.0, (total - step) / (total - warm * steps_per_epoch))
    if schedule == "step":
        f = gamma ** bisect.bisect_right(sorted(milestones), int(t))
    elif schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * step / total))
    elif schedule == "constant":
        f = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    if warmup_epochs and t < warmup_epochs:
        f *= (step + 1) / (warmup_epochs * steps_per_epoch)
    return f
