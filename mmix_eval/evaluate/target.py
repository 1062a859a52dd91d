"""What an evaluation runs on: a model (from a checkpoint, or any nn.Module) and [0, 1] images."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmix_eval.data import ImageData, load_data
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
            raise UserError(f"images: expected as many labels as images, got {self.y.shape[0]} labels for {self.x.shape[0]} images")
        if self.x.dtype != torch.uint8:
            if not self.x.is_floating_point():
                raise UserError(f"images: expected uint8 or float images, got {self.x.dtype}")
            lo, hi = float(self.x.min()), float(self.x.max())
            if lo < 0 or hi > 1 or not (np.isfinite(lo) and np.isfinite(hi)):
                raise UserError(f"images: expected pixel values in [0, 1] (models normalise inside), got min {lo:.4g}, max {hi:.4g}")
        self.y = self.y.to(torch.int64)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, i: int, j: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        xb = self.x[i:j].to(device, non_blocking=True)
        xb = xb.to(torch.float32).div_(255.0) if xb.dtype == torch.uint8 else xb.to(torch.float32)
        return xb, self.y[i:j].to(device, non_blocking=True)


@dataclass
class Target:
    """One model to evaluate, with the metadata that goes into every record."""

    model: torch.nn.Module
    test: Images
    val: Images | None = None
    run: str = "model"
    base: dict[str, Any] = field(default_factory=dict)  # record columns from the checkpoint
    warnings: list[str] = field(default_factory=list)
    checked: bool = False  # output_checks ran (once per target)


def target_from_module(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = "model",
                       val: tuple[torch.Tensor, torch.Tensor] | None = None) -> Target:
    """Evaluate any nn.Module mapping [0, 1] images to logits, with no checkpoint file."""
    base = {"run": name, "model": type(model).__name__, "data": "tensors"}
    return Target(model=model, test=Images(x, y), val=Images(*val) if val is not None else None, run=name, base=base)


def prepare_model(model: torch.nn.Module, device) -> tuple[torch.nn.Module, list[str]]:
    """Move to the device and switch to eval mode (warning if it arrived in train mode)."""
    notes = []
    if model.training:
        msg = "model was in train mode, switched to eval mode for evaluation"
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)
    return model.to(device).eval(), notes


def setup(target: Target, device, batch_size: int | None) -> tuple[torch.nn.Module, torch.device, int, str | None]:
    """What every evaluator starts with: the device, the model in eval mode, the batch size, the warnings."""
    device = torch.device(device) if device is not None else next(target.model.parameters()).device
    model, notes = prepare_model(target.model, device)
    target.warnings += notes  # kept for every evaluator of this target, not only the first
    if not target.checked:
        target.checked = True
        for msg in output_checks(model, target.test, device):
            warnings.warn(f"{target.run}: {msg}", stacklevel=3)
            target.warnings.append(msg)
    return model, device, fit_batch_size(device, batch_size), "; ".join(target.warnings) or None


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
        notes.append("model output is randomised (two eval-mode passes over the same images differ): accuracies "
                     "vary from run to run and attacks meet a moving target, which overstates robustness")
    if a.ndim == 2 and float(a.min()) >= 0 and float(a.max()) <= 1 and bool(((a.sum(1) - 1).abs() < 1e-3).all()):
        notes.append("model output looks like probabilities (in [0, 1], rows sum to 1), not logits: NLL, ECE and "
                     "temperature scaling apply a softmax on top and are wrong, and FGSM gradients are squashed")
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
        return (f"input gradients are {'zero' if zero else 'not finite'} for {zero or bad} of {x.shape[0]} probe images: "
                f"FGSM/PGD cannot move them (gradient masking?), so this attack's accuracy overstates robustness")
    return None


def shard_batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch of this rank's shard of n images (all n outside torchrun)."""
    from mmix_eval import distributed

    lo, hi = distributed.shard(n)
    return [(i, min(i + batch_size, hi)) for i in range(lo, hi, batch_size)]


def fit_batch_size(device: torch.device, requested: int | None) -> int:
    """The evaluation batch size: as given, else 500 on a CPU and 1000 on a GPU (32x32-sized models)."""
    if requested is not None:
        if requested < 1:
            raise UserError(f"--batch-size: expected an integer >= 1, got {requested}")
        return requested
    return 1000 if device.type == "cuda" else 500


def base_columns(meta: dict, ckpt: Path, run: str) -> dict[str, Any]:
    m = meta.get("method", {})
    return {"run": run, "checkpoint": str(ckpt), "model": meta["model"]["name"], "method": m.get("name"),
            "alpha": m.get("alpha"), "eligible": m.get("eligible"), "loss": m.get("loss"),
            "train_seed": meta.get("train", {}).get("seed"), "data": meta.get("data", {}).get("spec")}


_DATA_CACHE: dict[tuple, ImageData] = {}


def eval_data(meta: dict, data: str | None, root: str | None, limit: int | None, seed: int) -> tuple[Images, Images | None, str]:
    """The test split (seeded subset of ``limit`` images, keyed by the evaluation seed so every checkpoint
    sees the same images) and the checkpoint's own validation split, if it held one out of training."""
    cfg = meta.get("config", {}).get("data", {})
    spec = data or meta.get("data", {}).get("spec") or cfg.get("name")
    if not isinstance(spec, str):
        raise UserError("checkpoint metadata 'data.spec' expected a data set name, got none; pass --data")
    same = data is None or data == meta.get("data", {}).get("spec")
    root = root or cfg.get("root")
    val_size = int(cfg.get("val_size") or 0) if same else 0
    key = (spec, root, cfg.get("train_limit") if same else None, val_size, int(cfg.get("subset_seed") or 0) if same else 0)
    if key not in _DATA_CACHE:
        try:
            _DATA_CACHE[key] = load_data(spec, root, False, key[2], None, val_size, key[4])
        except UserError as e:
            raise UserError(f"{e} (data from the checkpoint's metadata; override with --data/--data-root)") from None
    d = _DATA_CACHE[key]
    x, y = d.test.x, d.test.y
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit: expected an integer >= 1, got {limit}")
        if limit < len(y):
            idx = np.sort(np.random.default_rng([seed, 0x74657374]).permutation(len(y))[:limit])
            x, y = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
    check_shapes(meta, d)
    val = Images(d.val.x, d.val.y) if d.val is not None else None
    return Images(x, y), val, spec


def check_shapes(meta: dict, d: ImageData) -> None:
    kw = meta["model"]["kwargs"]
    if kw.get("num_classes") != d.num_classes:
        raise UserError(f"data '{d.spec}': the checkpoint's head expects {kw.get('num_classes')} classes, "
                        f"the data set has {d.num_classes}")
    if kw.get("in_channels") != d.in_channels:
        raise UserError(f"data '{d.spec}': the checkpoint expects {kw.get('in_channels')} input channels, "
                        f"the data set has {d.in_channels}")
    size = meta.get("data", {}).get("image_size")
    if size is not None and list(size) != list(d.image_size):
        raise UserError(f"data '{d.spec}': the checkpoint expects {size[0]}x{size[1]} images, "
                        f"the data set has {d.image_size[0]}x{d.image_size[1]}")


def load_target(ckpt: str | Path, device, data: str | None = None, root: str | None = None,
                limit: int | None = None, seed: int = 0, run: str | None = None,
                allow_import: bool = False) -> Target:
    from mmix_eval.checkpoint import load_checkpoint

    ckpt = Path(ckpt)
    model, meta = load_checkpoint(ckpt, device, allow_import=allow_import)
    test, val, spec = eval_data(meta, data, root, limit, seed)
    run = run or ckpt.parent.name or ckpt.stem
    base = base_columns(meta, ckpt, run)
    base["data"] = spec
    return Target(model=model, test=test, val=val, run=run, base=base)


def logits_of(model: torch.nn.Module, images: Images, batch_size: int, device, bar=None) -> torch.Tensor:
    """Logits (N, C) in float32 on the CPU; non-finite outputs are an error, not a number.
    Under torchrun each rank predicts its shard of the images and every rank gets all N rows."""
    from mmix_eval import distributed
    from mmix_eval.inference import predict_logits

    lo, hi = distributed.shard(len(images))
    logits = distributed.gather_rows(predict_logits(model, images.x[lo:hi], batch_size, device, bar), len(images))
    check_logits(logits)
    return logits


def check_logits(logits: torch.Tensor) -> None:
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise UserError(f"model output: expected finite logits, got NaN or Inf for {bad} of {logits.shape[0]} images")
