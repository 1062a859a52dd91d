"""Batched augmentation on uint8 tensors: random crop with zero padding and horizontal flip.

One gather per batch, on the batch's device; no per-image Python loop.
"""

from __future__ import annotations

import torch


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by (dy, dx) ~ U{-padding..padding}² with zero fill, then flip half of them.

    Equivalent to torchvision's RandomCrop(size, padding) + RandomHorizontalFlip(0.5) per image.
    Random numbers come from ``gen`` (a CPU generator) so that a resumed run replays them.
    """
    b, _, h, w = x.shape
    if padding > 0:
        offs = torch.randint(0, 2 * padding + 1, (2, b), generator=gen).to(x.device, non_blocking=True)
        xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        rows = (offs[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B,1,H,1)
        cols = (offs[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B,1,1,W)
        bidx = torch.arange(b, device=x.device)[:, None, None, None]
        cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[bidx, cidx, rows, cols]
    if flip:
        mask = (torch.rand(b, generator=gen) < 0.5).to(x.device, non_blocking=True)[:, None, None, None]
        x = torch.where(mask, x.flip(3), x)
    return x


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return x.to(torch.float32).div_(255.0)
