"""The white-box attacks behind the fgsm and attack evaluators (FGSM, the official code's FGSM, PGD, AutoAttack):
accuracy and calibration on their images, ε in /255 pixel units on [0, 1] inputs.

FGSM's gradient sign does not depend on ε, so it is computed once per batch and reused for every ε of the
grid (one forward + backward, then one forward per ε); the images are bitwise those of torchattacks' FGSM
(a test checks it). The gradient's forwards are the clean pass: when no other evaluator has computed the
clean logits yet (the runner runs FGSM first for that), they come from there, bitwise the inference-mode
logits on a CPU in fp32. PGD, iterative, runs through torchattacks once per ε.

The paper's Table 7 does not state ε, and its two sources read differently (../shared/PROTOCOL.md):
- pixel reading (``attack fgsm``, the default): comparing with Madry et al.'s 56.10 implies 8/255; the default
  grid is {1, 2, 4, 8}/255, cross-entropy gradient, images clamped to [0, 1].
- the official code's (``attack fgsm_official``): ``supervised/attacks.py`` takes
  x + ε·sign(∇ BCE(softmax(f(x)), onehot(y))) on inputs normalised by the data's per-channel std, with ε = 0.01
  and 0.03 and no clamp. ε is in the checkpoint's normalised units, so in pixels it is ε·std per channel:
  with the official CIFAR std (63.0, 62.1, 66.7)/255, 0.01 is (0.630, 0.621, 0.667)/255 and 0.03 is
  (1.890, 1.863, 2.001)/255, a quarter of 8/255. Since the models here normalise inside, the attack is
  computed in pixel space as x + ε·std_c·sign(∇ₓ BCE) (the sign of the gradient is the same in either space:
  ∂/∂z = std · ∂/∂x); the images may leave [0, 1], and the records say how many pixels did.

Attacks are built after the model is on its device (torchattacks reads the device at construction) and run on
[0, 1] images: mmix-eval models normalise inside, and Images checks the range, since torchattacks silently
clamps whatever it is given. torch loads inside ``run`` (``--help`` stays fast).
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from typing import Literal, get_args

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import SHIFT_METRICS, Evaluator, MetricSpec, OptionError
from mmix_eval.evaluate.evaluators.attacks.eps import parse_eps, parse_official_eps
from mmix_eval.evaluate.evaluators.attacks.steps import (
    autoattack_batch,
    fgsm_step,
    make_attack,
    make_autoattack,
    normalisation_std,
    official_loss,
    pixel_eps,
    sign_cache,
)
from mmix_eval.evaluate.records import PER_IMAGE, record
from mmix_eval.options import MAX_STEPS, check_count

MAX_L2 = 1000.0  # an L2 ε beyond every image's own norm of difference is not an attack strength

AttackName = Literal["fgsm", "fgsm_official", "pgd", "autoattack"]
Norm = Literal["Linf", "L2"]
EpsUnit = Literal["255", "fraction"]  # of bare Linf epsilons: /255 pixel units, or a fraction of [0, 1]
ATTACKS, NORMS, EPS_UNITS = get_args(AttackName), get_args(Norm), get_args(EpsUnit)
OFFICIAL_EPS = [0.01, 0.03]  # the official code's run_test_adversarial calls, in normalised units
# AutoAttack's standard cascade (Croce & Hein 2020), as upstream's code (pyautoattack) runs it: APGD-CE, then
# APGD-T (9 target classes), FAB-T (9), Square (5000 queries), each on the points still correct; 100
# iterations for APGD and FAB. --quick: APGD-CE and APGD-T only (cheaper, weaker; said in every record).
AA_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
AA_QUICK = ("apgd-ce", "apgd-t")


def attack_tag(options) -> str:
    """The attack as its records' settings name it (fgsm, pgd7, autoattack-Linf, autoattack-L2-quick)."""
    if options.attack == "autoattack":
        return f"autoattack-{options.norm}" + ("-quick" if options.quick else "")
    if options.attack in ("fgsm", "fgsm_official"):
        return options.attack
    return f"pgd{options.pgd_steps}"


def official_condition(e: float, std) -> tuple[str, str, dict]:
    """The official FGSM's condition at ε (normalised units): its name, label and settings, with the per-channel
    step in /255 pixels and, as the report's x axis (strength), the channels' mean step, like every FGSM row."""
    per_channel = [round(float(v) * e * 255.0, 4) for v in std.flatten()]
    pixels = ", ".join(f"{v:.3f}" for v in per_channel)
    pixels = f"({pixels})" if len(per_channel) > 1 else pixels
    settings = {"eps": e, "eps_255_per_channel": per_channel, "strength": round(sum(per_channel) / len(per_channel), 4)}
    return f"official-eps{e:g}", f"official code's FGSM ε = {e:g} (normalised; {pixels}/255 in pixels)", settings


def after_rows(rows: list[dict], options, attacks, counts: dict, targets, n: int) -> list[dict]:
    """Per ε and attack of the cascade, the robust accuracy left after it (``acc_after``; counts summed over ranks)."""
    from mmix_eval import distributed

    unit = "/255" if options.norm == "Linf" else ""
    label = "AutoAttack" + (" (quick: APGD-CE + APGD-T)" if options.quick else "")
    clean = next(r for r in rows if r["condition"] == "clean" and r["metric"] == "acc")
    base = {k: v for k, v in clean.items() if k != PER_IMAGE}
    out = []
    for e in options.eps:
        for a in attacks:
            left = distributed.sum_int(counts.get(e, {}).get(a, 0))
            condition, text = (
                f"aa{options.norm.lower()}-eps{e:g}/{a}",
                f"{label} {options.norm} ε = {e:g}{unit}, after {a}",
            )
            out.append(
                record(base, condition, "acc_after", 100.0 * left / n, text, eps=e, after=a, target_classes=targets)
            )
    return out


class WhiteBoxAttack(Evaluator):
    """What the fgsm and attack evaluators share: every attack here, chosen by the ``attack`` option (their
    defaults differ), validated, named in the result file and run."""

    version = "2"  # 2: debiased CE and SmoothECE recorded
    metrics = {
        **SHIFT_METRICS,
        "acc_after": MetricSpec("robust accuracy (%) after this attack of the cascade", "higher", ".2f"),
    }

    def resolve(self, options):
        """ε as numbers in the attack's units, converted once here: /255 pixel units for Linf, plain L2 norms, or
        for fgsm_official the checkpoint's normalised units (the pixel grid's default then means "not given")."""
        if options.attack == "fgsm_official":
            given = options.eps if options.eps != type(options)().eps else OFFICIAL_EPS
            return dataclasses.replace(options, eps=parse_official_eps(given))
        return dataclasses.replace(options, eps=parse_eps(options.eps, options.eps_unit, options.norm))

    def validate(self, options) -> None:
        check_count("pgd_steps", options.pgd_steps, 1, MAX_STEPS)
        if options.norm != "Linf" and options.attack != "autoattack":
            raise OptionError(
                "norm", f"expected Linf for {options.attack} (L2 is for autoattack), got '{options.norm}'"
            )
        if options.quick and options.attack != "autoattack":
            raise OptionError("quick", f"expected only with attack autoattack, got attack {options.attack}")
        if options.attack == "fgsm_official":  # its ε range is checked where it is parsed
            return
        if options.norm == "Linf" and any(e > 255 for e in options.eps):
            raise OptionError(
                "eps", f"expected Linf values <= 255 (/255 units: 255 is the whole pixel range), got {options.eps}"
            )
        if options.norm == "L2" and any(e > MAX_L2 for e in options.eps):
            raise OptionError(
                "eps",
                f"expected L2 norms <= {MAX_L2:g} (the diagonal of a 3x330x330 image in [0, 1] is "
                f"under it), got {options.eps}",
            )
        if options.attack == "autoattack" and any(e <= 0 for e in options.eps):
            raise OptionError("eps", f"expected values > 0 for autoattack, got {options.eps}")

    def file_suffix(self, options) -> str:
        """Results of another attack than the evaluator's default carry its tag: fgsm.jsonl is FGSM's,
        fgsm-pgd7.jsonl PGD-7's; attack.jsonl standard Linf AutoAttack's, attack-autoattack-Linf-quick.jsonl a
        quick one, attack-pgd7.jsonl PGD's."""
        tag = attack_tag(options)
        return "" if tag == attack_tag(type(options)()) else tag

    def run(self, target, options, common) -> list[dict]:
        if options.attack == "autoattack":
            return self._run_autoattack(target, options, common)
        if options.attack == "fgsm_official":
            return self._run_official(target, options, common)
        return self._run_gradient(target, options, common)

    def clean_by_product(self, options) -> bool:
        return options.attack in ("fgsm", "fgsm_official")

    def _run_gradient(self, target, options, common) -> list[dict]:
        """FGSM (one gradient sign per batch for the whole ε grid, the clean pass's by-product) and PGD-k through
        torchattacks, seeded per rank."""
        import torch

        from mmix_eval import distributed
        from mmix_eval.evaluate.checks import zero_gradient_check
        from mmix_eval.evaluate.passes import Shift, shift_rows

        tag = attack_tag(options)
        name = "FGSM" if options.attack == "fgsm" else f"PGD-{options.pgd_steps}"

        gradient_pass, sign_of = sign_cache(target)  # one gradient per batch for the whole ε grid

        def attack(e):
            def make(model, device):
                if options.attack == "fgsm":
                    return lambda x, y, i, j: fgsm_step(x, sign_of(model, x, y, i), e)
                atk = make_attack(model, options.attack, e, options.pgd_steps)  # after the model is on its device
                return lambda x, y, i, j: atk(x, y)

            return make

        @contextmanager
        def seeded():  # PGD's random start, seeded per rank, without touching the caller's RNG
            cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(common.seed + distributed.rank())
                yield

        # FGSM's conditions keep the paper's names (eps8); PGD's carry the attack (pgd7-eps8), so a PGD result
        # never reads as, or overwrites, an FGSM one
        prefix = "" if options.attack == "fgsm" else f"{tag}-"
        shifts = [
            Shift(f"{prefix}eps{e:g}", f"{name} ε = {e:g}/255", attack(e), {"eps_255": e, "strength": e}, seeded)
            for e in options.eps
        ]
        check = lambda model, device: zero_gradient_check(model, target.test, device)
        return shift_rows(
            self,
            target,
            common,
            {"attack": tag},
            shifts,
            check,
            clean_pass=gradient_pass if options.attack == "fgsm" else None,
        )

    def _run_official(self, target, options, common) -> list[dict]:
        """The official code's FGSM: one BCE-of-softmax gradient per batch for the whole ε grid, the step ε·std_c
        per channel in pixels (ε in the checkpoint's normalised units), no clamp. Each condition records ε, its
        per-channel pixel value (/255) and the share of pixel values the step took outside [0, 1] (counted on the
        device, read once per condition)."""
        from mmix_eval.evaluate.checks import zero_gradient_check
        from mmix_eval.evaluate.passes import Shift, shift_rows

        channels = int(target.test.x.shape[1])
        std = normalisation_std(target.model, channels)
        if std is None:
            raise UserError(
                f"{self.name}: fgsm_official expected a model that normalises its inputs (a 'normalize' "
                f"module with a per-channel std: its ε is in those units), got {type(target.model).__name__} "
                f"without one"
            )
        gradient_pass, sign_of = sign_cache(target, official_loss)
        # condition -> pixel values outside [0, 1] (a device tensor while it runs) and values seen
        outside: dict[str, dict] = {}

        def attack(e, count):
            def make(model, device):
                step_size = (e * std).to(device)

                def step(x, y, i, j):
                    adv = (x + step_size * sign_of(model, x, y, i)).detach()  # no clamp, as the official code
                    count["outside"] = count["outside"] + ((adv < 0) | (adv > 1)).sum()
                    count["seen"] += adv.numel()
                    return adv

                return step

            return make

        shifts = []
        for e in options.eps:
            name, label, settings = official_condition(e, std)
            count = outside.setdefault(name, {"outside": 0, "seen": 0})
            shifts.append(Shift(name, label, attack(e, count), settings, state=count))
        check = lambda model, device: zero_gradient_check(model, target.test, device)
        rows = shift_rows(
            self,
            target,
            common,
            {"attack": "fgsm_official", "loss": "bce_softmax", "clamp": "none", "eps_unit": "normalised"},
            shifts,
            check,
            clean_pass=gradient_pass,
        )
        shares = {name: round(100.0 * float(c["outside"]) / max(1, c["seen"]), 4) for name, c in outside.items()}
        for r in rows:
            if r["condition"] in shares:
                r["settings"]["pixels_outside_01"] = shares[r["condition"]]
        return rows

    def _run_autoattack(self, target, options, common) -> list[dict]:
        """The fgsm evaluator with attack autoattack: one condition per ε with the worst case over the cascade
        (accuracy, NLL, ECE, Brier on the adversarial images, per-image outcomes) and, per attack, the robust
        accuracy left after it (``acc_after``)."""
        import torch

        from mmix_eval.evaluate.checks import zero_gradient_check
        from mmix_eval.evaluate.passes import Shift, shift_rows

        classes = int(target.clean.shape[1]) if target.clean is not None else None
        attacks = AA_QUICK if options.quick else AA_STANDARD
        unit = "/255" if options.norm == "Linf" else ""
        dim = math.prod(target.test.x.shape[1:])
        if options.norm == "L2" and any(e > math.sqrt(dim) for e in options.eps):
            raise UserError(
                f"{self.name}: L2 eps expected at most {math.sqrt(dim):.1f} (the diameter of [0, 1]^{dim}), got {options.eps}"
            )
        # ε -> points still correct after each attack of the cascade, and the number of target classes (the
        # condition's state: journaled with its logits)
        counts: dict[float, dict] = {e: {} for e in options.eps}

        def attack(e):
            def make(model, device):
                with torch.no_grad():
                    c = classes or int(model(target.test.batch(0, 1, device)[0]).shape[1])
                if c < 3:
                    raise UserError(
                        f"{self.name}: autoattack's targeted attacks expected a model of >= 3 classes, got {c}"
                    )
                aa, counts[e]["target_classes"] = make_autoattack(
                    model, options.norm, pixel_eps(e, options.norm), common.seed, device, c
                )
                return lambda x, y, i, j: autoattack_batch(aa, attacks, model, x, y, counts[e])

            return make

        tag = attack_tag(options)
        label = "AutoAttack" + (" (quick: APGD-CE + APGD-T)" if options.quick else "")
        shifts = [
            Shift(
                f"aa{options.norm.lower()}-eps{e:g}",
                f"{label} {options.norm} ε = {e:g}{unit}",
                attack(e),
                {"eps": e, "eps_255": e if options.norm == "Linf" else None, "strength": e},
                state=counts[e],
                per_batch=True,  # each batch's cascade seeds itself (pyautoattack): batches resume independently
            )
            for e in options.eps
        ]
        check = lambda model, device: zero_gradient_check(model, target.test, device)  # masked gradients, as for FGSM
        rows = shift_rows(
            self, target, common, {"attack": tag, "norm": options.norm, "attacks": ",".join(attacks)}, shifts, check
        )
        targets = next((c["target_classes"] for c in counts.values() if "target_classes" in c), None)
        return rows + after_rows(rows, options, attacks, counts, targets, len(target.test))
