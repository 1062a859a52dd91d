"""Evaluation traps (RobustBench / AutoAttack's checks): a model in train mode, one returning probabilities,
one with a randomised forward, one whose input gradients are zero. Each is detected, warned about on the
terminal, and written into the records' `warnings` column and the report; a sound model raises none."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mmix_eval.evaluate import target_from_module
from mmix_eval.evaluate.base import DEFAULT_EVALUATORS as EVALUATORS
from mmix_eval.report import build_report

torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class Probabilities(Net):
    def forward(self, x):
        return super().forward(x).softmax(1)


class Randomised(Net):
    def forward(self, x):
        return super().forward(x + 0.05 * torch.randn_like(x))


class ZeroGradient(Net):
    """Quantises its input: piecewise constant, so the input gradient is exactly zero (gradient masking)."""

    def forward(self, x):
        return super().forward(torch.floor(x * 8) / 8)


def evaluate(model, tmp_path, train_mode=False):
    from mmix_eval.evaluate.evaluators.attacks.fgsm import evaluate_fgsm
    from mmix_eval.evaluate.evaluators.calibration import evaluate_calibration
    from mmix_eval.evaluate.evaluators.deformations.evaluator import evaluate_deformations
    from mmix_eval.evaluate.records import write_records

    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, 3, 8, 8, generator=g), torch.randint(0, 4, (40,), generator=g)
    model.train(train_mode)
    if not train_mode:
        model.eval()
    t = target_from_module(model, x, y, name=type(model).__name__)
    rows = {
        "deformations": evaluate_deformations(t, progress=False, device="cpu"),
        "fgsm": evaluate_fgsm(t, eps=[2], progress=False, device="cpu"),
        "calibration": evaluate_calibration(t, progress=False, device="cpu"),
    }
    for e, r in rows.items():
        write_records(r, tmp_path / "res" / t.run / e)
    return rows


def warnings_of(rows, evaluator) -> set[str]:
    return {
        w
        for r in rows[evaluator]
        for w in str(r["warnings"] or "").split("; ")
        if w and not w.startswith("no calibrated rows")
    }  # a note about the data, not a trap


CASES = [
    (Net, True, "model was in train mode, switched to eval mode", EVALUATORS),
    (Probabilities, False, "model output looks like probabilities", EVALUATORS),
    (Randomised, False, "model output is randomised", EVALUATORS),
    (ZeroGradient, False, "input gradients are zero for 40 of 40 probe images", ("fgsm",)),
]


@pytest.mark.parametrize(
    "cls, train_mode, message, evaluators", CASES, ids=[c[0].__name__ + ("-train" if c[1] else "") for c in CASES]
)
def test_trap_is_detected_and_recorded(cls, train_mode, message, evaluators, tmp_path):
    with pytest.warns(UserWarning, match=message.split(" for ")[0]):
        rows = evaluate(cls(), tmp_path, train_mode)
    for e in EVALUATORS:
        found = any(message in w for w in warnings_of(rows, e))
        assert found == (e in evaluators), (e, warnings_of(rows, e))
    result = build_report([tmp_path / "res"], tmp_path / "rep", baseline=None)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert f"Warning for {cls.__name__}" in page and message.split(" (")[0].split(" for ")[0] in page
    assert result["out"] == tmp_path / "rep"


def test_a_sound_model_raises_no_warning(tmp_path, recwarn):
    rows = evaluate(Net(), tmp_path)
    assert all(not warnings_of(rows, e) for e in EVALUATORS)
    assert not [w for w in recwarn if "model" in str(w.message) or "gradient" in str(w.message)]


def test_trap_warnings_reach_the_records_files_from_the_cli(checkpoint, tmp_path, capsys, monkeypatch):
    """A checkpoint evaluated by the CLI whose model turns out randomised at load time: the warning goes to
    stderr once per check and into every evaluator's JSONL."""
    import mmix_eval.checkpoint as ck
    from reliability.util import cli

    real = ck.load_checkpoint

    def randomised(*a, **k):
        model, meta = real(*a, **k)
        model.register_forward_pre_hook(lambda m, inp: (inp[0] + 0.05 * torch.randn_like(inp[0]),))
        return model, meta

    monkeypatch.setattr(ck, "load_checkpoint", randomised)
    code, _, err = cli(
        [
            "evaluate",
            "--ckpt",
            str(checkpoint),
            "--out",
            str(tmp_path / "r"),
            "--limit",
            "30",
            "--device",
            "cpu",
            "--eps",
            "2",
        ],
        capsys,
    )
    assert code == 0
    assert err.count("model output is randomised") == 1
    for e in EVALUATORS:
        rows = [json.loads(line) for line in (tmp_path / "r" / "run" / f"{e}.jsonl").read_text().splitlines()]
        assert all("model output is randomised" in (r["warnings"] or "") for r in rows)


def test_masked_gradients_are_flagged_under_autoattack_too(tmp_path):
    from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
    from mmix_eval.evaluate.target import target_from_module

    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, 3, 8, 8, generator=g), torch.randint(0, 4, (40,), generator=g)
    t = target_from_module(ZeroGradient().eval(), x, y, name="ZeroGradient")
    with pytest.warns(UserWarning, match="input gradients are zero"):
        rows = run_evaluator(
            get_evaluator("attack"), t, {"eps": [2.0], "quick": True}, EvalOptions(progress=False, device="cpu")
        )
    assert all("input gradients are zero for 40 of 40 probe images" in r["warnings"] for r in rows)
