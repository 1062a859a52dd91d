"""Batched inference over image tensors: logits without gradients, in eval mode. Shared by training
(final metrics) and the evaluators."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmix_eval.data.augment import to_float


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500,
                   device: torch.device | str | None = None, bar=None) -> torch.Tensor:
    """Logits (N, C) in float32 on the CPU for images (N, C, H, W): uint8, or float already in [0, 1].
    ``bar``: a progress bar advanced once per batch."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(device, non_blocking=True)
            out.append(model(to_float(xb) if xb.dtype == torch.uint8 else xb.float()).float())
            if bar is not None:
                bar.update(1)
    finally:
        model.train(was_training)
    return torch.cat(out).cpu() if out else torch.zeros(0)


def accuracy_nll(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy (%) and NLL (cross-entropy on logits, never -log of a rounded softmax)."""
    correct = int((logits.argmax(1) == y).sum())
    return {"acc": 100.0 * correct / max(1, len(y)),
            "nll": float(F.cross_entropy(logits, y))}
