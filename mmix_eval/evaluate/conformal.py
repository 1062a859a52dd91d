"""Split conformal prediction sets under every condition: THR (LAC; Sadinle et al. 2019), APS (Romano et al. 2020)
and RAPS (Angelopoulos et al. 2021), each calibrated once per checkpoint and calibrator on the held-out images the
calibrators are fitted on, at level 1 − α (``ALPHA`` = 0.1 by default: 90 % coverage), and applied to every
condition's probabilities (raw, and after each calibrator). Each condition records the sets' coverage (% of
images whose label is in its set) and mean size: under exchangeability with the held-out images (the clean test
images), coverage is at least 1 − α; under a shift it need not be, which is what the rows show.

The rules, stated:

- non-conformity of label k for an image with probabilities p: THR 1 − p_k; APS the total probability of the
  labels ranked at or above k (non-randomised: no uniform draw, so the sets are deterministic and a little
  conservative); RAPS APS + λ · max(0, rank(k) − k_reg), rank from 1, λ = RAPS_LAMBDA, k_reg = RAPS_KREG
  (torch-uncertainty's defaults; the paper tunes them on held-out data);
- the threshold q̂ is the ⌈(n + 1)(1 − α)⌉-th smallest of the n held-out images' scores of their own labels (the
  finite-sample rule that makes the coverage guarantee hold); where that rank exceeds n (fewer than 1/α − 1
  held-out images), q̂ = ∞ and every set holds every class, said in the rows' settings;
- an image's set holds every label whose score is at most q̂; an empty set gets the label of lowest score (the
  top class), as torch-uncertainty does (it only adds coverage).

torch-uncertainty's ``ConformalClsTHR/APS/RAPS`` compute the same scores and sets for a given q̂ (golden test);
their q̂ is ``torch.quantile`` at 1 − α (interpolated), not the finite-sample rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ALPHA = 0.1
METHODS = ("thr", "aps", "raps")
RAPS_LAMBDA, RAPS_KREG = 0.1, 1
METRICS = tuple(f"{kind}_{m}" for m in METHODS for kind in ("coverage", "set_size"))


def nonconformity(p: torch.Tensor, method: str) -> torch.Tensor:
    """(N, C) float64: every label's non-conformity score."""
    p = p.double()
    if method == "thr":
        return 1.0 - p
    ordered, order = torch.sort(p, dim=1, descending=True, stable=True)
    cum = torch.cumsum(ordered, dim=1)
    if method == "raps":
        rank = torch.arange(1, p.shape[1] + 1, dtype=torch.float64).expand_as(cum)
        cum = cum + RAPS_LAMBDA * (rank - RAPS_KREG).clamp_min(0)
    elif method != "aps":
        raise ValueError(f"conformal method: expected one of {', '.join(METHODS)}, got {method!r}")
    return torch.empty_like(cum).scatter_(1, order, cum)


def threshold(scores: torch.Tensor, alpha: float) -> float:
    """q̂: the ⌈(n + 1)(1 − α)⌉-th smallest score (∞ where that rank exceeds n)."""
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-12)  # the tolerance keeps (n + 1)(1 − α) integral where it is
    if k > n:
        return math.inf
    return float(torch.sort(scores.double()).values[k - 1])


@dataclass(frozen=True)
class Thresholds:
    """The q̂ of each method for one calibrator, fitted on ``n`` held-out images at level 1 − ``alpha``."""

    alpha: float
    n: int
    q: dict

    @property
    def settings(self) -> dict:
        out = {"conformal_alpha": self.alpha, "conformal_fit_images": self.n, "conformal_rule": RULE}
        if any(math.isinf(v) for v in self.q.values()):
            out["conformal_note"] = (
                f"{self.n} held-out images are too few for 1 − α = {1 - self.alpha:g}: every set holds every class"
            )
        return out


RULE = f"split conformal, q = ceil((n+1)(1-alpha))-th smallest held-out score; APS/RAPS non-randomised; RAPS lambda {RAPS_LAMBDA}, k_reg {RAPS_KREG}"


def fit_thresholds(p: torch.Tensor, y: torch.Tensor, alpha: float = ALPHA) -> Thresholds:
    """Each method's q̂ from held-out probabilities (N, C) and labels."""
    q = {m: threshold(nonconformity(p, m).gather(1, y.view(-1, 1)).squeeze(1), alpha) for m in METHODS}
    return Thresholds(alpha, len(y), q)


def prediction_sets(p: torch.Tensor, q: float, method: str) -> torch.Tensor:
    """(N, C) bool: the labels whose score is at most q̂; an empty set gets the label of lowest score."""
    scores = nonconformity(p, method)
    sets = scores <= q
    empty = ~sets.any(dim=1)
    if empty.any():
        sets[empty, scores[empty].argmin(dim=1)] = True
    return sets


def conformal_values(p: torch.Tensor, y: torch.Tensor, thresholds: Thresholds) -> dict[str, float]:
    """Coverage (%) and mean set size of each method's sets on a condition's probabilities."""
    out = {}
    for m in METHODS:
        sets = prediction_sets(p, thresholds.q[m], m)
        covered = sets.gather(1, y.view(-1, 1).to(sets.device)).squeeze(1)
        out[f"coverage_{m}"] = 100.0 * float(covered.double().mean()) if len(y) else math.nan
        out[f"set_size_{m}"] = float(sets.sum(1).double().mean()) if len(y) else math.nan
    return out
