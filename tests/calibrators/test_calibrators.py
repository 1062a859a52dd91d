"""The calibrators on logits alone, each against an independent fit (scipy's minimiser of the same objective) and
with its failure mode (a separable held-out set, a temperature at its bound) stated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmix_eval.calibrators import fit_checked, get_calibrator


def test_vector_scaling_equals_a_scipy_minimisation_of_nll():
    from scipy.optimize import minimize
    from scipy.special import log_softmax, softmax

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(500, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0, 2.0, 0.5], dtype=torch.float64
    )
    y = (logits + 3 * torch.randn(500, 4, generator=g, dtype=torch.float64)).argmax(1)
    z, yy, c = logits.numpy(), y.numpy(), 4
    onehot = np.eye(c)[yy]

    def nll_and_grad(theta):
        w, b = theta[:c], theta[c:]
        s = z * w + b
        p = softmax(s, axis=1)
        return -log_softmax(s, axis=1)[range(len(yy)), yy].mean(), np.concatenate(
            [((p - onehot) * z).mean(0), (p - onehot).mean(0)]
        )

    ref = minimize(nll_and_grad, np.r_[np.ones(c), np.zeros(c)], jac=True, method="BFGS", options={"gtol": 1e-12})
    cal = get_calibrator("vector")
    params = fit_checked(cal, logits, y)
    ours = np.r_[params["weight"], params["bias"]]
    assert nll_and_grad(ours)[0] - ref.fun < 1e-10  # the same minimum
    assert np.allclose(params["weight"], ref.x[:c], atol=1e-4)
    # the biases are fixed up to one constant (softmax ignores it): compare them centred
    assert np.allclose(np.subtract(params["bias"], np.mean(params["bias"])), ref.x[c:] - ref.x[c:].mean(), atol=1e-4)
    w, b = torch.tensor(params["weight"], dtype=torch.float64), torch.tensor(params["bias"], dtype=torch.float64)
    assert torch.equal(cal.apply(logits, params), logits * w + b)


def _separable(n=200, c=4, seed=0):
    """Held-out logits a converged network gives: every image right by a margin."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    z = torch.randn(n, c, generator=g, dtype=torch.float64)
    z[torch.arange(n), y] += 6.0
    return z, y


def test_vector_scaling_on_a_separable_held_out_set_is_the_penalised_fit_and_says_so():
    """Issue 42: without a minimiser the weights grew until LBFGS stopped (416 seen). Refitted with an L2 penalty
    toward the identity, λ = 1/N: equal to scipy's minimum of the same objective, and noted on every row."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax, softmax

    z, y = _separable()
    cal = get_calibrator("vector")
    params = fit_checked(cal, z, y)
    n, c = len(y), z.shape[1]
    assert params["penalty"] == pytest.approx(1 / n) and params["held_out_wrong"] == 0
    zz, yy, onehot, lam = z.numpy(), y.numpy(), np.eye(c)[y.numpy()], 1 / n

    def objective(theta):
        w, b = theta[:c], theta[c:]
        s = zz * w + b
        p = softmax(s, axis=1)
        value = -log_softmax(s, axis=1)[range(n), yy].mean() + lam * (((w - 1) ** 2).sum() + (b**2).sum())
        grad = np.concatenate([((p - onehot) * zz).mean(0) + 2 * lam * (w - 1), (p - onehot).mean(0) + 2 * lam * b])
        return value, grad

    ref = minimize(objective, np.r_[np.ones(c), np.zeros(c)], jac=True, method="BFGS", options={"gtol": 1e-12})
    assert objective(np.r_[params["weight"], params["bias"]])[0] - ref.fun < 1e-10
    assert np.allclose(params["weight"], ref.x[:c], atol=1e-4) and max(params["weight"]) < 20
    note = cal.note(params)
    assert "all 200 held-out images classified right by some scaling" in note and "λ = 1/200" in note
    # a non-separable held-out set keeps the plain fit (the golden test above) and no note
    z2, y2 = z.clone(), y.clone()
    y2[:20] = (y2[:20] + 1) % c
    assert "penalty" not in fit_checked(cal, z2, y2) and cal.note(fit_checked(cal, z2, y2)) is None


def test_a_temperature_at_its_lower_bound_says_what_the_held_out_images_were():
    """Issue 42: the note said 'every held-out image right' when one was wrong (the NLL still fell below T = 0.05)."""
    n = 1000
    z = torch.zeros(n, 2, dtype=torch.float64)
    z[:, 0] = 0.4  # 999 right by a margin of 0.4 ...
    y = torch.zeros(n, dtype=torch.long)
    z[0] = torch.tensor([0.0, 0.01], dtype=torch.float64)  # ... one wrong by 0.01: the unbounded best T is 0.036
    cal = get_calibrator("temperature")
    params = fit_checked(cal, z, y)
    assert params["temperature"] == 0.05 and params["held_out_wrong"] == 1
    assert "1 of 1000 held-out images wrong" in cal.note(params) and "every held-out image right" not in cal.note(
        params
    )
    z[0] = torch.tensor([1.0, 0.0], dtype=torch.float64)  # all right: the lower bound, and said so
    params = fit_checked(cal, z, y)
    assert params["held_out_wrong"] == 0 and "every held-out image right" in cal.note(params)
