"""What every evaluator starts with (device, eval mode, batch size, trap checks) and the batched passes it
shares: this rank's batches of the test set, logits of a set of images, the clean pass (once per target)."""

from __future__ import annotations

import warnings

import torch

from mmix_eval.evaluate.base import OptionError
from mmix_eval.evaluate.checks import check_logits, output_checks
from mmix_eval.evaluate.images import Images


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
    device = torch.device(device) if device not in (None, "auto") else next(target.model.parameters()).device
    model, notes = prepare_model(target.model, device)
    target.warnings += notes  # kept for every evaluator of this target, not only the first
    if not target.checked:
        target.checked = True
        for msg in output_checks(model, target.test, device):
            warnings.warn(f"{target.run}: {msg}", stacklevel=3)
            target.warnings.append(msg)
    return model, device, fit_batch_size(device, batch_size), "; ".join(target.warnings) or None


def shard_batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch of this rank's shard of n images (all n outside torchrun)."""
    from mmix_eval import distributed

    lo, hi = distributed.shard(n)
    return [(i, min(i + batch_size, hi)) for i in range(lo, hi, batch_size)]


def fit_batch_size(device: torch.device, requested: int | None) -> int:
    """The evaluation batch size: as given, else 500 on a CPU and 1000 on a GPU (32x32-sized models)."""
    if requested is not None:
        if requested < 1:
            raise OptionError("batch_size", f"expected an integer >= 1, got {requested}")
        return requested
    return 1000 if device.type == "cuda" else 500


def logits_of(model: torch.nn.Module, images: Images, batch_size: int, device, bar=None) -> torch.Tensor:
    """Logits (N, C) in float32 on the CPU; non-finite outputs are an error, not a number.
    Under torchrun each rank predicts its shard of the images and every rank gets all N rows."""
    from mmix_eval import distributed
    from mmix_eval.inference import predict_logits

    lo, hi = distributed.shard(len(images))
    logits = distributed.gather_rows(predict_logits(model, images.x[lo:hi], batch_size, device, bar), len(images))
    check_logits(logits)
    return logits


def clean_logits(target, batch_size: int, device, bar=None) -> torch.Tensor:
    """The clean test logits of ``target``, computed once and shared by every evaluator of one
    ``evaluate`` call (the bar is advanced by the batches of the first pass, or skipped past when cached)."""
    if target.clean is None:
        target.clean = logits_of(target.model, target.test, batch_size, device, bar)
    elif bar is not None:
        bar.update(len(shard_batches(len(target.test), batch_size)))
    return target.clean


def batch_logits(model, images: Images, batches, device, transform, bar=None) -> torch.Tensor:
    """Logits (N, C) on the CPU of ``model(transform(x, i, j))`` over this rank's ``batches`` of ``images``,
    gathered over ranks: the loop every shift evaluator runs once per condition."""
    from mmix_eval import distributed

    out = []
    for i, j in batches:
        xb, yb = images.batch(i, j, device)
        xt = transform(xb, yb, i, j)  # outside inference mode: an attack needs gradients
        with torch.inference_mode():
            logits = model(xt).float()
        check_logits(logits)
        out.append(logits.detach().cpu())
        if bar is not None:
            bar.update(1)
    local = torch.cat(out) if out else torch.zeros(0)
    return distributed.gather_rows(local, len(images))
