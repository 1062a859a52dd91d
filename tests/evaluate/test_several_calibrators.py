"""Several calibrators in one evaluation (``--calibrator temperature,dirichlet,isotonic``): each fitted once on the
same held-out logits, computed once; every condition records one calibrated row per calibrator, each equal to the
row a run with that calibrator alone records; probability calibrators give no calibrated energy score."""

from __future__ import annotations

import struct

import pytest
import torch
from conftest import make_data, raises_as_shown

from mmix_eval.evaluate.base import PROBABILITY_METRICS, EvalOptions, OptionError, run_evaluator
from mmix_eval.evaluate.evaluators.calibration import Calibration
from mmix_eval.evaluate.evaluators.deformations.evaluator import Deformations
from mmix_eval.evaluate.evaluators.ood import OOD
from mmix_eval.evaluate.target import target_from_module

SEVERAL = "temperature,dirichlet,isotonic,histogram"


class Counting(torch.nn.Module):
    """A linear classifier that counts the images it is shown."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return self.net(x)


def target(seed=0):
    torch.manual_seed(seed)
    d = make_data(n_train=0, n_test=60, classes=4, size=8, seed=seed)
    held = make_data(n_train=0, n_test=80, classes=4, size=8, seed=seed + 1).test
    model = Counting().eval()
    with torch.no_grad():
        model.net[1].weight.mul_(4)
    return target_from_module(model, d.test.x.float() / 255, d.test.y, val=(held.x.float() / 255, held.y)), model


def bits(v: float) -> str:
    """A value compared bit for bit (two NaNs equal)."""
    return struct.pack("<d", v).hex()


def key(r):
    return r["condition"], r["metric"], r["calibrator"], r.get("bin")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_several_calibrators_record_one_row_each_equal_to_a_run_with_that_calibrator_alone():
    t, model = target()
    common = EvalOptions(device=None, progress=False, bins=10, calibrator=SEVERAL)
    rows = run_evaluator(Deformations(), t, {}, common)
    rows += run_evaluator(Calibration(), t, {}, common)
    assert t.val_logits is not None and set(t.calibration) == set(SEVERAL.split(","))
    conditions = {r["condition"] for r in rows if r["evaluator"] == "deformations"}
    for cond in conditions:
        for m in PROBABILITY_METRICS:
            got = sorted(r["calibrator"] for r in rows if r["condition"] == cond and r["metric"] == m)
            assert got == sorted(["none", *SEVERAL.split(",")]), (cond, m)
    for name in SEVERAL.split(","):
        alone_t, _ = target()
        alone = EvalOptions(device=None, progress=False, bins=10, calibrator=name)
        ref = run_evaluator(Deformations(), alone_t, {}, alone)
        ref += run_evaluator(Calibration(), alone_t, {}, alone)
        mine = {key(r): bits(r["value"]) for r in rows if r["calibrator"] == name}
        theirs = {key(r): bits(r["value"]) for r in ref if r["calibrator"] == name}
        assert mine == theirs and len(mine) > 0, name
    # the clean calibrated condition of each calibrator in the calibration evaluator, named after it
    assert {r["condition"] for r in rows if r["evaluator"] == "calibration"} == {
        "test",
        *(f"{n}_scaled" for n in SEVERAL.split(",")),
    }


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_held_out_logits_are_computed_once_for_every_calibrator():
    t, model = target()
    run_evaluator(Calibration(), t, {}, EvalOptions(device=None, progress=False, calibrator=SEVERAL))
    one_t, one = target()
    run_evaluator(Calibration(), one_t, {}, EvalOptions(device=None, progress=False, calibrator="temperature"))
    raw_t, raw = target()
    run_evaluator(Calibration(), raw_t, {}, EvalOptions(device=None, progress=False, calibrator="none"))
    assert model.seen == one.seen == raw.seen + len(t.val)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_probability_calibrators_give_a_calibrated_msp_but_no_calibrated_energy():
    t, _ = target()
    common = EvalOptions(device=None, progress=False, calibrator="temperature,isotonic")
    rows = run_evaluator(OOD(), t, {"ood": ["noise:gaussian"]}, common)
    scores = {(r["calibrator"], r["settings"].get("score") or r.get("score")) for r in rows if r["metric"] == "auroc"}
    assert ("isotonic", "msp") in scores and ("temperature", "energy") in scores
    assert ("isotonic", "energy") not in scores


@pytest.mark.parametrize(
    "spec, match",
    [
        ("none,temperature", "expected 'none' alone or a list of calibrators"),
        ("temperature,temperature", "expected each calibrator once"),
        ("temperature,", "expected calibrator names or module:Class, separated by commas"),
    ],
)
def test_a_bad_list_of_calibrators_is_one_line_naming_it(spec, match):
    with raises_as_shown(OptionError, match=match):
        EvalOptions(calibrator=spec)
