"""Post-hoc calibration under every condition: vector scaling against scipy, the calibrated rows of every
shift evaluator against an independent computation, the calibration split, and the errors before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_data

from mmix_eval.calibrators.temperature import fit_temperature
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import PROBABILITY_METRICS, EvalOptions, OptionError
from mmix_eval.evaluate.evaluators.calibration import evaluate_calibration
from mmix_eval.evaluate.evaluators.deformations.evaluator import evaluate_deformations
from mmix_eval.evaluate.metrics import probability_scores
from mmix_eval.evaluate.target import split_test, target_from_module


def tiny_target(val=True, n=80, seed=0):
    torch.manual_seed(seed)
    d = make_data(n_train=0, n_test=n, classes=4, size=8, val=0, seed=seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    with torch.no_grad():
        model[1].weight.mul_(8)  # confident, so that a temperature far from 1 is fitted
    x = d.test.x.float() / 255
    held = make_data(n_train=0, n_test=40, classes=4, size=8, seed=seed + 1).test
    return target_from_module(model, x, d.test.y, val=(held.x.float() / 255, held.y) if val else None), model


def test_every_deformed_condition_records_raw_and_calibrated_scores_from_one_fit():
    target, model = tiny_target()
    rows = evaluate_deformations(target, bins=10, progress=False)
    conditions = {r["condition"] for r in rows}
    t = fit_temperature(model(target.val.x).detach(), target.val.y)
    assert abs(t - 1) > 0.05
    for cond in conditions:
        for m in PROBABILITY_METRICS:
            raw = [r for r in rows if r["condition"] == cond and r["metric"] == m and r["calibrator"] == "none"]
            cal = [r for r in rows if r["condition"] == cond and r["metric"] == m and r["calibrator"] == "temperature"]
            assert len(raw) == 1 and len(cal) == 1, (cond, m)
            assert cal[0]["settings"]["calibrator_fit_images"] == 40
    # the clean condition's calibrated NLL, ECE and AURC from logits / T computed here, independently
    clean = model(target.test.x).detach()
    ref = probability_scores(clean / t, target.test.y, 10)
    got = {r["metric"]: r["value"] for r in rows if r["condition"] == "clean" and r["calibrator"] == "temperature"}
    assert got["nll"] == pytest.approx(float(F.cross_entropy(clean.double() / t, target.test.y)), rel=1e-5)
    for m in ("ece", "ece_em", "brier", "aurc"):
        assert got[m] == pytest.approx(ref[m], rel=1e-4, abs=1e-7), m
    # accuracy rows are the model's own, once per condition
    assert all(r["calibrator"] == "none" for r in rows if r["metric"] in ("acc", "rel_acc"))
    # the calibration evaluator on the same target reuses the same fit
    calib = evaluate_calibration(target, bins=10, progress=False)
    t_row = next(r for r in calib if r["metric"] == "temperature")
    assert t_row["value"] == pytest.approx(t, rel=1e-6) and t_row["calibrator"] == "temperature"


def test_without_held_out_images_there_are_no_calibrated_rows_and_the_records_say_why():
    target, _ = tiny_target(val=False)
    with pytest.warns(UserWarning, match="no calibrated rows"):
        rows = evaluate_deformations(target, bins=10, progress=False)
    assert {r["calibrator"] for r in rows} == {"none"}
    assert all("no calibrated rows" in r["warnings"] for r in rows)


def test_calibrator_none_records_only_raw_rows_and_vector_scaling_its_own():
    target, _ = tiny_target()
    rows = evaluate_calibration(target, bins=10, progress=False, calibrator="none")
    assert {r["calibrator"] for r in rows} == {"none"} and {r["condition"] for r in rows} == {"test"}
    target, _ = tiny_target()
    rows = evaluate_calibration(target, bins=10, progress=False, calibrator="vector")
    assert {r["condition"] for r in rows} == {"test", "vector_scaled"}
    scaled = [r for r in rows if r["condition"] == "vector_scaled"]
    assert {r["calibrator"] for r in scaled} == {"vector"} and len(
        scaled[0]["settings"]["calibrator_params"]["weight"]
    ) == 4


@pytest.mark.parametrize("limit", [None, 30])
def test_the_calibration_split_is_disjoint_from_every_evaluated_subset(limit):
    idx, held = split_test(100, limit, seed=3, calibration_split=25)
    assert len(held) == 25 and len(idx) == (limit or 75)
    assert not set(idx) & set(held) and set(idx) | set(held) <= set(range(100))
    again, held2 = split_test(100, limit, seed=3, calibration_split=25)
    assert np.array_equal(idx, again) and np.array_equal(held, held2)  # seeded: the same for every checkpoint
    same, none = split_test(100, limit, seed=3, calibration_split=None)  # without a split: the old subset
    assert none is None and len(same) == (limit or 100)


def test_a_calibration_split_too_large_is_one_line_naming_it():
    with pytest.raises(
        OptionError, match=r"calibration_split: expected fewer than the test split's 100 images .* got 100"
    ):
        split_test(100, None, 0, 100)
    with pytest.raises(OptionError, match=r"calibration_split: expected at most 40 with limit 60 .* got 41"):
        split_test(100, 60, 0, 41)
    with pytest.raises(OptionError, match="calibration_split: expected an integer from 1 to 1,000,000,000, got 0"):
        EvalOptions(calibration_split=0).check()


def test_an_unknown_calibrator_is_refused_with_a_suggestion():
    from mmix_eval.evaluate.runner import check_calibrator

    with pytest.raises(UserError, match="temperatur") as e:
        check_calibrator("temperatur")
    assert "temperature" in str(e.value) and "\n" not in str(e.value)


def test_a_fit_whose_parameters_make_the_logits_non_finite_is_one_line_before_any_row(monkeypatch):
    import mmix_eval.evaluate.calibrate as calibrate
    from mmix_eval.calibrators.temperature import Temperature

    class ZeroTemperature(Temperature):  # finite parameters (0.0), infinite logits
        def fit(self, logits, labels):
            return {"temperature": 0.0}

    monkeypatch.setattr(calibrate, "get_calibrator", lambda spec: ZeroTemperature())
    target, _ = tiny_target()
    with pytest.raises(UserError) as e:
        evaluate_deformations(target, bins=10, progress=False)
    assert str(e.value) == (
        "calibrator 'temperature': its fitted parameters ({\"temperature\": 0.0}) turn the 40 "
        "held-out logits non-finite; expected finite calibrated logits"
    )


def test_a_held_out_set_classified_entirely_right_holds_the_temperature_at_its_bound_and_says_so():
    """Separable held-out logits have no NLL minimiser (it falls as T → 0; LBFGS stopped at T = 0.0025 once):
    T is held at T_MIN, which is the bounded minimiser (the NLL at T_MIN is below that at any larger T tried),
    and every calibrated row carries the caveat."""
    from mmix_eval.calibrators.temperature import T_MAX, T_MIN

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (60,), generator=g)
    z = torch.randn(60, 4, generator=g, dtype=torch.float64) * 0.1 + 2.0 * F.one_hot(y, 4)  # all correct
    assert fit_temperature(z, y) == T_MIN
    nll = lambda t: float(F.cross_entropy(z / t, y))  # noqa: E731
    assert all(nll(T_MIN) < nll(t) for t in (0.06, 0.1, 0.5, 1.0))
    assert fit_temperature(torch.zeros(60, 4, dtype=torch.float64) + 1e-3 * z, y) <= T_MAX  # near chance: bounded too
    # an ordinary fit is untouched by the bound
    noisy = z + 3.0 * torch.randn(60, 4, generator=g, dtype=torch.float64)
    assert T_MIN < fit_temperature(noisy, y) < T_MAX
    # through an evaluator: the calibrated rows (and the fitted temperature's) say why
    torch.manual_seed(0)
    d = make_data(n_train=0, n_test=40, classes=4, size=8, seed=3)
    x = d.test.x.float() / 255
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    with torch.no_grad():
        val_y = model(x[:20]).argmax(1)  # the model's own predictions: every held-out image "correct"
    target = target_from_module(model, x[20:], d.test.y[20:], val=(x[:20], val_y))
    with pytest.warns(UserWarning, match="lower bound"):
        rows = evaluate_calibration(target, bins=10, progress=False)
    cal = [r for r in rows if r["calibrator"] == "temperature"]
    assert cal and all("held at its lower bound" in r["warnings"] for r in cal)
    assert next(r for r in cal if r["metric"] == "temperature")["value"] == T_MIN
    assert not any("lower bound" in (r["warnings"] or "") for r in rows if r["calibrator"] == "none")


def test_ood_ranks_the_calibrated_max_softmax_and_energy_again_and_they_equal_sklearn_on_scaled_logits():
    from sklearn.metrics import roc_auc_score

    from mmix_eval.evaluate.base import get_evaluator, run_evaluator
    from mmix_eval.evaluate.evaluators.ood import ood_images

    target, model = tiny_target()
    rows = run_evaluator(get_evaluator("ood"), target, {"ood": ["noise:uniform"]}, EvalOptions(progress=False, bins=10))
    t = fit_temperature(model(target.val.x).detach(), target.val.y)
    cal = {(r["condition"], r["metric"]): r["value"] for r in rows if r["calibrator"] == "temperature"}
    assert {c for c, _ in cal} == {"noise:uniform/msp", "noise:uniform/energy"}  # the max logit's order is T's too
    x_out = ood_images("noise:uniform", len(target.test), tuple(target.test.x.shape[1:]), 0)
    x_out = x_out.float() / 255 if x_out.dtype == torch.uint8 else x_out  # stored as bytes, fed as [0, 1]
    with torch.no_grad():
        z_in, z_out = model(target.test.x).double() / t, model(x_out).double() / t
    y = np.r_[np.ones(len(z_in)), np.zeros(len(z_out))]
    msp = torch.cat([torch.softmax(z_in, 1).max(1).values, torch.softmax(z_out, 1).max(1).values]).numpy()
    energy = torch.cat([torch.logsumexp(z_in, 1), torch.logsumexp(z_out, 1)]).numpy()
    assert cal["noise:uniform/msp", "auroc"] == pytest.approx(roc_auc_score(y, msp), abs=1e-9)
    assert cal["noise:uniform/energy", "auroc"] == pytest.approx(roc_auc_score(y, energy), abs=1e-9)
    raw = {(r["condition"], r["metric"]): r["value"] for r in rows if r["calibrator"] == "none" and r["bin"] is None}
    assert ("noise:uniform/max_logit", "auroc") in raw and cal["noise:uniform/msp", "auroc"] != raw[
        "noise:uniform/msp", "auroc"
    ]
