"""Evaluation traps, RobustBench-style: randomised forwards, probabilities for logits, zero input gradients,
non-finite logits. Each is a warning in the records and the report (or, for non-finite logits, an error)."""

from __future__ import annotations

import torch

from mmix_eval.errors import UserError
from mmix_eval.evaluate.images import Images

PROBE_IMAGES = 64


def output_checks(model: torch.nn.Module, images: Images, device) -> list[str]:
    """RobustBench-style traps, on the first test images, in eval mode: a forward pass that is not
    deterministic (noise, dropout forced on), and outputs that are probabilities rather than logits."""
    notes = []
    if len(images) == 0:
        return notes
    x, _ = images.batch(0, min(PROBE_IMAGES, len(images)), device)
    with torch.inference_mode():
        a, b = model(x).float(), model(x).float()
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-5 * (1 + float(a.abs().max()))):
        notes.append(
            "model output is randomised (two eval-mode passes over the same images differ): accuracies "
            "vary from run to run and attacks meet a moving target, which overstates robustness"
        )
    if a.ndim == 2 and float(a.min()) >= 0 and float(a.max()) <= 1 and bool(((a.sum(1) - 1).abs() < 1e-3).all()):
        notes.append(
            "model output looks like probabilities (in [0, 1], rows sum to 1), not logits: NLL, ECE and "
            "temperature scaling apply a softmax on top and are wrong, and FGSM gradients are squashed"
        )
    return notes


def zero_gradient_check(model: torch.nn.Module, images: Images, device) -> str | None:
    """AutoAttack's check: input gradients of the loss that are exactly zero (or not finite) mean a
    gradient attack cannot move those images, so its accuracy is not a robustness measure."""
    if len(images) == 0:
        return None
    x, y = images.batch(0, min(PROBE_IMAGES, len(images)), device)
    x.requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(x).float(), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    flat = g.flatten(1)
    zero = int((flat == 0).all(1).sum())
    bad = int((~torch.isfinite(flat)).any(1).sum())
    if zero or bad:
        return (
            f"input gradients are {'zero' if zero else 'not finite'} for {zero or bad} of {x.shape[0]} probe images: "
            f"FGSM/PGD cannot move them (gradient masking?), so this attack's accuracy overstates robustness"
        )
    return None


def check_logits(logits: torch.Tensor) -> None:
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise UserError(f"model output: expected finite logits, got NaN or Inf for {bad} of {logits.shape[0]} images")
