"""Batched inference over uint8 image tensors: logits without gradients, in eval mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmix_eval.data.augment import to_float


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Logits (N, C) in float32 on the CPU for uint8 images (N, C, H, W)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(to_float(x[i:i + batch_size].to(device, non_blocking=True))).float()
               for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).cpu() if out else torch.zeros(0)


def accuracy_nll(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy (%) and NLL (cross-entropy on logits, never -log of a rounded softmax)."""
    correct = int((logits.argmax(1) == y).sum())
    return {"acc": 100.0 * correct / max(1, len(y)),
            "nll": float(F.cross_entropy(logits, y))}
