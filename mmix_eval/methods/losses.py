"""Losses between logits and soft (mixed) targets, both averaged over the batch.

bce_softmax: the official Manifold Mixup code's loss for every method, vanilla included:
    binary cross-entropy between softmax(logits) and the target, averaged over batch × classes.
    Computed in log space (log p from log_softmax, log(1 − p) via a stable log1mexp), with logs
    clamped at −100 as torch's BCELoss does, so it matches BCELoss(softmax) without its overflow.
soft_ce: cross-entropy with soft targets, −Σ_c y_c log softmax(z)_c, averaged over the batch
    (what most later libraries use).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LOG_CLAMP = -100.0  # torch.nn.BCELoss clamps its logs at -100


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(a)) for a ≤ 0, stable at both ends (Mächler 2012)."""
    return torch.where(a > -math.log(2.0), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def bce_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(logits.float(), dim=1)
    log_q = _log1mexp(log_p.clamp_max(0.0))
    loss = -(target * log_p.clamp_min(_LOG_CLAMP) + (1.0 - target) * log_q.clamp_min(_LOG_CLAMP))
    return loss.mean()


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
