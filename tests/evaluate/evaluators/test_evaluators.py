"""The evaluators on a tiny trained checkpoint: determinism, FGSM invariants, calibration by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ece_from_bins, make_data, tiny_config
from helpers.references import netcal_ece_mce, top_label

from mmix_eval.calibrators.temperature import fit_temperature
from mmix_eval.errors import UserError
from mmix_eval.evaluate.evaluators.attacks.fgsm import evaluate_fgsm
from mmix_eval.evaluate.evaluators.attacks.steps import make_attack
from mmix_eval.evaluate.evaluators.calibration import evaluate_calibration
from mmix_eval.evaluate.evaluators.deformations.evaluator import evaluate_deformations
from mmix_eval.evaluate.metrics import calibration_metrics, nll, reliability_bins
from mmix_eval.evaluate.target import Images, Target, load_target, target_from_module
from mmix_eval.training import train


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    data = make_data(n_train=400, n_test=120, size=12, val=60)
    cfg = tiny_config("vanilla", epochs=6)
    train(cfg, out, progress=False, data=data)
    return out / "model.safetensors", data


def target_of(ckpt, with_val=True) -> Target:
    from mmix_eval.checkpoint import load_checkpoint
    from mmix_eval.evaluate.target import base_columns

    path, data = ckpt
    model, meta = load_checkpoint(path)
    return Target(
        model,
        Images(data.test.x, data.test.y),
        Images(data.val.x, data.val.y) if with_val else None,
        "tiny",
        base_columns(meta, path, "tiny"),
    )


def acc(rows, condition):
    return next(r["value"] for r in rows if r["condition"] == condition and r["metric"] == "acc" and r["bin"] is None)


def test_deformations_are_identical_across_runs_and_batch_sizes(ckpt):
    a = evaluate_deformations(target_of(ckpt), batch_size=7, progress=False)
    b = evaluate_deformations(target_of(ckpt), batch_size=7, progress=False)
    c = evaluate_deformations(target_of(ckpt), batch_size=64, progress=False)
    values = lambda rows: [(r["condition"], r["metric"], r["value"]) for r in rows]
    assert values(a) == values(b)  # bitwise across runs
    # Across batch sizes, accuracies are identical; NLL / ECE / Brier agree to float32 convolution noise
    # (~4e-11 absolute; relative 1e-8 on an NLL of 0.0055).
    for ra, rc in zip(a, c):
        assert (ra["condition"], ra["metric"]) == (rc["condition"], rc["metric"])
        assert (
            ra["value"] == rc["value"]
            if ra["metric"] in ("acc", "rel_acc")
            else ra["value"] == pytest.approx(rc["value"], rel=1e-6)
        ), (ra["condition"], ra["metric"], ra["value"], rc["value"])
    assert [r["condition"] for r in a if r["metric"] == "acc"] == [
        "clean",
        "rotation20",
        "rotation40",
        "shear28.6",
        "shear57.3",
        "zoom_in60",
        "zoom_in80",
        "zoom_out120",
        "zoom_out140",
    ]
    assert {r["settings"]["grid"] for r in a} == {"table4"} and {r["settings"]["interpolation"] for r in a} == {
        "nearest"
    }
    assert {r["n"] for r in a} == {120}
    assert acc(a, "clean") > 80.0  # the tiny model learned its task, so deformations have something to break
    d = evaluate_deformations(target_of(ckpt), seed=1, progress=False)
    assert values(d) != values(a)


def test_a_zero_deformation_grid_scores_the_clean_accuracy(ckpt, tmp_path):
    grid = tmp_path / "zero.yaml"
    grid.write_text("- {rotation: 0}\n- {shear: 0}\n- {zoom: 100}\n")
    rows = evaluate_deformations(target_of(ckpt), grid=str(grid), interpolation="bilinear", progress=False)
    assert acc(rows, "rotation0") == acc(rows, "shear0") == acc(rows, "zoom_out100") == acc(rows, "clean")


def plain_fgsm(model, x, y, eps):
    """Independent FGSM with plain autograd: x + eps * sign(grad of cross-entropy), clipped to [0, 1]."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def test_fgsm_invariants_and_agreement_with_plain_autograd(ckpt):
    t = target_of(ckpt)
    grid = (0, 1, 2, 4, 8, 16, 32, 64)
    rows = evaluate_fgsm(t, eps=list(grid), batch_size=50, progress=False)
    accs = [acc(rows, f"eps{e:g}") for e in grid]
    assert accs[0] == acc(rows, "clean")
    assert all(a <= acc(rows, "clean") for a in accs)
    assert all(b <= a for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0]  # the attack does something
    model = t.model.eval()
    x, y = t.test.batch(0, 120, "cpu")
    for e in (2, 8):
        adv = make_attack(model, "fgsm", e)(x, y)
        assert float((adv - x).abs().max()) <= e / 255 + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        ref = plain_fgsm(model, x, y, e / 255)
        assert torch.allclose(adv, ref, atol=1e-6)
        with torch.no_grad():
            assert 100.0 * float((model(ref).argmax(1) == y).float().mean()) == pytest.approx(acc(rows, f"eps{e}"))


def test_pgd_stays_in_the_ball_and_is_reproducible(ckpt):
    t = target_of(ckpt)
    a = evaluate_fgsm(t, eps=[4], attack="pgd", pgd_steps=3, progress=False)
    b = evaluate_fgsm(target_of(ckpt), eps=[4], attack="pgd", pgd_steps=3, progress=False)
    assert acc(a, "pgd3-eps4") == acc(b, "pgd3-eps4") and a[-1]["settings"]["attack"] == "pgd3"
    x, y = t.test.batch(0, 60, "cpu")
    adv = make_attack(t.model.eval(), "pgd", 4, 3)(x, y)
    assert float((adv - x).abs().max()) <= 4 / 255 + 1e-6


def test_bad_eps_and_attack():
    t = target_from_module(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)),
        torch.rand(4, 3, 2, 2),
        torch.zeros(4, dtype=torch.long),
    )
    with pytest.raises(UserError, match="^eps: expected finite values >= 0"):
        evaluate_fgsm(t, eps=[-1], progress=False)
    with pytest.raises(
        UserError, match="^eps: expected numbers in /255 units like 1,2,4,8 or fractions like 8/255, got 'two'"
    ):
        evaluate_fgsm(t, eps="1,two", progress=False)
    with pytest.raises(UserError, match="^attack: expected one of fgsm, fgsm_official, pgd, autoattack, got 'cw'"):
        evaluate_fgsm(t, attack="cw", progress=False)


def test_ece_mce_and_brier_hand_computed():
    # Confidences 0.85, 0.85 (both right) and 0.65, 0.65 (one right), 10 bins (values kept off bin edges) ->
    # ECE = 2/4·|1 − 0.85| + 2/4·|0.5 − 0.65| = 0.15, MCE = 0.15; Brier of (0.85, 0.15) vs class 0 = 0.045.
    probs = torch.tensor([[0.85, 0.15], [0.85, 0.15], [0.65, 0.35], [0.65, 0.35]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    m = calibration_metrics(probs.log(), y, bins=10)
    assert m["ece"] == pytest.approx(0.15) and m["mce"] == pytest.approx(0.15) and m["acc"] == 75.0
    assert m["brier"] == pytest.approx((0.045 + 0.045 + 0.245 + 0.845) / 4)
    counts, bin_acc, bin_conf = m["bins"]
    assert (
        counts.tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 2, 0] and bin_acc[8] == 1.0 and bin_conf[6] == pytest.approx(0.65)
    )


@pytest.mark.parametrize("seed,bins", [(0, 15), (1, 10), (2, 20), (3, 1)])
def test_netcal_ece_equals_in_house_equal_width_ece(seed, bins):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(500, 10, generator=g) * 3
    y = torch.randint(0, 10, (500,), generator=g)
    conf, correct = top_label(logits, y)
    assert netcal_ece_mce(conf, correct, bins)[0] == pytest.approx(
        ece_from_bins(*reliability_bins(conf, correct, bins)), abs=1e-12
    )


def test_tiny_and_one_class_batches_do_not_crash_netcal():
    for logits, y in [
        (torch.randn(1, 10), torch.tensor([3])),
        (torch.randn(6, 10), torch.zeros(6, dtype=torch.long)),
        (torch.randn(6, 10), torch.tensor([0, 1, 0, 1, 0, 1])),
    ]:
        m = calibration_metrics(logits, y, 15)
        assert 0 <= m["ece"] <= 1 and math.isfinite(m["nll"])


def test_nll_is_cross_entropy_on_logits_and_finite_for_extreme_logits():
    assert nll(torch.tensor([[1000.0, 0.0]]), torch.tensor([1])) == pytest.approx(1000.0)
    assert nll(torch.tensor([[0.0, 0.0]]), torch.tensor([0])) == pytest.approx(math.log(2))
    assert math.isfinite(nll(torch.tensor([[1e30, -1e30, 0.0]]), torch.tensor([1])))


def test_temperature_scaling_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 5, generator=g) * 2
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)  # labels calibrated for z
    assert fit_temperature(3.0 * z, y) == pytest.approx(3.0, rel=0.1)


def test_calibration_fits_temperature_on_validation_only_and_skips_without_it(ckpt):
    rows = evaluate_calibration(target_of(ckpt), bins=15, progress=False)
    t = next(r["value"] for r in rows if r["metric"] == "temperature")
    assert t > 0 and "held-out validation" in next(r["label"] for r in rows if r["metric"] == "temperature")
    assert {r["condition"] for r in rows} == {"test", "temperature_scaled"}
    before = {r["metric"]: r["value"] for r in rows if r["condition"] == "test" and r["bin"] is None}
    after = {r["metric"]: r["value"] for r in rows if r["condition"] == "temperature_scaled" and r["bin"] is None}
    assert after["acc"] == before["acc"]  # a temperature never changes the argmax
    assert sum(r["value"] for r in rows if r["metric"] == "bin_count" and r["condition"] == "test") == 120
    skipped = evaluate_calibration(target_of(ckpt, with_val=False), progress=False)
    assert all("no calibrated rows: the checkpoint held out no validation split" in r["warnings"] for r in skipped)
    assert not any(r["metric"] == "temperature" for r in skipped)


def test_checkpoint_target_reproduces_its_val_split_from_metadata(ckpt):
    path, data = ckpt
    # The synthetic data has no spec to reload, so load_target must say where the data came from.
    with pytest.raises(UserError, match="unknown data set 'synthetic'.*override it"):
        load_target(path, "cpu")


def test_train_mode_models_are_switched_to_eval_with_a_warning(ckpt):
    t = target_of(ckpt)
    t.model.train()
    with pytest.warns(UserWarning, match="train mode, switched to eval"):
        rows = evaluate_deformations(t, grid="table4", progress=False)
    assert not t.model.training and "train mode" in rows[0]["warnings"]


def test_images_outside_unit_range_are_refused():
    with pytest.raises(UserError, match=r"expected pixel values in \[0, 1\] \(models normalise inside\), got min -0.5"):
        Images(torch.full((2, 3, 4, 4), -0.5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(UserError, match="expected as many labels as images"):
        Images(torch.rand(2, 3, 4, 4), torch.zeros(3, dtype=torch.long))


def test_any_module_can_be_evaluated_without_a_checkpoint():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)).eval()
    x, y = torch.rand(20, 3, 4, 4), torch.randint(0, 3, (20,))
    rows = evaluate_fgsm(target_from_module(model, x, y, "mine"), eps=[1], progress=False)
    assert rows[0]["run"] == "mine" and rows[0]["model"] == "Sequential"
    with torch.no_grad():
        assert acc(rows, "clean") == pytest.approx(100.0 * float((model(x).argmax(1) == y).float().mean()))


def official_target(ckpt):
    """The tiny checkpoint with the official CIFAR per-channel normalisation inside (non-trivial std)."""
    from mmix_eval.foreign import OFFICIAL_CIFAR_MEAN, OFFICIAL_CIFAR_STD

    t = target_of(ckpt)
    t.model.normalize.mean.copy_(torch.tensor(OFFICIAL_CIFAR_MEAN).view(1, 3, 1, 1))
    t.model.normalize.std.copy_(torch.tensor(OFFICIAL_CIFAR_STD).view(1, 3, 1, 1))
    return t


def plain_official_fgsm(model, x, y, eps):
    """The official code's attack written out plainly: in normalised space z = (x - mean) / std, a network that
    takes z (our stages and head without the normalisation), z + eps * sign(grad of BCELoss(Softmax(f(z)),
    onehot(y))), no clamp. Returns (gradient sign, logits of the attacked z)."""
    core = lambda z: model.head(model.stages[2](model.stages[1](model.stages[0](z))))
    z = ((x - model.normalize.mean) / model.normalize.std).requires_grad_(True)
    loss = torch.nn.BCELoss()(torch.nn.Softmax(dim=1)(core(z)), F.one_hot(y, 4).float())
    (g,) = torch.autograd.grad(loss, z)
    with torch.no_grad():
        return g.sign(), core(z + eps * g.sign())


def test_official_fgsm_equals_a_plain_implementation_of_the_official_attack(ckpt):
    from mmix_eval.evaluate.evaluators.attacks.steps import input_grad_sign, official_loss

    t = official_target(ckpt)
    model = t.model.eval()
    assert len(model.stages) == 3
    rows = evaluate_fgsm(t, eps="0.01,0.03,0.3", attack="fgsm_official", batch_size=50, progress=False)
    conds = [r["condition"] for r in rows if r["metric"] == "acc"]
    assert conds == ["clean", "official-eps0.01", "official-eps0.03", "official-eps0.3"]
    r03 = next(r for r in rows if r["condition"] == "official-eps0.03" and r["metric"] == "acc")
    st = r03["settings"]
    assert (
        st["attack"] == "fgsm_official" and st["eps"] == 0.03 and st["clamp"] == "none" and st["loss"] == "bce_softmax"
    )
    assert st["eps_unit"] == "normalised"
    assert st["eps_255_per_channel"] == [1.89, 1.863, 2.001]  # 0.03 x (63.0, 62.1, 66.7)
    assert st["strength"] == pytest.approx((1.89 + 1.863 + 2.001) / 3, abs=1e-4)  # plots: /255 like every FGSM row
    assert r03["label"] == "official code's FGSM ε = 0.03 (normalised; (1.890, 1.863, 2.001)/255 in pixels)"
    x, y = t.test.batch(0, 120, "cpu")
    ours = input_grad_sign(model, x, y, loss=official_loss)
    std = model.normalize.std
    for e in (0.01, 0.03, 0.3):
        sign, ref_logits = plain_official_fgsm(model, x, y, e)
        assert torch.equal(ours, sign)  # the same gradient sign, bitwise, in pixel and in normalised space
        adv = x + e * std * ours
        step = (adv - x).abs().amax(dim=(0, 2, 3))
        assert torch.allclose(step, e * std.flatten(), rtol=1e-5)
        with torch.no_grad():
            logits = model(adv)
        assert (logits - ref_logits).abs().max().item() < 1e-5
        assert torch.equal(logits.argmax(1), ref_logits.argmax(1))
        assert acc(rows, f"official-eps{e:g}") == 100.0 * int((ref_logits.argmax(1) == y).sum()) / len(y)
    r3 = next(r for r in rows if r["condition"] == "official-eps0.3" and r["metric"] == "acc")
    adv = x + 0.3 * std * ours  # no clamp: a large step leaves [0, 1], and the record says how much
    share = 100.0 * float(((adv < 0) | (adv > 1)).float().mean())
    assert r3["settings"]["pixels_outside_01"] == pytest.approx(share, abs=1e-4) and share > 0
    # default ε: the official code's 0.01 and 0.03; the pixel grid's values are refused as normalised ones
    assert [
        r["condition"] for r in evaluate_fgsm(t, attack="fgsm_official", progress=False) if r["metric"] == "acc"
    ] == ["clean", "official-eps0.01", "official-eps0.03"]
    for bad in ([0.01, 30], "nan", "0.01,-0.01", "1e400"):  # huge, NaN, negative, overflowing to inf
        with pytest.raises(UserError, match=r"^eps: expected values in \[0, 10\] \(normalised units"):
            evaluate_fgsm(t, eps=bad, attack="fgsm_official", progress=False)
    with pytest.raises(
        UserError, match="^eps: expected at least one value \\(normalised units\\) for fgsm_official, got \\[\\]"
    ):
        evaluate_fgsm(t, eps=" , ", attack="fgsm_official", progress=False)
    with pytest.raises(
        UserError, match="^eps: expected numbers in normalised units like 0.01,0.03 for fgsm_official, got '8/255'"
    ):
        evaluate_fgsm(t, eps="8/255", attack="fgsm_official", progress=False)


def test_official_fgsm_refuses_a_model_without_its_normalisation():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    t = target_from_module(model, torch.rand(4, 3, 2, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match="fgsm_official expected a model that normalises its inputs"):
        evaluate_fgsm(t, attack="fgsm_official", progress=False)


def test_fgsm_with_one_gradient_per_batch_gives_torchattacks_images_bitwise(ckpt):
    import torchattacks

    from mmix_eval.evaluate.evaluators.attacks.steps import fgsm_step, input_grad_sign

    t = target_of(ckpt)
    model = t.model.eval()
    x, y = t.test.batch(0, 64, "cpu")
    sign = input_grad_sign(model, x, y)
    for e in (0.5, 1, 2, 4, 8, 16):
        assert torch.equal(fgsm_step(x, sign, e), torchattacks.FGSM(model, eps=e / 255)(x, y)), e
    # and through the evaluator: each ε's accuracy is the one torchattacks' images give
    rows = evaluate_fgsm(t, eps=[2, 8], batch_size=64, progress=False)
    for e in (2, 8):
        correct = 0
        for i in range(0, len(t.test), 64):
            xb, yb = t.test.batch(i, i + 64, "cpu")
            adv = torchattacks.FGSM(model, eps=e / 255)(xb, yb)
            with torch.no_grad():
                correct += int((model(adv).argmax(1) == yb).sum())
        assert acc(rows, f"eps{e}") == 100.0 * correct / len(t.test)
