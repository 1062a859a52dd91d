"""The strong-attack evaluator: AutoAttack by default (or PGD, FGSM) under its own name, so its results (attack.jsonl,
a report section of their own) sit beside the paper's FGSM instead of replacing its records."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmix_eval.evaluate.evaluators.attacks.adversarial import AttackName, WhiteBoxAttack
from mmix_eval.evaluate.evaluators.attacks.fgsm import FGSMOptions


@dataclass(frozen=True)
class AttackOptions(FGSMOptions):
    attack: AttackName = field(
        default="autoattack", metadata={"help": "autoattack (Croce & Hein 2020, pyautoattack), pgd or fgsm"}
    )
    eps: list[float | str] = field(
        default_factory=lambda: [8.0],
        metadata={"help": "epsilons: /255 pixel units for Linf (8 or 8/255), plain L2 norms for L2"},
    )


class Attack(WhiteBoxAttack):
    """The same attacks under their own name (results in attack.jsonl, a report section of their own), AutoAttack
    by default, so a strong attack sits beside the paper's FGSM instead of replacing its records."""

    name = "attack"
    help = "robust accuracy under AutoAttack (default; pyautoattack, the original's iterations), PGD or FGSM"
    Options = AttackOptions
