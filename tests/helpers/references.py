"""Helpers only the tests use: the top-label confidences and correctness of logits, netcal's ECE and MCE together,
and whether a tensor is one of mmix-eval's memory-mapped ones."""

from __future__ import annotations

import numpy as np
import torch

from mmix_eval.data import mapped
from mmix_eval.evaluate.metrics import netcal_measure


def top_label(logits: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    p = torch.softmax(logits.double(), 1)
    conf, pred = p.max(1)
    return conf.numpy(), (pred == y).numpy().astype(np.int64)


def netcal_ece_mce(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[float, float]:
    return netcal_measure("ECE", conf, correct, bins), netcal_measure("MCE", conf, correct, bins)


def is_mapped(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.untyped_storage().data_ptr() in mapped._MAPS
