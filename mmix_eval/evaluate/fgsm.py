"""White-box FGSM (and PGD) accuracy and calibration through torchattacks, ε in /255 pixel units on [0, 1] inputs.

The paper's Table 7 does not state ε; comparing with Madry et al.'s 56.10 implies 8/255. The default grid
is {1, 2, 4, 8}/255. Attacks are built after the model is on its device (torchattacks reads the device at
construction) and run on [0, 1] images: mmix-eval models normalise inside, and Images checks the range,
since torchattacks silently clamps whatever it is given. torch loads inside ``run`` (``--help`` stays fast).
"""

from __future__ import annotations

import math
import warnings
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
        from tqdm.auto import tqdm

        from mmix_eval import distributed
        from mmix_eval.evaluate.checks import zero_gradient_check
        from mmix_eval.evaluate.metrics import condition_rows
        from mmix_eval.evaluate.passes import batch_logits, clean_logits, setup, shard_batches

        model, device, bs, warn = setup(target, common.device, common.batch_size)
        masked = zero_gradient_check(model, target.test, device)
        if masked:
            warnings.warn(f"{target.run}: {masked}", stacklevel=2)
            warn = "; ".join(filter(None, [warn, masked]))
        images, n, bins = target.test, len(target.test), common.bins
        tag = options.attack if options.attack == "fgsm" else f"pgd{options.pgd_steps}"
        base = {**target.base, "evaluator": self.name, "n": n, "eval_seed": common.seed, "warnings": warn,
                "settings": {"attack": tag}}
        batches = shard_batches(n, bs)
        with tqdm(total=len(batches) * (len(options.eps) + 1), desc=f"{target.run} {tag}", unit="batch",
                  disable=not common.progress, leave=False) as bar:
            clean = clean_logits(target, bs, device, bar)
            rows = condition_rows(base, "clean", clean, images.y, bins, "Clean test images")
            clean_acc = rows[0]["value"]
            for e in options.eps:
                atk = make_attack(model, options.attack, e, options.pgd_steps)
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(common.seed + distributed.rank())  # PGD's random start (seeded per rank)
                    logits = batch_logits(model, images, batches, device, lambda xb, yb, i, j: atk(xb, yb), bar)
                model.eval()  # torchattacks restores the mode it found; keep eval regardless
                label = f"{'FGSM' if options.attack == 'fgsm' else f'PGD-{options.pgd_steps}'} ε = {e:g}/255"
                rows += condition_rows(base, f"eps{e:g}", logits, images.y, bins, label, clean_acc,
                                       eps_255=e, strength=e)
        return rows


def evaluate_fgsm(target, eps=(1, 2, 4, 8), attack: str = "fgsm", pgd_steps: int = 7, seed: int = 0,
                  batch_size: int | None = None, device=None, progress: bool = True, bins: int = 15) -> list[dict]:
    """Python API: the FGSM / PGD evaluator on one target."""
    from mmix_eval.evaluate.base import EvalOptions, run_evaluator

    return run_evaluator(FGSM(), target, {"eps": list(eps) if not isinstance(eps, str) else eps, "attack": attack,
                                          "pgd_steps": pgd_steps},
                         EvalOptions(seed=seed, bins=bins, batch_size=batch_size, device=device, progress=progress))
