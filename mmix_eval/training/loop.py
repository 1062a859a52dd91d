"""The training loop: one loop for every method, data resident in memory (on the GPU when training there).

``train`` reads top to bottom: checks (``preflight``), the run folder and state (``state``), then setup,
restore, one ``run_epoch`` and ``end_epoch`` per epoch, and ``finish``, around one ``RunState``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mmix_eval import distributed
from mmix_eval.checkpoint import save_checkpoint
from mmix_eval.config import Config
from mmix_eval.data import ImageData
from mmix_eval.data.augment import random_crop_flip, to_float
from mmix_eval.data.mapped import release_pages
from mmix_eval.errors import UserError
from mmix_eval.inference import accuracy_nll, predict_logits
from mmix_eval.io import atomic_write_text
from mmix_eval.methods import Method
from mmix_eval.schedule import lr_factor
from mmix_eval.training.metadata import run_metadata
from mmix_eval.training.preflight import Prepared, prepare
from mmix_eval.training.state import (
    STATE_FORMAT,
    STATE_VERSION,
    check_run_folder,
    open_run_folder,
    resumable_state,
    rng_state,
    save_state,
    seed_everything,
    set_rng_state,
)

REFRESH = 10  # steps between host syncs (progress bar, non-finite check)


class TrainingError(UserError):
    """Training could not go on (a non-finite loss); the last good state stays on disk."""

    exit_code = 1


def train(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: ImageData | None = None,
    stop_after_epoch: int | None = None,
) -> dict[str, Any] | None:
    """Train one run into ``out``. Returns the checkpoint metadata, or None if stopped early on request.

    ``stop_after_epoch`` ends the process's work after that epoch's state is saved, as a kill would
    (used to test that resuming gives bitwise the same weights).
    """
    out, t_run = Path(out), time.perf_counter()  # wall time of the whole run: data, setup, epochs, saves, test pass
    p = prepare(cfg, data)  # everything that can fail on bad input fails here, before any write
    # Under torchrun rank 0 alone judges and writes the run folder; the others learn its verdict.
    resuming = distributed.agree(lambda: check_run_folder(out, cfg, resume, overwrite))
    if distributed.is_main():
        open_run_folder(out, cfg, resuming)
    s = setup(p, out)
    if resuming:
        restore(s, resumable_state(out))
    begin(s, t_run, progress)
    for epoch in range(s.start_epoch, cfg.train.epochs):
        loss_sum, epoch_s = run_epoch(s, epoch)
        end_epoch(s, epoch, loss_sum, epoch_s)
        if stop_after_epoch is not None and stop_after_epoch <= epoch + 1 < cfg.train.epochs:
            s.bar.close()
            distributed.barrier()
            return None
    s.bar.close()
    return finish(s)


@dataclass
class RunState:
    """What one process holds while it trains a run."""

    p: Prepared
    out: Path
    model: torch.nn.Module  # the prepared model on its device (SyncBatchNorm converted under torchrun)
    stepper: torch.nn.Module  # the method's step as a module (wrapped in DDP under torchrun)
    opt: torch.optim.Optimizer
    scaler: Any  # a GradScaler for fp16, else None
    autocast: Callable
    amp_mode: str
    channels_last: bool
    sync_bn: bool
    data_gen: torch.Generator  # shuffling and augmentation
    mix_rng: np.random.Generator  # the method's mixing draws
    world: int = 1
    main: bool = True
    start_epoch: int = 0
    step: int = 0
    lr: float = 0.0
    elapsed: float = 0.0  # seconds in epochs
    log: list = field(default_factory=list)
    times: dict = field(default_factory=lambda: {"setup": 0.0, "validation": 0.0, "saves": 0.0, "test_pass": 0.0})
    x_all: torch.Tensor | None = None  # uint8 training images, resident on the device
    y_all: torch.Tensor | None = None
    n_batches: int = 1
    flip: bool = False
    sched: dict = field(default_factory=dict)
    bar: Any = None
    progress: bool = True

    @property
    def cfg(self) -> Config:
        return self.p.cfg


class _Step(torch.nn.Module):
    """The method's training step as a module's forward, so DistributedDataParallel sees every forward pass
    (mixed or not) and all-reduces the gradients of the backward that follows."""

    def __init__(self, model: torch.nn.Module, method: Method):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x, y, rng):
        out = self.method.step(self.model, x, y, rng)
        return out.loss


def setup(p: Prepared, out: Path) -> RunState:
    """Seed every stream, then put the model on its device with its optimizer, mixed precision, compilation and,
    under torchrun, SyncBatchNorm and DDP (in this order: resuming depends on it)."""
    t, device, world = p.cfg.train, p.device, distributed.world_size()
    data_gen, mix_rng = seed_everything(t.seed)
    channels_last = t.channels_last if t.channels_last is not None else device.type == "cuda"
    model = p.model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    opt = torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov
    )
    amp_mode, autocast, scaler = _amp(p.cfg, device)
    if t.compile:
        _compile(model)
    sync_bn = bool(t.sync_bn and world > 1)
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    stepper: torch.nn.Module = _Step(model, p.method)
    if world > 1:
        stepper = DistributedDataParallel(stepper, device_ids=[device.index] if device.type == "cuda" else None)
    return RunState(
        p,
        out,
        model,
        stepper,
        opt,
        scaler,
        autocast,
        amp_mode,
        channels_last,
        sync_bn,
        data_gen,
        mix_rng,
        world=world,
        main=distributed.is_main(),
    )


def restore(s: RunState, state: dict | None) -> None:
    """Weights, optimizer, scaler, every RNG, counters and times from a saved state (nothing for None)."""
    if state is None:
        return
    s.model.load_state_dict(state["model"])
    s.opt.load_state_dict(state["optimizer"])
    if s.scaler is not None and state.get("scaler"):
        s.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], s.data_gen, s.mix_rng)
    s.start_epoch, s.step, s.log, s.elapsed = state["epoch"], state["step"], list(state["log"]), state["elapsed_s"]
    epochs = s.cfg.train.epochs
    if s.start_epoch >= epochs and (s.out / "model.safetensors").exists() and s.main:
        print(
            f"{s.out}: already finished ({s.start_epoch} of {epochs} epochs); nothing to train, "
            f"the checkpoint is written again from the last state",
            file=sys.stderr,
        )
    s.times.update({k: float(v) for k, v in (state.get("times_s") or {}).items() if k in s.times})
    if int(state.get("world_size", 1)) != s.world:
        warnings.warn(
            f"resuming a run saved by {state.get('world_size', 1)} process(es) with {s.world}: "
            f"the remaining epochs pair images within different slices",
            stacklevel=3,
        )


def begin(s: RunState, t_run: float, progress: bool) -> None:
    """The training images onto the device (uint8: decoded once, augmented per batch), the schedule, the bar."""
    t, data = s.cfg.train, s.p.data
    s.x_all, s.y_all = data.train.x.to(s.p.device), data.train.y.to(s.p.device)
    s.times["setup"] += time.perf_counter() - t_run  # this process's: data, model, state; kept across a resume
    s.n_batches = max(1, len(data.train) // t.batch_size)  # drop the last partial batch (one batch of n if n < bs)
    s.flip = data.flip if t.flip is None else t.flip
    s.sched = dict(
        schedule=t.schedule,
        steps_per_epoch=s.n_batches,
        epochs=t.epochs,
        milestones=t.milestones,
        gamma=t.gamma,
        warmup_epochs=t.warmup_epochs,
    )
    s.progress = progress and s.main
    s.bar = tqdm(
        total=t.epochs * s.n_batches,
        initial=s.start_epoch * s.n_batches,
        disable=not s.progress,
        unit="step",
        dynamic_ncols=True,
        desc=f"{s.p.method.name}",
    )


def run_epoch(s: RunState, epoch: int) -> tuple[torch.Tensor, float]:
    """One pass over the shuffled training images. Returns the summed loss (on the device) and the seconds.
    Non-finite losses are checked without a host sync per step: the first bad batch is kept on the device."""
    t, device = s.cfg.train, s.p.device
    s.model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(len(s.x_all), generator=s.data_gen).to(device)
    loss_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    batch_no = torch.zeros((), dtype=torch.long, device=device)
    for b in range(s.n_batches):
        xb, yb = _batch(s, perm[b * t.batch_size : (b + 1) * t.batch_size])
        s.lr = t.lr * lr_factor(step=s.step, **s.sched)
        for g in s.opt.param_groups:
            g["lr"] = s.lr
        loss = _optimizer_step(s, xb, yb)
        loss_sum += loss
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), batch_no, first_bad)
        batch_no += 1
        s.step += 1
        if (b + 1) % REFRESH == 0 or b + 1 == s.n_batches:
            _check_finite(distributed.max_int(int(first_bad)), epoch, s.out, s.log)
            _show(s, epoch, b, loss, t0)
    return loss_sum, time.perf_counter() - t0


def _batch(s: RunState, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented float batch of these indices (this rank's contiguous slice of it under torchrun)."""
    t = s.cfg.train
    xb = s.x_all[idx]
    release_pages(s.x_all, xb.nbytes)  # a memory-mapped training set: only the batches in flight stay resident
    if t.crop_padding or s.flip:
        xb = random_crop_flip(xb, t.crop_padding, s.flip, s.data_gen)
    yb = s.y_all[idx]
    if s.world > 1:
        lo, hi = distributed.shard(len(idx))
        xb, yb = xb[lo:hi], yb[lo:hi]
    xb = to_float(xb)
    if s.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb, yb


def _optimizer_step(s: RunState, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    with s.autocast():
        loss = s.stepper(xb, yb, s.mix_rng)
    s.opt.zero_grad(set_to_none=True)
    if s.scaler is not None:
        s.scaler.scale(loss).backward()
        s.scaler.step(s.opt)
        s.scaler.update()
    else:
        loss.backward()
        s.opt.step()
    return loss.detach()


def _show(s: RunState, epoch: int, b: int, loss: torch.Tensor, t0: float) -> None:
    if s.progress:
        s.bar.set_description(f"{s.p.method.name} epoch {epoch + 1}/{s.cfg.train.epochs}")
        s.bar.set_postfix(
            loss=f"{float(loss):.4f}",
            lr=f"{s.lr:.4g}",
            img_s=f"{(b + 1) * s.cfg.train.batch_size / (time.perf_counter() - t0):.0f}",
            refresh=False,
        )
    s.bar.update((b + 1) - (s.bar.n - epoch * s.n_batches))


def end_epoch(s: RunState, epoch: int, loss_sum: torch.Tensor, epoch_s: float) -> None:
    """The epoch's log record (with validation metrics on rank 0), the log file, and the resumable state."""
    t, data = s.cfg.train, s.p.data
    s.elapsed += epoch_s
    record = {
        "epoch": epoch + 1,
        "step": s.step,
        "lr": s.lr,
        "train_loss": distributed.mean_float(float(loss_sum) / s.n_batches),
        "images_per_s": round(s.n_batches * t.batch_size / epoch_s, 1),
        "epoch_s": round(epoch_s, 3),
    }
    if data.val is not None and s.main:
        tv = time.perf_counter()
        logits = predict_logits(s.model, data.val.x, device=s.p.device)
        record.update({f"val_{k}": v for k, v in accuracy_nll(logits, data.val.y).items()})
        s.times["validation"] += time.perf_counter() - tv
    s.log.append(record)
    ts = time.perf_counter()
    if s.main:
        atomic_write_text(s.out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in s.log))
    if s.main and ((epoch + 1) % t.save_every == 0 or epoch + 1 == t.epochs):
        save_state(
            s.out,
            {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                "epoch": epoch + 1,
                "step": s.step,
                "model": s.model.state_dict(),
                "optimizer": s.opt.state_dict(),
                "scaler": s.scaler.state_dict() if s.scaler is not None else {},
                "rng": rng_state(s.data_gen, s.mix_rng),
                "log": s.log,
                "elapsed_s": s.elapsed,
                "times_s": {**s.times, "saves": s.times["saves"] + time.perf_counter() - ts},
                "config": json.dumps(s.cfg.to_dict()),
                "world_size": s.world,
            },
        )
    s.times["saves"] += time.perf_counter() - ts


def finish(s: RunState) -> dict[str, Any] | None:
    """Rank 0: the test pass, the metadata and the checkpoint; the other ranks wait for it."""
    if not s.main:
        distributed.barrier()  # returns once rank 0 has written the checkpoint
        return None
    data, device = s.p.data, s.p.device
    metrics = {"train_loss": s.log[-1]["train_loss"] if s.log else None}
    tt = time.perf_counter()
    logits = predict_logits(s.model, data.test.x, device=device)
    metrics.update({f"test_{k}": v for k, v in accuracy_nll(logits, data.test.y).items()})
    s.times["test_pass"] += time.perf_counter() - tt
    if data.val is not None:
        metrics.update({k: s.log[-1][k] for k in ("val_acc", "val_nll")})
    meta = run_metadata(
        s.p, s.model, metrics, {"training": s.elapsed, **s.times}, s.amp_mode, s.channels_last, s.flip, device, s.step
    )
    meta["train"]["distributed"] = {
        "world_size": s.world,
        "sync_bn": s.sync_bn,
        "backend": torch.distributed.get_backend() if s.world > 1 else None,
    }
    s.model.to(memory_format=torch.contiguous_format)
    saved = save_checkpoint(s.out / "model.safetensors", s.model, meta)
    distributed.barrier()
    return saved


def _amp(cfg: Config, device: torch.device):
    mode = cfg.train.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
    ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return mode, ctx, scaler


def _compile(model: torch.nn.Module) -> None:
    """torch.compile in place. On a stage-structured model each stage and the head are compiled, so the
    plain forward and a manifold-mixup forward (which walks the stages, mixing between two of them) both
    run compiled code; any other model is compiled whole (hook-based mixing may then break the graph)."""
    parts = [*model.stages, model.head] if hasattr(model, "stages") and hasattr(model, "head") else [model]
    for part in parts:
        part.compile()


def _check_finite(bad_batch: int, epoch: int, out: Path, log: list) -> None:
    if bad_batch >= 0:
        last = f"epoch {log[-1]['epoch']}" if log else "none yet"
        raise TrainingError(
            f"training stopped: non-finite loss at epoch {epoch + 1}, step {bad_batch + 1}; "
            f"the last good state ({last}) stays in {out / 'state.pt'}"
        )
