"""Batched inference over image tensors: logits without gradients, in eval mode. Shared by training
(final metrics) and the evaluators."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmix_eval.data.augment import to_float
from mmix_eval.data.mapped import release_pages


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    x: torch.Tensor,
    batch_size: int = 500,
    device: torch.device | str | None = None,
    bar=None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits (N, C) in float32 on the CPU for images (N, C, H, W): uint8, or float already in [0, 1].
    ``bar``: a progress bar advanced once per batch. ``precision`` "bf16": forwards under bf16 autocast
    (a GPU evaluating a checkpoint trained so). One host sync, at the end."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        # One logits tensor for all N, filled batch by batch: no small per-batch output outlives its batch, so
        # glibc reuses each batch's freed buffers instead of leaving holes below the kept outputs (kept, the
        # process grew by about one float copy of the data set on a CPU: 1.8 GB at 40,000 64x64 images).
        out = None
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device, non_blocking=True)
            with autocast(device, precision):
                z = model(to_float(xb) if xb.dtype == torch.uint8 else xb.float()).float()
            if out is None:
                out = torch.empty((x.shape[0], *z.shape[1:]), dtype=torch.float32, device=z.device)
            out[i : i + len(z)] = z
            del z
            release_pages(x, xb.nbytes)  # a memory-mapped test set: drop the pages read once enough were
            if bar is not None:
                bar.update(1)
    finally:
        model.train(was_training)
    return out.cpu() if out is not None else torch.zeros(0)


def autocast(device, precision: str):
    """bf16 autocast on the device for precision "bf16", else nothing (fp32)."""
    from contextlib import nullcontext

    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def accuracy_nll(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy (%) and NLL (cross-entropy on logits, never -log of a rounded softmax)."""
    correct = int((logits.argmax(1) == y).sum())
    return {"acc": 100.0 * correct / max(1, len(y)), "nll": float(F.cross_entropy(logits, y))}
