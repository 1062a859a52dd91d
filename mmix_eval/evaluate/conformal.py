"""Split conformal prediction sets under every condition: THR (LAC; Sadinle et al. 2019), APS (Romano et al. 2020)
and RAPS (Angelopoulos et al. 2021), each calibrated once per checkpoint and calibrator on the held-out images the
calibrators are fitted on, at level 1 − α (``ALPHA`` = 0.1 by default: 90 % coverage), and applied to every
condition's probabilities (raw, and after each calibrator). Each condition records the sets' coverage (% of
images whose label is in its set) and mean size: under exchangeability with the held-out images (the clean test
images), coverage is at least 1 − α; under a shift it need not be, which is what the rows show.

The rules, stated:

- non-conformity of label k for an image with probabilities p: THR 1 − p_k; APS the total probability of the
  labels ranked at or above k less U · p_k, with U ~ Uniform(0, 1) drawn once per image (Romano et al.'s
  randomised score: without it, a confident model's sets are far too large, since its held-out scores all sit
  near 1: on the converged digits nets, 100 % coverage with 3.8 classes per set at 90 %); RAPS APS +
  λ · max(0, rank(k) − k_reg), rank from 1, λ = RAPS_LAMBDA, k_reg = RAPS_KREG (torch-uncertainty's defaults; the
  paper tunes them on held-out data). U is seeded: the held-out images' from the evaluation seed, every
  condition's from the seed + 1 by image position, so an image keeps its U across conditions and reruns;
- the threshold q̂ is the ⌈(n + 1)(1 − α)⌉-th smallest of the n held-out images' scores of their own labels (the
  finite-sample rule that makes the coverage guarantee hold); where that rank exceeds n (fewer than 1/α − 1
  held-out images), q̂ = ∞ and every set holds every class, said in the rows' settings;
- an image's set holds every label whose score is at most q̂; an empty set gets the label of lowest score (the
  top class), as torch-uncertainty does (it only adds coverage).

torch-uncertainty's ``ConformalClsTHR/APS/RAPS`` compute the same scores and sets for a given q̂ and U = 0 (golden
test; their randomised APS draws U per label, not per image); their q̂ is ``torch.quantile`` at 1 − α
(interpolated), not the finite-sample rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ALPHA = 0.1
METHODS = ("thr", "aps", "raps")
RAPS_LAMBDA, RAPS_KREG = 0.1, 1
METRICS = tuple(f"{kind}_{m}" for m in METHODS for kind in ("coverage", "set_size"))


def uniforms(n: int, seed: int) -> torch.Tensor:
    """The APS / RAPS draws U (n,), float64, from a seed: the same image position gets the same U."""
    return torch.rand(n, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)


def nonconformity(p: torch.Tensor, method: str, u: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C) float64: every label's non-conformity score; ``u`` (N,): APS / RAPS's per-image draws (None: 0,
    the non-randomised score)."""
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
    scores = torch.empty_like(cum).scatter_(1, order, cum)
    return scores if u is None else scores - u.view(-1, 1).to(scores) * p


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
    seed: int | None = None  # U's seed (the held-out images'); a condition's is seed + 1; None: not randomised

    @property
    def settings(self) -> dict:
        out = {"conformal_alpha": self.alpha, "conformal_fit_images": self.n, "conformal_rule": RULE}
        if self.seed is not None:
            out["conformal_seed"] = self.seed
        if any(math.isinf(v) for v in self.q.values()):
            out["conformal_note"] = (
                f"{self.n} held-out images are too few for 1 − α = {1 - self.alpha:g}: every set holds every class"
            )
        return out


RULE = f"split conformal, q = ceil((n+1)(1-alpha))-th smallest held-out score; APS/RAPS randomised, one U per image; RAPS lambda {RAPS_LAMBDA}, k_reg {RAPS_KREG}"


def fit_thresholds(p: torch.Tensor, y: torch.Tensor, alpha: float = ALPHA, seed: int | None = 0) -> Thresholds:
    """Each method's q̂ from held-out probabilities (N, C) and labels (``seed``: APS / RAPS's draws; None: none)."""
    u = uniforms(len(y), seed) if seed is not None else None
    q = {
        m: threshold(nonconformity(p, m, u if m != "thr" else None).gather(1, y.view(-1, 1)).squeeze(1), alpha)
        for m in METHODS
    }
    return Thresholds(alpha, len(y), q, seed)


def prediction_sets(p: torch.Tensor, q: float, method: str, u: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C) bool: the labels whose score is at most q̂; an empty set gets the label of lowest score. An image
    whose probabilities are not finite (a model's NaN under some shift) gets an empty set: not covered."""
    scores = nonconformity(p, method, u if method != "thr" else None)
    sets = scores <= q
    empty = ~sets.any(dim=1) & torch.isfinite(scores).all(dim=1)
    if empty.any():
        sets[empty, scores[empty].argmin(dim=1)] = True
    return sets


def conformal_values(p: torch.Tensor, y: torch.Tensor, thresholds: Thresholds) -> dict[str, float]:
    """Coverage (%) and mean set size of each method's sets on a condition's probabilities."""
    out = {}
    u = uniforms(len(p), thresholds.seed + 1) if thresholds.seed is not None else None
    for m in METHODS:
        sets = prediction_sets(p, thresholds.q[m], m, u)
        covered = sets.gather(1, y.view(-1, 1).to(sets.device)).squeeze(1)
        out[f"coverage_{m}"] = 100.0 * float(covered.double().mean()) if len(y) else math.nan
        out[f"set_size_{m}"] = float(sets.sum(1).double().mean()) if len(y) else math.nan
    return out
