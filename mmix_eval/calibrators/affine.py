"""The fit shared by matrix and Dirichlet scaling: an affine map W · x + b of per-image features x (the logits, or
their log-softmax), minimising the NLL of held-out labels plus a quadratic penalty, by LBFGS in float64 from
W = I, b = 0. Parameters are kept flat (W row-major, then b) so that they are recorded as plain lists of numbers.

The softmax ignores a shift shared by the classes, so the NLL does not change along W → W + 1 uᵀ, b → b + c 1:
C + 1 flat directions, along which LBFGS crawls (a fit that converges in 100 iterations took 1,000 and 2 s when
they were free). Here they are removed: W's last row and b's last entry are held at the identity's, and along the
flat directions the penalty is minimised in closed form (it is quadratic: u_j is a weighted mean, c the mean of
−b). That is the minimum of the same objective over all (W, b), returned at the penalty's best shift."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Quadratic:
    """Σ_ij weight_ij (W_ij − target_ij)² + bias · Σ_j b_j²: the penalties matrix and Dirichlet scaling use."""

    weight: torch.Tensor  # (C, C) float64
    target: torch.Tensor  # (C, C) float64
    bias: float

    def __call__(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.weight * (w - self.target) ** 2).sum() + self.bias * (b**2).sum()

    def best_shift(self, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W + 1 uᵀ, b + c 1) with the u and c that minimise the penalty (the NLL does not depend on them)."""
        mass = self.weight.sum(0)
        u = torch.where(mass > 0, (self.weight * (self.target - w)).sum(0) / mass.clamp_min(1e-300), 0.0)
        c = -b.mean() if self.bias > 0 else torch.zeros((), dtype=b.dtype)
        return w + u, b + c

    def hessian(self) -> torch.Tensor:
        """The penalty's Hessian (constant) at its best shift, in the free parameters' order (W's rows but the last,
        flat, then b's entries but the last). Column j of W contributes the weighted variance of its entries,
        Σ_i a_ij (r_ij − r̄_j)², r = W − target: Hessian 2 (diag a_j − a_j a_jᵀ / Σ a_j); b: 2 μ (I − 1 1ᵀ / C)."""
        c = len(self.weight)
        h = torch.zeros((c - 1) * (c + 1), (c - 1) * (c + 1), dtype=torch.float64)
        for j in range(c):
            a = self.weight[:, j]
            mass = float(a.sum())
            if mass <= 0:
                continue
            block = 2 * (torch.diag(a) - torch.outer(a, a) / mass)[: c - 1, : c - 1]
            rows = torch.arange(c - 1) * c + j
            h[rows[:, None], rows[None, :]] += block
        if self.bias > 0:
            k = (c - 1) * c
            h[k:, k:] += 2 * self.bias * (torch.eye(c, dtype=torch.float64) - 1.0 / c)[: c - 1, : c - 1]
        return h


NEWTON_MAX_PARAMS = 2_000  # free parameters up to which the Hessian is formed (C ≤ 44 classes); LBFGS beyond


def fit_affine(
    x: torch.Tensor, y: torch.Tensor, penalty: Quadratic | None = None, max_iter: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (C, C), b (C,)) minimising mean cross-entropy of x · Wᵀ + b plus ``penalty(W, b)``; float64. Newton's
    method with a backtracking line search where the Hessian is small (the objective is convex and smooth: a
    handful of steps where LBFGS took up to 1,200 evaluations, 1.5 s, on a weakly trained network's logits), else
    LBFGS. ``max_iter``: iterations at most (fewer where only a ranking of fits is needed)."""
    x = x.double()
    c = x.shape[1]
    eye = torch.eye(c, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    n_free = (c - 1) * (c + 1)  # the free rows of W and entries of b

    def full(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v, a = theta[: (c - 1) * c].view(c - 1, c), theta[(c - 1) * c :]
        w, b = torch.cat([v, eye[-1:]]), torch.cat([a, zero])
        return penalty.best_shift(w, b) if penalty is not None else (w, b)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        w, b = full(theta)
        loss = F.cross_entropy(x @ w.T + b, y)
        return loss + penalty(w, b) if penalty is not None else loss

    theta = torch.cat([eye[:-1].flatten(), torch.zeros(c - 1, dtype=torch.float64)])
    if n_free <= NEWTON_MAX_PARAMS:
        theta = _newton(objective, theta, x, y, penalty, min(max_iter, 100))
    else:
        theta = _lbfgs(objective, theta, max_iter)
    with torch.no_grad():
        w, b = full(theta)
    return w.detach(), b.detach()


def _lbfgs(objective, theta: torch.Tensor, max_iter: int) -> torch.Tensor:
    theta = theta.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-13, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = objective(theta)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return theta.detach()


def _newton(objective, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, penalty, iters: int) -> torch.Tensor:
    """Damped Newton on the free parameters: the cross-entropy's Hessian formed from the softmax (mean over images
    of (diag p − p pᵀ) ⊗ x̃ x̃ᵀ on the free rows, x̃ = [x, 1]), the penalty's in closed form (``Quadratic.hessian``);
    steps halved until the objective falls (Armijo); stops at a gradient below 1e-10."""
    c, n = x.shape[1], len(x)
    xt = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)  # (N, D)
    d = c + 1
    h_pen = penalty.hessian() if penalty is not None else torch.zeros(len(theta), len(theta), dtype=torch.float64)

    def value_and_grad(t):
        with torch.enable_grad():
            t = t.clone().requires_grad_(True)
            f = objective(t)
            (g,) = torch.autograd.grad(f, t)
        return f.detach(), g

    f, g = value_and_grad(theta)
    for _ in range(iters):
        if float(g.abs().max()) < 1e-10:
            break
        w, b = _rows(theta, c)
        p = torch.softmax(x @ w.T + b, 1)[:, : c - 1]  # (N, C-1): the free rows' classes
        # H[(k, e), (l, f)] = mean_n (δ_kl p_k − p_k p_l) x̃_e x̃_f over the free rows k, l and inputs e, f (bias last)
        s = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (N, C-1, C-1)
        h = torch.einsum("nkl,ne,nf->kelf", s, xt, xt).reshape((c - 1) * d, (c - 1) * d) / n
        h = _to_theta_order(h, c, d) + h_pen
        step = _solve(h, g)
        t_new, f_new, accepted = theta, f, False
        for _ in range(30):
            cand = theta - step
            f_cand, g_cand = value_and_grad(cand)
            if torch.isfinite(f_cand) and f_cand <= f - 1e-4 * (g @ step):
                t_new, f_new, g, accepted = cand, f_cand, g_cand, True
                break
            step = step / 2
        if not accepted or float(f - f_new) < 1e-15 * max(1.0, abs(float(f))):
            theta = t_new
            break
        theta, f = t_new, f_new
    return theta


def _rows(theta: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) with the last row and entry held (no shift: the cross-entropy does not depend on it)."""
    eye = torch.eye(c, dtype=theta.dtype)
    v, a = theta[: (c - 1) * c].view(c - 1, c), theta[(c - 1) * c :]
    return torch.cat([v, eye[-1:]]), torch.cat([a, torch.zeros(1, dtype=theta.dtype)])


def _to_theta_order(h: torch.Tensor, c: int, d: int) -> torch.Tensor:
    """A Hessian indexed (row k, input e) with the bias as input e = C, reordered to θ = [W's free rows flat, b's
    free entries]."""
    order = [k * d + e for k in range(c - 1) for e in range(c)] + [k * d + c for k in range(c - 1)]
    order_t = torch.tensor(order)
    return h[order_t][:, order_t]


def _solve(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The Newton step H⁻¹ g; a Hessian that is singular or nearly so (a separable held-out set) gets a small
    ridge."""
    jitter = 0.0
    for _ in range(8):
        try:
            chol = torch.linalg.cholesky(h + jitter * torch.eye(len(h), dtype=h.dtype))
            return torch.cholesky_solve(g.view(-1, 1), chol).view(-1)
        except RuntimeError:
            jitter = max(jitter * 100, 1e-10 * float(h.diagonal().abs().max()) + 1e-12)
    return g  # a gradient step, should the Hessian never factor


def apply_affine(x: torch.Tensor, params: dict) -> torch.Tensor:
    """x · Wᵀ + b with the recorded (flat) parameters, in x's dtype."""
    c = x.shape[1]
    w = torch.tensor(params["weight"], dtype=x.dtype, device=x.device).view(c, c)
    b = torch.tensor(params["bias"], dtype=x.dtype, device=x.device)
    return x @ w.T + b


def held_out_wrong(scaled: torch.Tensor, y: torch.Tensor) -> int:
    """Held-out images whose label is not the argmax of the fitted map's output."""
    return int((scaled.argmax(1) != y).sum())
