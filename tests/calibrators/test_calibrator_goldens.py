"""Golden tests of the matrix, Dirichlet, histogram, isotonic and ensemble-temperature calibrators: each against an
independent implementation on the same held-out logits (torch-uncertainty's scalers, scikit-learn's
``IsotonicRegression``, scipy's minimisers of the same objective), and each failure mode handled and noted."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from mmix_eval.calibrators import FLOOR, fit_checked, get_calibrator


def held_out(n=600, c=4, seed=0, margin=1.0, dtype=torch.float32):
    """Logits of a network that is right more often than not, but not always (the NLL has a minimiser)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * torch.linspace(1.0, 2.5, c, dtype=torch.float64)
    z[torch.arange(n), y] += margin
    return z.to(dtype), y


def tu_fitted(scaler, z, y):
    """A torch-uncertainty post-processor fitted on (logits, labels) directly (no model)."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(z, y), batch_size=len(y))
    scaler.fit(loader, progress=False) if "progress" in scaler.fit.__code__.co_varnames else scaler.fit(loader)
    return scaler


def probs(out: torch.Tensor) -> np.ndarray:
    return torch.softmax(out.double(), dim=1).numpy()


def affine_nll(theta, x, y, c, penalty=None):
    w, b = theta[: c * c].reshape(c, c), theta[c * c :]
    s = x @ w.T + b
    loss = -log_softmax(s, axis=1)[np.arange(len(y)), y].mean()
    return loss + (penalty(w, b) if penalty else 0.0)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_matrix_scaling_equals_torch_uncertainty_and_scipys_minimum():
    from torch_uncertainty.post_processing import MatrixScaler

    z, y = held_out()
    c = z.shape[1]
    cal = get_calibrator("matrix")
    params = fit_checked(cal, z, y)
    assert "penalty" not in params and cal.note(params) is None
    ours = probs(cal.apply(z.double(), params))
    ref = minimize(
        lambda t: affine_nll(t, z.double().numpy(), y.numpy(), c),
        np.r_[np.eye(c).ravel(), np.zeros(c)],
        method="BFGS",
        options={"gtol": 1e-10},
    )
    # W is fixed only up to a matrix of equal rows (softmax ignores a shift shared by the classes): compare the
    # calibrated probabilities and the minimum
    ref_p = softmax(z.double().numpy() @ ref.x[: c * c].reshape(c, c).T + ref.x[c * c :], axis=1)
    assert affine_nll(np.r_[params["weight"], params["bias"]], z.double().numpy(), y.numpy(), c) - ref.fun < 1e-9
    np.testing.assert_allclose(ours, ref_p, atol=1e-5)
    tu = tu_fitted(MatrixScaler(num_classes=c, lr=1.0, max_iter=2000), z, y)
    with torch.no_grad():
        np.testing.assert_allclose(ours, probs(tu(z)), atol=2e-3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dirichlet_calibration_equals_torch_uncertainty_with_the_chosen_odir_and_scipys_minimum():
    from torch_uncertainty.post_processing import DirichletScaler

    from mmix_eval.calibrators.dirichlet import ODIR_GRID

    z, y = held_out(seed=1)
    c = z.shape[1]
    cal = get_calibrator("dirichlet")
    params = fit_checked(cal, z, y)
    lam = params["lambda"]
    assert lam in ODIR_GRID and params["mu"] == lam and lam == ODIR_GRID[int(np.argmin(params["cv_nll"]))]
    ours = probs(cal.apply(z, params))
    x = log_softmax(z.double().numpy(), axis=1)

    def odir(w, b):
        off = (w**2).sum() - (np.diag(w) ** 2).sum()
        return lam * off / (c * (c - 1)) + lam * (b**2).mean()

    ref = minimize(
        lambda t: affine_nll(t, x, y.numpy(), c, odir),
        np.r_[np.eye(c).ravel(), np.zeros(c)],
        method="BFGS",
        options={"gtol": 1e-10},
    )
    assert abs(affine_nll(np.r_[params["weight"], params["bias"]], x, y.numpy(), c, odir) - ref.fun) < 1e-8
    # with ODIR the minimiser is unique: the parameters themselves agree
    np.testing.assert_allclose(params["weight"], ref.x[: c * c], atol=1e-4)
    tu = tu_fitted(DirichletScaler(num_classes=c, lr=1.0, max_iter=2000, lambda_reg=lam, mu_reg=lam), z, y)
    with torch.no_grad():
        np.testing.assert_allclose(ours, probs(tu(z)), atol=2e-3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_histogram_binning_equals_torch_uncertainty():
    from torch_uncertainty.post_processing import HistogramBinningScaler

    z, y = held_out(seed=2)
    test, _ = held_out(n=400, seed=3)
    cal = get_calibrator("histogram")
    params = fit_checked(cal, z, y)
    tu = tu_fitted(HistogramBinningScaler(num_bins=15, eps=FLOOR), z, y)
    with torch.no_grad():
        np.testing.assert_allclose(cal.apply(test, params).numpy(), tu(test).numpy(), atol=1e-6)
    # by hand: the share of class-k labels among held-out images whose class-k probability shares the bin
    p = torch.softmax(z, 1).numpy()
    k, b = 1, int(np.ceil(p[0, 1] * 15)) - 1
    inside = (np.ceil(p[:, k] * 15) - 1 == b) & (p[:, k] > 0)
    assert params["values"][k * 15 + b] == pytest.approx((y.numpy()[inside] == k).mean())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_isotonic_regression_equals_scikit_learn_per_class_and_torch_uncertainty():
    from sklearn.isotonic import IsotonicRegression
    from torch_uncertainty.post_processing import IsotonicRegressionScaler

    z, y = held_out(seed=4, dtype=torch.float64)
    test, _ = held_out(n=400, seed=5, dtype=torch.float64)
    cal = get_calibrator("isotonic")
    params = fit_checked(cal, z, y)
    p, pt = torch.softmax(z, 1).numpy(), torch.softmax(test, 1).numpy()
    ref = np.stack(
        [
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            .fit(p[:, k], y.numpy() == k)
            .predict(pt[:, k])
            for k in range(p.shape[1])
        ],
        axis=1,
    )
    ref = np.log(np.clip(ref / (ref.sum(1, keepdims=True) + 1e-12), FLOOR, 1 - FLOOR))
    np.testing.assert_allclose(cal.apply(test, params).numpy(), ref, atol=1e-12)
    z32, test32 = z.float(), test.float()  # torch-uncertainty's pipeline, in float32 as a network gives logits
    params32 = fit_checked(cal, z32, y)
    tu = tu_fitted(IsotonicRegressionScaler(eps=FLOOR), z32, y)
    with torch.no_grad():
        np.testing.assert_allclose(cal.apply(test32, params32).numpy(), tu(test32).numpy(), atol=1e-5)


def test_ensemble_temperature_weights_equal_scipys_slsqp_fit_of_the_paper():
    """Zhang et al.'s code fits the three weights with SLSQP under w ≥ 0, Σ w = 1, given T."""
    z, y = held_out(seed=6, margin=2.0)
    cal = get_calibrator("ensemble_temperature")
    params = fit_checked(cal, z, y)
    t, c = params["temperature"], z.shape[1]
    zz, yy = z.double().numpy(), y.numpy()
    parts = [softmax(zz / t, axis=1), softmax(zz, axis=1), np.full_like(zz, 1.0 / c)]

    def nll(w):
        p = sum(wi * part for wi, part in zip(w, parts))
        return -np.log(p[np.arange(len(yy)), yy]).mean()

    ref = minimize(
        nll,
        np.full(3, 1 / 3),
        method="SLSQP",
        bounds=[(0, 1)] * 3,
        constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert nll(params["weights"]) <= ref.fun + 1e-9
    np.testing.assert_allclose(params["weights"], ref.x, atol=1e-4)
    expect = np.log(np.clip(sum(wi * part for wi, part in zip(params["weights"], parts)), FLOOR, 1 - FLOOR))
    np.testing.assert_allclose(cal.apply(z.double(), params).numpy(), expect, atol=1e-12)


@pytest.mark.parametrize("name", ["histogram", "isotonic"])
def test_a_class_absent_from_the_held_out_set_keeps_its_raw_probability_and_says_so(name):
    z, y = held_out(seed=7)
    keep = y != 2
    cal = get_calibrator(name)
    params = fit_checked(cal, z[keep], y[keep])
    assert params["raw_classes"] == [2] and "class 2 absent" in cal.note(params)
    test, _ = held_out(n=50, seed=8)
    out = cal.apply(test, params)
    # before renormalisation class 2 carries its raw softmax probability: the ratio to another class shows it
    p_raw = torch.softmax(test, 1)
    other = torch.softmax(out, 1)
    assert torch.isfinite(out).all() and (other[:, 2] > 0).all()
    ratio = (other[:, 2] / other.sum(1)) / (p_raw[:, 2] / other.sum(1))
    assert ratio.std() / ratio.mean() < 0.5  # one normaliser per image, not 0


def test_matrix_scaling_on_a_separable_held_out_set_is_penalised_and_says_so():
    g = torch.Generator().manual_seed(9)
    y = torch.randint(0, 3, (120,), generator=g)
    z = torch.randn(120, 3, generator=g, dtype=torch.float64)
    z[torch.arange(120), y] += 6.0
    cal = get_calibrator("matrix")
    params = fit_checked(cal, z, y)
    assert params["penalty"] == pytest.approx(1 / 120) and "separable" in cal.note(params)
    assert max(abs(v) for v in params["weight"]) < 20  # unpenalised, the weights grow while LBFGS runs
    c = 3
    eye = np.eye(c)
    ref = minimize(
        lambda t: affine_nll(t, z.numpy(), y.numpy(), c, lambda w, b: (((w - eye) ** 2).sum() + (b**2).sum()) / 120),
        np.r_[eye.ravel(), np.zeros(c)],
        method="BFGS",
        options={"gtol": 1e-10},
    )
    np.testing.assert_allclose(params["weight"], ref.x[: c * c], atol=1e-4)


def test_dirichlet_on_too_few_images_for_its_folds_takes_the_largest_lambda_and_says_so():
    z, y = held_out(n=5, seed=10)
    cal = get_calibrator("dirichlet")
    params = fit_checked(cal, z, y)
    assert params["lambda"] == 1.0 and "too few" in cal.note(params)


@pytest.mark.parametrize("name", ["histogram", "isotonic", "ensemble_temperature"])
def test_probability_calibrators_floor_their_output_so_nll_is_bounded(name):
    from mmix_eval.calibrators.base import Calibrator

    g = torch.Generator().manual_seed(11)
    y = torch.randint(0, 4, (300,), generator=g)
    z = torch.randn(300, 4, generator=g)
    z[torch.arange(300), y] += 8.0  # separable: bins and knots at 0 and 1
    cal = get_calibrator(name)
    assert cal.probabilities and not Calibrator.probabilities
    params = fit_checked(cal, z, y)
    wrong = (y + 1) % 4  # every image scored against a wrong label: the floor is what keeps NLL finite
    nll = torch.nn.functional.cross_entropy(cal.apply(z, params), wrong).item()
    assert math.isfinite(nll) and nll <= -math.log(FLOOR) + 1e-6
    assert torch.allclose(torch.softmax(cal.apply(z, params), 1).sum(1), torch.ones(300))


def test_dirichlet_on_a_separable_held_out_set_penalises_its_diagonal_and_says_so():
    """ODIR leaves the diagonal free: on a held-out set the fit gets entirely right it grew like 1 / T → ∞, and a
    few confidently wrong test images then gave calibrated NLLs of 2 to 16. Refitted with (1/N) Σ (W_ii − 1)²,
    equal to scipy's minimum of that objective."""
    from mmix_eval.calibrators.dirichlet import ODIR_GRID

    g = torch.Generator().manual_seed(12)
    n, c = 150, 3
    y = torch.randint(0, c, (n,), generator=g)
    z = torch.randn(n, c, generator=g, dtype=torch.float64)
    z[torch.arange(n), y] += 7.0
    cal = get_calibrator("dirichlet")
    params = fit_checked(cal, z, y)
    assert params["diagonal_penalty"] == pytest.approx(1 / n) and "separable" in cal.note(params)
    lam = params["lambda"]
    assert lam in ODIR_GRID
    x = log_softmax(z.numpy(), axis=1)

    def objective(w, b):
        off = (w**2).sum() - (np.diag(w) ** 2).sum()
        return lam * off / (c * (c - 1)) + lam * (b**2).mean() + ((np.diag(w) - 1) ** 2).sum() / n

    ref = minimize(
        lambda t: affine_nll(t, x, y.numpy(), c, objective),
        np.r_[np.eye(c).ravel(), np.zeros(c)],
        method="BFGS",
        options={"gtol": 1e-10},
    )
    np.testing.assert_allclose(params["weight"], ref.x[: c * c], atol=1e-4)
    assert max(np.diag(np.reshape(params["weight"], (c, c)))) < 50  # bounded, where it grew without the penalty


@pytest.mark.parametrize("name", ["matrix", "dirichlet"])
def test_the_lbfgs_path_for_many_classes_reaches_the_newton_fit(name, monkeypatch):
    """Beyond NEWTON_MAX_PARAMS free parameters (C > 44) the Hessian is not formed and LBFGS fits: the same
    calibrated probabilities, here forced on a small C."""
    import mmix_eval.calibrators.affine as affine
    import mmix_eval.calibrators.dirichlet as dirichlet

    monkeypatch.setattr(dirichlet, "ODIR_GRID", (1e-2,))  # the path under test is the fit, not the λ search
    z, y = held_out(n=400, c=5, seed=13)
    cal = get_calibrator(name)
    newton = probs(cal.apply(z.double(), fit_checked(cal, z, y)))
    monkeypatch.setattr(affine, "NEWTON_MAX_PARAMS", 0)
    lbfgs = probs(cal.apply(z.double(), fit_checked(cal, z, y)))
    np.testing.assert_allclose(lbfgs, newton, atol=1e-5)


@pytest.mark.parametrize(
    "case, match",
    [
        (
            "nan",
            "expected finite logits of the 50 held-out images (held-out), got NaN or infinite logits for 1 of them",
        ),
        ("empty", "expected at least one held-out image (held-out), got 0"),
    ],
)
@pytest.mark.parametrize(
    "name", ["temperature", "matrix", "dirichlet", "histogram", "isotonic", "ensemble_temperature"]
)
def test_held_out_logits_that_are_not_finite_or_empty_are_one_line_before_any_fit(name, case, match):
    """A NaN reached each fit as a different error (a parameter 'cv_nll' not finite, a temperature at its bound) or,
    for histogram binning, none at all; no held-out image gave identity fits."""
    from types import SimpleNamespace

    from mmix_eval.errors import UserError
    from mmix_eval.evaluate.calibrate import fitted_calibration

    z, y = held_out(n=50, c=4, seed=14)
    if case == "nan":
        z[3, 1] = float("nan")
    else:
        z, y = z[:0], y[:0]
    target = SimpleNamespace(
        val=SimpleNamespace(y=y),
        val_logits=None,
        calibration=None,
        calibration_note=None,
        run="r",
        val_source="held-out",
    )
    with pytest.raises(UserError, match=re.escape(match)):
        fitted_calibration(target, name, lambda images: z)
    assert target.calibration == {}
