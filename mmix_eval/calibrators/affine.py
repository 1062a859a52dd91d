"""The fit shared by matrix and Dirichlet scaling: an affine map W · x + b of per-image features x (the logits, or
their log-softmax), minimising the NLL of held-out labels plus a penalty, by LBFGS in float64 from W = I, b = 0.
Parameters are kept flat (W row-major, then b) so that they are recorded as plain lists of numbers."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def fit_affine(
    x: torch.Tensor,
    y: torch.Tensor,
    penalty: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    max_iter: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (C, C), b (C,)) minimising mean cross-entropy of x · Wᵀ + b plus ``penalty(W, b)``; float64.
    ``max_iter``: LBFGS iterations at most (fewer where only a ranking of fits is needed)."""
    x = x.double()
    c = x.shape[1]
    w = torch.eye(c, dtype=torch.float64).requires_grad_(True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-13, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y)
        if penalty is not None:
            loss = loss + penalty(w, b)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def apply_affine(x: torch.Tensor, params: dict) -> torch.Tensor:
    """x · Wᵀ + b with the recorded (flat) parameters, in x's dtype."""
    c = x.shape[1]
    w = torch.tensor(params["weight"], dtype=x.dtype, device=x.device).view(c, c)
    b = torch.tensor(params["bias"], dtype=x.dtype, device=x.device)
    return x @ w.T + b


def held_out_wrong(scaled: torch.Tensor, y: torch.Tensor) -> int:
    """Held-out images whose label is not the argmax of the fitted map's output."""
    return int((scaled.argmax(1) != y).sum())
