"""Device selection shared by training and evaluation."""

from __future__ import annotations

import torch

from mmix_eval.errors import UserError


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"device: expected auto, cpu, cuda, cuda:N or mps, got {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: expected an available device, got {spec!r} but CUDA is not available here")
    return device
