"""White-box FGSM (and PGD) accuracy and calibration, ε in /255 pixel units on [0, 1] inputs.

FGSM's gradient sign does not depend on ε, so it is computed once per batch and reused for every ε of the
grid (one forward + backward, then one forward per ε); the images are bitwise those of torchattacks' FGSM
(a test checks it). PGD, iterative, runs through torchattacks once per ε.

The paper's Table 7 does not state ε; comparing with Madry et al.'s 56.10 implies 8/255. The default grid
is {1, 2, 4, 8}/255. Attacks are built after the model is on its device (torchattacks reads the device at
construction) and run on [0, 1] images: mmix-eval models normalise inside, and Images checks the range,
since torchattacks silently clamps whatever it is given. torch loads inside ``run`` (``--help`` stays fast).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

from mmix_eval.evaluate.base import SHIFT_METRICS, Evaluator, OptionError

ATTACKS = ("fgsm", "pgd")


def parse_eps(text) -> list[float]:
    """ε values in /255 pixel units, from a list or a comma-separated string."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise OptionError("eps", f"expected comma-separated numbers in /255 units like 1,2,4,8, got {text!r}") from None
    bad = [v for v in values if not math.isfinite(v) or v < 0]
    if not values or bad:
        raise OptionError("eps", f"expected finite values >= 0 (in /255 pixel units), got {text!r}")
    return values


def input_grad_sign(model, x, y):
    """sign(∂ CE(model(x), y) / ∂x), the mean cross-entropy as torchattacks' FGSM takes it (so the signs,
    and the adversarial images, are bitwise the same). The sign does not depend on ε: one per batch serves
    the whole ε grid."""
    import torch
    import torch.nn.functional as F

    x = x.clone().detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return g.sign()


def fgsm_step(x, sign, eps_255: float):
    """x + ε · sign, clamped to [0, 1]: torchattacks' FGSM image for this ε, given the gradient sign."""
    return (x + (eps_255 / 255.0) * sign).clamp(0, 1).detach()


def make_attack(model, name: str, eps_255: float, pgd_steps: int = 7):
    import torchattacks

    eps = eps_255 / 255.0
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    # PGD-k with step eps/4 and a random start, Madry et al.'s setting for k = 7.
    return torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=pgd_steps, random_start=True)


@dataclass
class FGSMOptions:
    eps: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0],
                             metadata={"help": "epsilons in /255 pixel units"})
    attack: str = field(default="fgsm", metadata={"help": "fgsm or pgd"})
    pgd_steps: int = field(default=7, metadata={"help": "PGD steps (step size ε/4, random start)"})


class FGSM(Evaluator):
    name = "fgsm"
    help = "accuracy and calibration under white-box FGSM (or PGD) through torchattacks"
    Options = FGSMOptions
    metrics = SHIFT_METRICS

    def validate(self, options) -> None:
        if options.attack not in ATTACKS:
            raise OptionError("attack", f"expected one of {', '.join(ATTACKS)}, got '{options.attack}'")
        if isinstance(options.pgd_steps, bool) or not isinstance(options.pgd_steps, int) or options.pgd_steps < 1:
            raise OptionError("pgd_steps", f"expected an integer >= 1, got {options.pgd_steps!r}")
        options.eps = parse_eps(options.eps)

    def run(self, target, options, common) -> list[dict]:
        import torch

        from mmix_eval import distributed
        from mmix_eval.evaluate.checks import zero_gradient_check
        from mmix_eval.evaluate.passes import Shift, shift_rows

        tag = options.attack if options.attack == "fgsm" else f"pgd{options.pgd_steps}"
        name = "FGSM" if options.attack == "fgsm" else f"PGD-{options.pgd_steps}"

        signs: dict[int, torch.Tensor] = {}  # batch start -> gradient sign (int8), computed by the first ε

        def attack(e):
            def make(model, device):
                if options.attack == "fgsm":  # one gradient per batch for the whole ε grid
                    def step(x, y, i, j):
                        if i not in signs:
                            signs[i] = input_grad_sign(model, x, y).to(torch.int8)
                        return fgsm_step(x, signs[i].to(x.dtype), e)
                    return step
                atk = make_attack(model, options.attack, e, options.pgd_steps)  # after the model is on its device
                return lambda x, y, i, j: atk(x, y)
            return make

        @contextmanager
        def seeded():  # PGD's random start, seeded per rank, without touching the caller's RNG
            cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(common.seed + distributed.rank())
                yield

        shifts = [Shift(f"eps{e:g}", f"{name} ε = {e:g}/255", attack(e), {"eps_255": e, "strength": e}, seeded)
                  for e in options.eps]
        check = lambda model, device: zero_gradient_check(model, target.test, device)
        return shift_rows(self, target, common, {"attack": tag}, shifts, check)


def evaluate_fgsm(target, eps=(1, 2, 4, 8), attack: str = "fgsm", pgd_steps: int = 7, seed: int = 0,
                  batch_size: int | None = None, device=None, progress: bool = True, bins: int = 15) -> list[dict]:
    """Python API: the FGSM / PGD evaluator on one target."""
    from mmix_eval.evaluate.base import EvalOptions, run_evaluator

    return run_evaluator(FGSM(), target, {"eps": list(eps) if not isinstance(eps, str) else eps, "attack": attack,
                                          "pgd_steps": pgd_steps},
                         EvalOptions(seed=seed, bins=bins, batch_size=batch_size, device=device, progress=progress))
