"""Test images as an evaluation holds them: uint8 (or float [0, 1]) tensors, batched to float [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmix_eval.data.mapped import release_pages
from mmix_eval.errors import UserError


@dataclass
class Images:
    """Images as uint8 (N, C, H, W) or float in [0, 1], and int64 labels. ``batches`` yields float [0, 1]."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if self.x.ndim != 4:
            raise UserError(f"images: expected a (N, C, H, W) tensor, got shape {tuple(self.x.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise UserError(
                f"images: expected as many labels as images, got {self.y.shape[0]} labels for {self.x.shape[0]} images"
            )
        if self.x.dtype != torch.uint8:
            if not self.x.is_floating_point():
                raise UserError(f"images: expected uint8 or float images, got {self.x.dtype}")
            lo, hi = float(self.x.min()), float(self.x.max())
            if lo < 0 or hi > 1 or not (np.isfinite(lo) and np.isfinite(hi)):
                raise UserError(
                    f"images: expected pixel values in [0, 1] (models normalise inside), got min {lo:.4g}, max {hi:.4g}"
                )
        self.y = self.y.to(torch.int64)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, i: int, j: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        xb = self.x[i:j].to(device, non_blocking=True)
        xb = xb.to(torch.float32).div_(255.0) if xb.dtype == torch.uint8 else xb.to(torch.float32)
        release_pages(self.x, xb.numel())  # a memory-mapped test set holds only the batches in flight
        return xb, self.y[i:j].to(device, non_blocking=True)
