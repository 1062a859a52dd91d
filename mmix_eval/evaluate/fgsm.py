"""White-box FGSM (and PGD) accuracy through torchattacks, ε in /255 pixel units on [0, 1] inputs.

The paper's Table 7 does not state ε; comparing with Madry et al.'s 56.10 implies 8/255. The default grid
is {1, 2, 4, 8}/255. Attacks are built after the model is on its device (torchattacks reads the device at
construction) and run on [0, 1] images: mmix-eval models normalise inside, and Images checks the range,
since torchattacks silently clamps whatever it is given.
"""

from __future__ import annotations

import math
import warnings

import torch
from tqdm.auto import tqdm

from mmix_eval import distributed
from mmix_eval.errors import UserError
from mmix_eval.evaluate.calibration import clean_records
from mmix_eval.evaluate.records import record
from mmix_eval.evaluate.target import check_logits, logits_of, setup, shard_batches, zero_gradient_check

ATTACKS = ("fgsm", "pgd")


def parse_eps(text) -> list[float]:
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise UserError(f"--eps: expected comma-separated numbers in /255 units like 1,2,4,8, got '{text}'") from None
    bad = [v for v in values if not math.isfinite(v) or v < 0]
    if not values or bad:
        raise UserError(f"--eps: expected finite values >= 0 (in /255 pixel units), got {text!r}")
    return values


def make_attack(model, name: str, eps_255: float, pgd_steps: int = 7):
    import torchattacks

    eps = eps_255 / 255.0
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    # PGD-k with step eps/4 and a random start, Madry et al.'s setting for k = 7.
    return torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=pgd_steps, random_start=True)


def evaluate_fgsm(target, eps=(1, 2, 4, 8), attack: str = "fgsm", pgd_steps: int = 7, seed: int = 0,
                  batch_size: int | None = None, device=None, progress: bool = True) -> list[dict]:
    if attack not in ATTACKS:
        raise UserError(f"--attack: expected one of {', '.join(ATTACKS)}, got '{attack}'")
    if attack == "pgd" and (not isinstance(pgd_steps, int) or pgd_steps < 1):
        raise UserError(f"--pgd-steps: expected an integer >= 1, got {pgd_steps!r}")
    eps = parse_eps(eps)
    model, device, bs, warn = setup(target, device, batch_size)
    masked = zero_gradient_check(model, target.test, device)
    if masked:
        warnings.warn(f"{target.run}: {masked}", stacklevel=2)
        warn = "; ".join(filter(None, [warn, masked]))
    images, n = target.test, len(target.test)
    tag = attack if attack == "fgsm" else f"pgd{pgd_steps}"
    base = {**target.base, "evaluator": "fgsm", "n": n, "attack": tag, "eval_seed": seed, "warnings": warn}
    batches = shard_batches(n, bs)
    rows = []
    with tqdm(total=len(batches) * (len(eps) + 1), desc=f"{target.run} {tag}", unit="batch",
              disable=not progress, leave=False) as bar:
        rows += clean_records(base, logits_of(model, images, bs, device, bar), images.y)
        for e in eps:
            atk = make_attack(model, attack, e, pgd_steps)
            correct = 0
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + distributed.rank())  # PGD's random start (seeded per rank)
                for i, j in batches:
                    xb, yb = images.batch(i, j, device)
                    adv = atk(xb, yb)
                    with torch.inference_mode():
                        logits = model(adv)
                    check_logits(logits)
                    correct += int((logits.argmax(1) == yb).sum())
                    bar.update(1)
            correct = distributed.sum_int(correct)
            model.eval()  # torchattacks restores the mode it found; keep eval regardless
            label = f"{'FGSM' if attack == 'fgsm' else f'PGD-{pgd_steps}'} ε = {e:g}/255"
            rows.append(record(base, f"eps{e:g}", "acc", 100.0 * correct / n, label=label, eps_255=e))
    return rows
