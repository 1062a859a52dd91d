"""Temperature scaling (Guo et al. 2017): logits / T, one T > 0 minimising the NLL of held-out logits, held in
[T_MIN, T_MAX]. The held-out NLL is unimodal in log T (convex in 1/T), so the bounded minimiser is the unbounded
one clamped. Without the bound a held-out set the model classifies entirely correctly has no minimiser: the NLL
keeps falling as T → 0 and LBFGS stops wherever it tires (T = 0.0025 was seen), which then turns every shifted
condition's calibrated confidence into 0 or 1. A fit held at a bound says so in every calibrated row."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmix_eval.calibrators.base import Calibrator

T_MIN, T_MAX = 0.05, 20.0  # logits × 20 to logits / 20: beyond either, the fit says more about the held-out set


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float] = (T_MIN, T_MAX)) -> float:
    """T in ``bounds`` minimising the NLL of logits / T (LBFGS on log T, float64, then clamped). When every
    held-out image's label has the largest logit, the NLL does not increase as T falls (its derivative in 1/T is
    the mean of E_p[z] − z_y ≤ 0), so the bounded minimiser is the lower bound itself: returned as such (LBFGS
    would stop wherever the gradient fades, anywhere from 0.09 to 0.0025)."""
    z = logits.double()
    if len(z) and bool((z.gather(1, y.view(-1, 1)).squeeze(1) >= z.max(1).values).all()):
        return bounds[0]
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, bounds[0]), bounds[1]) if math.isfinite(t) else (bounds[0] if log_t.detach() < 0 else bounds[1])


class Temperature(Calibrator):
    name = "temperature"

    def fit(self, logits, labels) -> dict:
        t = fit_temperature(logits, labels)
        if t in (T_MIN, T_MAX):  # a bound: the note says what was seen on the held-out images
            z = logits.double()
            return {
                "temperature": t,
                "held_out_images": len(labels),
                "held_out_wrong": int((z.argmax(1) != labels).sum()),
            }
        return {"temperature": t}

    def apply(self, logits, params):
        return logits / params["temperature"]

    def note(self, params) -> str | None:
        t = params.get("temperature")
        if t == T_MIN:
            k, n = params.get("held_out_wrong"), params.get("held_out_images")
            seen = (
                "the model gets every held-out image right"
                if k == 0
                else f"{k} of {n} held-out images wrong"
                if k is not None
                else "the held-out images"
            )
            return (
                f"temperature held at its lower bound {T_MIN:g}, the calibrated scores are those at T = {T_MIN:g} "
                f"(the held-out NLL still falls below T = {T_MIN:g}: {seen})"
            )
        if t == T_MAX:
            return (
                f"temperature held at its upper bound {T_MAX:g}, the calibrated scores are those at T = {T_MAX:g} "
                f"(the held-out NLL still falls as T grows: a held-out set near chance)"
            )
        return None
