"""The attacks' computations on one batch: the input-gradient sign (one per batch for a whole ε grid), the FGSM
step, the official code's loss and units, PGD through torchattacks, AutoAttack's cascade through pyautoattack.
torch loads inside each function."""

from __future__ import annotations


def input_grad_sign(model, x, y, with_logits: bool = False, loss=None):
    """sign(∂ loss(model(x), y) / ∂x), the loss by default the mean cross-entropy as torchattacks' FGSM takes
    it (so the signs, and the adversarial images, are bitwise the same). The sign does not depend on ε: one per
    batch serves the whole ε grid. ``with_logits``: also the forward's logits (float32, detached), the clean
    logits the evaluation needs anyway: (sign, logits)."""
    import torch
    import torch.nn.functional as F

    x = x.clone().detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (g,) = torch.autograd.grad((loss or F.cross_entropy)(logits, y), x)
    return (g.sign(), logits.detach().float()) if with_logits else g.sign()


def official_loss(logits, y):
    """The official code's FGSM loss (``supervised/attacks.py``: ``BCELoss()(Softmax()(pred),
    to_one_hot(target))``): BCE of the softmax against the one-hot label, averaged over batch × classes."""
    import torch.nn.functional as F

    return F.binary_cross_entropy(F.softmax(logits, dim=1), F.one_hot(y, logits.shape[1]).to(logits.dtype))


def sign_cache(target, loss=None):
    """One input-gradient sign per batch (int8), shared by the whole ε grid: returns (clean_pass, sign_of).
    ``clean_pass(model, device, batches, bar)`` takes every batch's gradient and returns the forwards' logits,
    the clean logits (see passes.clean_logits); ``sign_of(model, x, y, i)`` gives batch i's sign, taking the
    gradient there when the clean logits came from elsewhere."""
    import torch

    signs: dict[int, torch.Tensor] = {}  # batch start -> gradient sign

    def clean_pass(model, device, batches, bar):
        out = []
        for i, j in batches:
            x, y = target.test.batch(i, j, device)
            sign, logits = input_grad_sign(model, x, y, with_logits=True, loss=loss)
            signs[i] = sign.to(torch.int8)
            out.append(logits)
            if bar is not None:
                bar.update(1)
        return torch.cat(out).cpu() if out else torch.zeros(0)

    def sign_of(model, x, y, i):
        if i not in signs:
            signs[i] = input_grad_sign(model, x, y, loss=loss).to(torch.int8)
        return signs[i].to(x.dtype)

    return clean_pass, sign_of


def normalisation_std(model, channels: int):
    """The per-channel std a model normalises its [0, 1] inputs by (its ``normalize`` module), as a tensor
    (1, C, 1, 1); the official FGSM's ε is in these units. None for a model that does not say."""
    norm = getattr(model, "normalize", None)
    std = getattr(norm, "std", None)
    if std is None or std.numel() != channels:
        return None
    return std.detach().reshape(1, channels, 1, 1).float()


def pixel_eps(eps: float, norm: str = "Linf") -> float:
    """ε on [0, 1] images: a Linf ε is given in /255 pixel units (the one place it is divided), an L2 one as is."""
    return eps / 255.0 if norm == "Linf" else eps


def fgsm_step(x, sign, eps_255: float):
    """x + ε · sign, clamped to [0, 1]: torchattacks' FGSM image for this ε, given the gradient sign."""
    return (x + pixel_eps(eps_255) * sign).clamp(0, 1).detach()


def make_attack(model, name: str, eps_255: float, pgd_steps: int = 7):
    import torchattacks

    eps = pixel_eps(eps_255)
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    # PGD-k with step eps/4 and a random start, Madry et al.'s setting for k = 7.
    return torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=pgd_steps, random_start=True)


def autoattack_batch(aa, attacks, model, x, y, counts: dict):
    """AutoAttack's worst case over ``attacks`` on one batch: each attack runs on the points every earlier one
    left correct (points wrong at the start stay as they are). ``counts[a]`` += points still correct after a."""
    import torch

    with torch.no_grad():
        robust = model(x).argmax(1) == y
    x_adv = x.clone()
    for a in attacks:
        idx = robust.nonzero().flatten()
        if len(idx):
            xs, ys = x[idx], y[idx]
            if a == "apgd-ce":
                aa.apgd.loss, aa.apgd.seed = "ce", aa.get_seed()
                adv = aa.apgd.perturb(xs, ys)
            elif a == "apgd-t":
                aa.apgd_targeted.seed = aa.get_seed()
                adv = aa.apgd_targeted.perturb(xs, ys)
            elif a == "fab-t":
                aa.fab.targeted, aa.fab.n_restarts, aa.fab.seed = True, 1, aa.get_seed()
                adv = aa.fab.perturb(xs, ys)
            else:
                aa.square.seed = aa.get_seed()
                adv = aa.square.perturb(xs, ys)
            with torch.no_grad():
                fooled = model(adv).argmax(1) != ys
            x_adv[idx[fooled]] = adv[fooled].detach()
            robust[idx[fooled]] = False
        counts[a] = counts.get(a, 0) + int(robust.sum())
    return x_adv.detach()


def make_autoattack(model, norm: str, eps: float, seed: int, device, classes: int):
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm=norm, eps=eps, version="standard", device=device, seed=seed)
    aa.verbose = False
    targets = min(9, classes - 1)  # the standard 9 target classes need 10; fewer classes, fewer targets (recorded)
    aa.apgd_targeted.n_target_classes = targets
    aa.fab.n_target_classes = targets
    return aa, targets
