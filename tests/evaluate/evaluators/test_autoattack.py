"""Issue 16, the attack half: AutoAttack (pyautoattack) under the attack evaluator, on a tiny trained model."""

from __future__ import annotations

import pytest
import torch

from mmix_eval.cli import main
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import EvalOptions, OptionError, get_evaluator, run_evaluator
from mmix_eval.evaluate.evaluators.attacks.adversarial import AA_QUICK
from mmix_eval.evaluate.evaluators.attacks.steps import autoattack_batch, make_autoattack
from mmix_eval.evaluate.images import Images
from mmix_eval.evaluate.records import read_records
from mmix_eval.evaluate.target import Target
from mmix_eval.report.sections.attacks import masking_notes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An MLP trained for a few epochs on the 8x8 digits: some points robust at small ε, not all."""
    run = tmp_path_factory.mktemp("aa") / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--method",
                "vanilla",
                "--epochs",
                "4",
                "--set",
                "train.device=cpu",
                "--set",
                "model.name=mlp",
                "--set",
                "model.kwargs={hidden: [32, 32], linear_stages: []}",
                "--set",
                "train.crop_padding=0",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    from mmix_eval.evaluate.target import load_target

    return run, load_target(run / "model.safetensors", "cpu", limit=40, seed=0)


def test_perturbations_stay_in_the_ball_and_in_range_and_are_seeded(tiny):
    _, t = tiny
    model = t.model.eval()
    x, y = t.test.batch(0, 40, "cpu")
    eps = 8 / 255
    outs = []
    for _ in range(2):
        aa, _targets = make_autoattack(model, "Linf", eps, seed=0, device="cpu", classes=10)
        outs.append(autoattack_batch(aa, AA_QUICK, model, x, y, counts := {}))
    adv = outs[0]
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(outs[0], outs[1])  # the same seed, the same adversarial images
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert torch.equal(adv[wrong], x[wrong])  # points wrong at the start are left as they were
    assert counts["apgd-ce"] >= counts["apgd-t"]  # the cascade only removes robust points


def test_autoattack_is_at_most_pgd_is_at_most_fgsm_on_the_same_points(tiny, tmp_path):
    run, _ = tiny
    out = tmp_path / "res"
    common = ["--ckpt", str(run), "--limit", "40", "--eps", "2", "--no-progress"]
    assert main(["fgsm", *common, "--out", str(out)]) == 0
    assert main(["attack", *common, "--attack", "pgd", "--out", str(tmp_path / "pgd")]) == 0
    assert main(["attack", *common, "--quick", "true", "--out", str(out)]) == 0
    fgsm = read_records(next(out.glob("*/fgsm.jsonl")))
    aa = read_records(next(out.glob("*/attack-autoattack-Linf-quick.jsonl")))  # never over the standard one
    pgd = read_records(next((tmp_path / "pgd").glob("*/attack-pgd7.jsonl")))  # named by its attack
    acc = lambda rows, cond: next(r["value"] for r in rows if r["condition"] == cond and r["metric"] == "acc")
    a, p, f = acc(aa, "aalinf-eps2"), acc(pgd, "pgd7-eps2"), acc(fgsm, "eps2")
    assert a <= p <= f and acc(aa, "clean") >= a
    after = [r for r in aa if r["metric"] == "acc_after"]
    assert [r["settings"]["after"] for r in after] == ["apgd-ce", "apgd-t"]
    assert after[-1]["value"] == a and after[0]["value"] >= after[1]["value"]
    assert {r["settings"]["attack"] for r in aa} == {"autoattack-Linf-quick"}  # quick is said in every record
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Gradient-masking check" in md and "### attack: every metric per condition" in md


def test_masking_flag_by_hand():
    rec = lambda run, tag, e, v: {
        "run": run,
        "metric": "acc",
        "bin": None,
        "value": v,
        "settings": {"attack": tag, "eps_255": e},
    }
    labels = {"a": "vanilla", "b": "masked"}
    rows = [
        rec("a", "fgsm", 8, 20.0),
        rec("a", "autoattack-Linf", 8, 15.0),
        rec("b", "fgsm", 8, 45.0),
        rec("b", "autoattack-Linf", 8, 2.0),
        rec("b", "pgd7", 4, 10.0),
        rec("b", "pgd20", 4, 14.0),
    ]
    (note,) = masking_notes(rows, labels)
    assert "masked at ε = 8/255: FGSM 45.00 % vs autoattack-Linf 2.00 %" in note
    assert "PGD-20 accuracy 14.00 % above PGD-7's 10.00 %" in note and "vanilla" not in note
    assert masking_notes(rows[:2], labels)[0].startswith("Gradient-masking check passed")


def test_bad_attack_options_are_one_line_errors():
    ev = get_evaluator("attack")
    for bad, message in [
        ({"norm": "L1"}, "norm: expected one of Linf, L2"),
        ({"attack": "pgd", "norm": "L2"}, "expected Linf for pgd"),
        ({"eps": [300.0]}, "expected Linf values <= 255"),
        ({"eps": [0.0]}, "expected values > 0"),
        ({"attack": "fgsm", "quick": True}, "expected only with attack autoattack"),
    ]:
        with pytest.raises(OptionError, match=message):
            ev.options(bad)  # the type check (a closed set), then validate
    given = ev.Options(eps=["8/255"])
    assert ev.resolve(given).eps == [8.0] and given.eps == ["8/255"]  # units converted into a copy, never in place
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()  # 2 classes: no targets
    two = Target(model, Images(torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])), run="two")
    with pytest.raises(UserError, match="targeted attacks expected a model of >= 3 classes, got 2"):
        run_evaluator(ev, two, {}, EvalOptions(progress=False))
