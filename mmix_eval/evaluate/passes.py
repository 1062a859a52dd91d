"""What every evaluator starts with (device, eval mode, batch size, trap checks) and the batched passes it
shares: this rank's batches of the test set, logits of a set of images, the clean pass (once per target)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from mmix_eval.evaluate.base import OptionError
from mmix_eval.evaluate.calibrate import conformal_thresholds, fitted_calibration
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


def setup(target, device, batch_size: int | None) -> tuple[torch.nn.Module, torch.device, int, str | None]:
    """What every evaluator starts with: the device, the model in eval mode, the batch size, the warnings."""
    if device in (None, "auto"):  # where the model is (a model without parameters or buffers: the CPU)
        held = next(iter([*target.model.parameters(), *target.model.buffers()]), None)
        device = held.device if held is not None else torch.device("cpu")
    device = torch.device(device)
    model, notes = prepare_model(target.model, device)
    if target.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
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


def logits_of(
    model: torch.nn.Module, images: Images, batch_size: int, device, bar=None, precision: str = "fp32"
) -> torch.Tensor:
    """Logits (N, C) in float32 on the CPU; non-finite outputs are an error, not a number.
    Under torchrun each rank predicts its shard of the images and every rank gets all N rows."""
    from mmix_eval import distributed
    from mmix_eval.inference import predict_logits

    lo, hi = distributed.shard(len(images))
    return gathered(predict_logits(model, images.x[lo:hi], batch_size, device, bar, precision), len(images))


def gathered(local: torch.Tensor, n: int) -> torch.Tensor:
    """All n rows of logits from this rank's ``local`` ones (gathered under torchrun), checked finite."""
    from mmix_eval import distributed

    logits = distributed.gather_rows(local, n)
    check_logits(logits)
    return logits


def clean_logits(target, batch_size: int, device, bar=None, by_product: Callable | None = None) -> torch.Tensor:
    """The clean test logits of ``target``, computed once and shared by every evaluator of one
    ``evaluate`` call (the bar is advanced by the batches of the first pass, or skipped past when cached).
    ``by_product(batches, bar)``: a pass the evaluator makes anyway whose forwards give this rank's clean
    logits (FGSM's input-gradient pass), used instead of a pass of their own when nothing is cached and the
    target evaluates in fp32 (under bf16 the clean logits come from autocast forwards, the gradient's do not)."""
    if target.clean is None and by_product is not None and target.precision == "fp32":
        target.clean = gathered(by_product(shard_batches(len(target.test), batch_size), bar), len(target.test))
    elif target.clean is None:
        target.clean = logits_of(target.model, target.test, batch_size, device, bar, target.precision)
    elif bar is not None:
        bar.update(len(shard_batches(len(target.test), batch_size)))
    return target.clean


def batch_logits(model, images: Images, batches, device, transform, bar=None, precision: str = "fp32") -> torch.Tensor:
    """Logits (N, C) on the CPU of ``model(transform(x, y, i, j))`` over this rank's ``batches`` of
    ``images``, gathered over ranks: the loop every shift evaluator runs once per condition. The logits stay
    on the device until the condition is done: one host sync per condition, not per batch."""
    from mmix_eval.inference import autocast

    out, lo = None, batches[0][0] if batches else 0
    for i, j in batches:
        xb, yb = images.batch(i, j, device)
        xt = transform(xb, yb, i, j)  # outside inference mode: an attack needs gradients (in fp32)
        with torch.inference_mode(), autocast(device, precision):
            z = model(xt).float()
        if out is None:  # one tensor for the shard, filled in place: see inference.predict_logits
            out = torch.empty((batches[-1][1] - lo, *z.shape[1:]), dtype=torch.float32, device=z.device)
        out[i - lo : j - lo] = z
        del xb, xt, z
        if bar is not None:
            bar.update(1)
    return gathered(out.cpu() if out is not None else torch.zeros(0), len(images))


def target_calibration(target, calibrator: str, model, device, batch_size: int):
    """The target's calibrator, fitted on its held-out images on first use (``evaluate.calibrate``)."""
    return fitted_calibration(
        target, calibrator, lambda images: logits_of(model, images, batch_size, device, None, target.precision)
    )


@dataclass
class Shift:
    """One condition of a shift evaluator. ``make(model, device)`` returns the batch transform
    ``(x, y, i, j) -> images`` (i:j are the batch's positions in the test set, for per-image parameters);
    ``context`` wraps the condition's whole pass (an attack's seeded RNG)."""

    name: str
    label: str
    make: Callable
    settings: dict = field(default_factory=dict)
    context: Callable[[], AbstractContextManager] = nullcontext
    # numbers the transform keeps beside the logits (an AutoAttack cascade's counts), JSON values or device scalars:
    # journaled with the logits and restored into this dict when the condition is read back (``evaluate.journal``)
    state: dict | None = None
    # a long condition (an AutoAttack ε: minutes per batch on a GPU) journaled batch by batch, so a killed run resumes
    # at its first missing batch; for a transform whose batches do not depend on one another (each seeds itself)
    per_batch: bool = False


def shift_rows(
    evaluator, target, common, settings: dict, shifts: list[Shift], check=None, clean_pass: Callable | None = None
) -> list[dict]:
    """What every shift evaluator does: set up, take the shared clean pass, then for each condition one
    batched pass of ``model(transform(x))`` and its rows (accuracy, relative accuracy, NLL, ECE, Brier,
    per-image outcomes). ``check(model, device)`` may return one more warning for the records.
    ``clean_pass(model, device, batches, bar)``: a pass whose forwards give the clean logits as a by-product
    (see ``clean_logits``); this rank's logits (N_rank, C) on the CPU."""
    from tqdm.auto import tqdm

    from mmix_eval.evaluate.metrics import condition_rows

    model, device, bs, warn = setup(target, common.device, common.batch_size)
    calibration = target_calibration(target, common.calibrator, model, device, bs)
    conformal = conformal_thresholds(target, calibration, common.conformal_alpha, common.seed)
    extra = check(model, device) if check is not None else None
    if extra:
        warnings.warn(f"{target.run}: {extra}", stacklevel=3)
    warn = "; ".join(filter(None, [warn, extra, target.calibration_note]))
    images, bins = target.test, common.bins
    base = {
        **target.base,
        "evaluator": evaluator.name,
        "n": len(images),
        "eval_seed": common.seed,
        "warnings": warn,
        "settings": {**target.settings, **settings},
    }
    batches = shard_batches(len(images), bs)
    with tqdm(
        total=len(batches) * (len(shifts) + 1),
        desc=f"{target.run} {evaluator.name}",
        unit="batch",
        disable=not common.progress,
        leave=False,
    ) as bar:
        by_product = (lambda batches, bar: clean_pass(model, device, batches, bar)) if clean_pass is not None else None
        journal = target.journal
        if target.clean is None and journal is not None and (got := journal.get("clean", count=False)) is not None:
            target.clean = got[0]  # the clean logits this evaluator's killed run used, bit for bit
        clean = clean_logits(target, bs, device, bar, by_product)
        if journal is not None and not journal.has("clean"):
            journal.put("clean", clean, count=False)
        rows = condition_rows(
            base,
            "clean",
            clean,
            images.y,
            bins,
            "Clean test images",
            calibration=calibration,
            conformal=conformal,
        )
        clean_acc = rows[0]["value"]
        for s in shifts:
            logits = _condition_logits(s, target, model, images, batches, device, bar)
            rows += condition_rows(
                base, s.name, logits, images.y, bins, s.label, clean_acc, calibration, conformal, **s.settings
            )
    return rows


def _condition_logits(s: Shift, target, model, images: Images, batches, device, bar) -> torch.Tensor:
    """One condition's logits: read back from the target's journal when a killed run left them (its state restored,
    its batches skipped on the bar), else one batched pass, journaled as soon as it ends."""
    from mmix_eval.evaluate.journal import plain_state

    journal = target.journal
    got = journal.get(s.name) if journal is not None else None
    if got is not None:
        if s.state is not None:
            s.state.update(got[1])
        if bar is not None:
            bar.update(len(batches))
        return got[0]
    if journal is not None and s.per_batch:
        logits = _batch_by_batch(s, target, model, images, batches, device, bar)
    else:
        with s.context():
            logits = batch_logits(model, images, batches, device, s.make(model, device), bar, target.precision)
    model.eval()  # whatever a transform did to the mode (torchattacks restores the one it found)
    if journal is not None:
        journal.put(s.name, logits, plain_state(s.state) if s.state else None)
        journal.drop(f"{s.name}#batches")
    return logits


def _batch_by_batch(s: Shift, target, model, images: Images, batches, device, bar) -> torch.Tensor:
    """A long condition's pass with its rows journaled after every batch (with the condition's state as of that
    batch): a killed run resumes at the first batch missing. Outside torchrun only (the journal is off under it)."""
    from mmix_eval.evaluate.journal import plain_state

    journal, key = target.journal, f"{s.name}#batches"
    got = journal.get(key, count=False)
    chunks = [got[0]] if got is not None else []
    done = chunks[0].shape[0] if chunks else 0
    if got is not None and s.state is not None:
        s.state.update(got[1])
    todo = [(i, j) for i, j in batches if i >= done]
    if bar is not None:
        bar.update(len(batches) - len(todo))
    with s.context():
        transform = s.make(model, device) if todo else None
        for i, j in todo:
            chunks.append(batch_logits(model, images, [(i, j)], device, transform, bar, target.precision))
            journal.put(key, torch.cat(chunks), plain_state(s.state) if s.state else None, count=False)
    return torch.cat(chunks) if chunks else torch.zeros(0)
