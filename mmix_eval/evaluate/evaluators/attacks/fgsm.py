"""The paper's FGSM evaluator (Table 7): white-box FGSM by default, ε in /255 pixel units on [0, 1] inputs, and,
by its ``attack`` option, the official code's FGSM, PGD or AutoAttack. The attacks are in ``adversarial.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmix_eval.evaluate.base import EvalOptions, run_evaluator
from mmix_eval.evaluate.evaluators.attacks.adversarial import AttackName, EpsUnit, Norm, WhiteBoxAttack


@dataclass(frozen=True)
class FGSMOptions:
    eps: list[float | str] = field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0],
        metadata={
            "help": "epsilons: /255 pixel units for Linf (1,2,4,8 or 8/255; a bare value below 1 is refused as "
            "ambiguous), plain L2 norms for L2; for fgsm_official the checkpoint's normalised units (the "
            "official code's 0.01,0.03, by default: ε·std per channel in pixels, 0.03 ≈ 1.9/255 on CIFAR, "
            "not 7.65/255)"
        },
    )
    eps_unit: EpsUnit = field(
        default="255",
        metadata={
            "help": "unit of bare Linf epsilons: 255 (/255 pixel units) or fraction (of the [0, 1] range: 0.1 = 25.5/255)"
        },
    )
    attack: AttackName = field(
        default="fgsm",
        metadata={
            "help": "fgsm (pixel ε, CE, clamped), fgsm_official (the official code's: ε in normalised units, default "
            "0.01,0.03, BCE of softmax, no clamp), pgd or autoattack (Croce & Hein 2020, pyautoattack)"
        },
    )
    pgd_steps: int = field(default=7, metadata={"help": "PGD steps (step size ε/4, random start; at most 10,000)"})
    norm: Norm = field(default="Linf", metadata={"help": "Linf, or L2 (autoattack only)"})
    quick: bool = field(default=False, metadata={"help": "autoattack: APGD-CE and APGD-T only (cheaper, weaker)"})


class FGSM(WhiteBoxAttack):
    name = "fgsm"
    help = "accuracy and calibration under white-box FGSM or PGD (torchattacks), or AutoAttack (pyautoattack)"
    Options = FGSMOptions


def evaluate_fgsm(
    target,
    eps=(1, 2, 4, 8),
    attack: str = "fgsm",
    pgd_steps: int = 7,
    seed: int = 0,
    batch_size: int | None = None,
    device=None,
    progress: bool = True,
    bins: int = 15,
) -> list[dict]:
    """Python API: the FGSM / PGD evaluator on one target."""
    return run_evaluator(
        FGSM(),
        target,
        {"eps": list(eps) if not isinstance(eps, str) else eps, "attack": attack, "pgd_steps": pgd_steps},
        EvalOptions(seed=seed, bins=bins, batch_size=batch_size, device=device, progress=progress),
    )
