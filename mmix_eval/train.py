"""The training loop: one loop for every method, data resident in memory (on the GPU when training there).

A run folder holds:
    config.yaml        the resolved configuration (what --resume checks against)
    state.pt           last resumable state (model, optimizer, epoch, every RNG); torch.load(weights_only=True)
    state.prev.pt      the state before it, a fallback if the latest is damaged
    log.jsonl          one record per epoch
    model.safetensors  the final weights with metadata in the header, and model.json beside it
"""

from __future__ import annotations

import json
import random
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmix_eval import distributed, threads
from mmix_eval.checkpoint import save_checkpoint
from mmix_eval.config import Config, merge
from mmix_eval.data import ImageData, load_data
from mmix_eval.data.augment import random_crop_flip, to_float
from mmix_eval.device import resolve_device
from mmix_eval.errors import UserError
from mmix_eval.inference import accuracy_nll, predict_logits
from mmix_eval.io import atomic_write_bytes, atomic_write_text, remove_partial_writes
from mmix_eval.methods import Method, create_method
from mmix_eval.methods.base import fingerprint
from mmix_eval.models import StagedNet, create_model, num_mix_points
from mmix_eval.provenance import git_commit, hardware, versions
from mmix_eval.schedule import lr_factor

RUN_FILES = ("config.yaml", "state.pt", "state.prev.pt", "log.jsonl", "model.safetensors", "model.json")
STATE_FORMAT = "mmix-eval/state"
STATE_VERSION = 1


class TrainingError(UserError):
    """Training could not go on (a non-finite loss); the last good state stays on disk."""

    exit_code = 1


@dataclass
class Prepared:
    cfg: Config
    data: ImageData
    model: StagedNet
    method: Method
    device: torch.device
    mean: list[float]
    std: list[float]


def prepare(cfg: Config, data: ImageData | None = None) -> Prepared:
    """Validate everything and load the data before anything is written to the run folder."""
    method = create_method(cfg.method.name, cfg.method.kwargs)
    from mmix_eval.models.base import model_factory

    model_factory(cfg.model.name)  # an unknown model fails before a slow data load
    device = resolve_device(distributed.device_for(cfg.train.device))
    check_distributed(cfg, device)
    if data is None:
        d = cfg.data
        data = load_data(d.name, d.root, d.download, d.train_limit, d.test_limit, d.val_size, d.subset_seed)
    mean, std = data.mean_std()
    torch.manual_seed(cfg.train.seed)  # initial weights depend on the seed alone
    model = check_model(cfg, method, data.num_classes, data.in_channels, mean, std, data.train.x[:2], data.train.y[:2])
    return Prepared(cfg, data, model, method, device, mean, std)


def preflight(cfg: Config, data: ImageData) -> None:
    """What ``prepare`` checks about the method and model, for a run that trains later (bench checks every
    run this way before the first one trains). ``data`` needs only its test split: the probe's 2 images
    come from it."""
    method = create_method(cfg.method.name, cfg.method.kwargs)
    mean, std = data.mean_std() if len(data.train) else ([0.5] * data.in_channels, [0.25] * data.in_channels)
    with torch.random.fork_rng():
        check_model(cfg, method, data.num_classes, data.in_channels, mean, std, data.test.x[:2], data.test.y[:2])


def check_model(cfg: Config, method: Method, num_classes: int, in_channels: int, mean, std, x2, y2) -> StagedNet:
    """Build the model on the meta device first (sizes and the method's eligible layers checked without
    allocating), then for real, and probe one step on 2 images. Returns the real model."""
    name, kwargs = cfg.model.name, cfg.model.kwargs
    try:
        with torch.device("meta"):
            skeleton = create_model(name, num_classes, in_channels, mean, std, **kwargs)
    except UserError:
        raise
    except Exception as e:
        from mmix_eval.checkpoint import _builtin_model

        if _builtin_model(name):
            raise UserError(f"model.kwargs: expected sizes model '{name}' can be built with, got {kwargs!r:.200} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
        skeleton = None  # a plugin factory that cannot run on meta: checked on the real model below
    if skeleton is not None:
        method.validate(skeleton)
    model = create_model(name, num_classes, in_channels, mean, std, **kwargs)
    if skeleton is None:
        method.validate(model)
    _probe(method, model, x2, y2, cfg.method.name, cfg.model.name, num_classes)
    return model


def check_distributed(cfg: Config, device: torch.device) -> None:
    """Under torchrun: the global batch must split evenly, and SyncBatchNorm needs CUDA (PyTorch's rule)."""
    w = distributed.world_size()
    if w > 1 and cfg.train.batch_size % w:
        raise UserError(f"train.batch_size: expected a multiple of the {w} processes (it is the global batch, "
                        f"split evenly across ranks), got {cfg.train.batch_size}")
    if cfg.train.sync_bn and w > 1 and device.type != "cuda":
        raise UserError(f"train.sync_bn: expected CUDA devices (PyTorch's SyncBatchNorm is GPU-only), got {device}; "
                        f"set train.sync_bn=false to normalise each rank's slice on its own")


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


def _probe(method: Method, model, x2, y2, name: str, model_name: str, num_classes: int) -> None:
    """One step on 2 images with copies of the method and model, and one eval-mode forward: a plugin (method or
    model) that does not fit the interface fails here, before the run folder is touched."""
    import copy

    from mmix_eval.methods import StepOutput

    x = to_float(x2)
    want = (len(x), num_classes)
    probe = copy.deepcopy(model)
    with torch.random.fork_rng():
        try:
            with torch.no_grad():
                logits = probe.eval()(x)
        except Exception as e:
            raise UserError(f"model '{model_name}': forward failed on a 2-image probe batch of shape {tuple(x.shape)} "
                            f"({type(e).__name__}: {str(e)[:200]})") from None
        if not torch.is_tensor(logits) or tuple(logits.shape) != want:
            got = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise UserError(f"model '{model_name}': expected logits of shape {want} (batch, classes) on a 2-image "
                            f"probe batch, got {got}")
        try:
            out = copy.deepcopy(method).step(probe.train(), x, y2, np.random.default_rng(0))
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"method '{name}': step() failed on a 2-image probe batch ({type(e).__name__}: {e})") from None
    if not isinstance(out, StepOutput) or not torch.is_tensor(out.loss) or out.loss.ndim != 0 or not out.loss.requires_grad:
        raise UserError(f"method '{name}': step() expected to return StepOutput(loss=<scalar tensor with grad>, logits), "
                        f"got {type(out).__name__}")
    if not torch.is_tensor(out.logits) or tuple(out.logits.shape) != want:
        got = tuple(out.logits.shape) if torch.is_tensor(out.logits) else type(out.logits).__name__
        raise UserError(f"method '{name}': step() expected logits of shape {want} (batch, classes) on a 2-image "
                        f"probe batch, got {got}")
    if not torch.isfinite(out.loss.detach()):
        raise UserError(f"method '{name}': step() expected a finite loss on a 2-image probe batch, got {out.loss.item()}")


def seed_everything(seed: int) -> tuple[torch.Generator, np.random.Generator]:
    """Seed python, numpy and torch; return the data RNG (shuffling, augmentation) and the mixing RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(seed)
    mix_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D6978]))  # 'mix': a stream of its own
    return data_gen, mix_rng


def _rng_state(data_gen: torch.Generator, mix_rng: np.random.Generator) -> dict[str, Any]:
    # numpy states are stored as plain lists / JSON: ndarrays do not load under weights_only=True.
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": data_gen.get_state(),
        "mix": json.dumps(mix_rng.bit_generator.state),
    }


def _set_rng_state(s: dict[str, Any], data_gen: torch.Generator, mix_rng: np.random.Generator) -> None:
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    data_gen.set_state(s["data"])
    mix_rng.bit_generator.state = json.loads(s["mix"])


def _load_state(out: Path) -> dict | None:
    """The latest good state file, falling back to the previous one with a warning."""
    for name in ("state.pt", "state.prev.pt"):
        path = out / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: never retried without weights_only
            warnings.warn(f"{path}: unreadable state file ({type(e).__name__}); trying the previous one", stacklevel=2)
            continue
        if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
            if name != "state.pt":
                warnings.warn(f"resuming from {path} (the latest state was missing or damaged)", stacklevel=2)
            return state
        warnings.warn(f"{path}: not an mmix-eval state file; ignored", stacklevel=2)
    return None


def _save_state(out: Path, state: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    latest, prev = out / "state.pt", out / "state.prev.pt"
    if latest.exists():
        latest.replace(prev)
    atomic_write_bytes(latest, buf.getvalue())


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} in the run, {vb!r} given")
    return out


def check_run_folder(out: Path, cfg: Config, resume: bool, overwrite: bool) -> bool:
    """Decide what to do with an existing folder. Returns True when a run is to be resumed."""
    existing = [n for n in RUN_FILES if (out / n).exists()]
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}': expected a folder, got a file")
    if not existing:
        if resume:
            raise UserError(f"--resume: expected a run in '{out}', found none (no {RUN_FILES[0]})")
        return False
    if overwrite:
        for n in existing:
            (out / n).unlink()
        return False
    if not resume:
        raise UserError(f"--out '{out}': expected an empty or new folder, got one that holds a run "
                        f"({', '.join(existing)}); pass --resume to continue it or --overwrite to replace it")
    saved = load_run_config(out)
    diff = _diff(saved.to_dict(), cfg.to_dict())
    if diff:
        raise UserError(f"--resume: expected the configuration of the run in '{out}', got a different one ({'; '.join(diff[:3])})")
    return True


def load_run_config(out: Path) -> Config:
    import yaml

    path = out / "config.yaml"
    try:
        return merge(Config(), yaml.safe_load(path.read_text()) or {}, f"config '{path}'")
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"--resume: expected a readable {path}, got {type(e).__name__}") from None


def _amp(cfg: Config, device: torch.device):
    mode = cfg.train.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
    ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return mode, ctx, scaler


def train(cfg: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          data: ImageData | None = None, stop_after_epoch: int | None = None) -> dict[str, Any] | None:
    """Train one run into ``out``. Returns the checkpoint metadata, or None if stopped early on request.

    ``stop_after_epoch`` ends the process's work after that epoch's state is saved, as a kill would
    (used to test that resuming gives bitwise the same weights).
    """
    out = Path(out)
    t_run = time.perf_counter()  # wall time of the whole run: data, setup, epochs, validation, saves, test pass
    p = prepare(cfg, data)  # everything that can fail on bad input fails here, before any write
    # Under torchrun rank 0 alone judges and writes the run folder; the others learn its verdict.
    resuming = distributed.agree(lambda: check_run_folder(out, cfg, resume, overwrite))
    model, method, device, data, t = p.model, p.method, p.device, p.data, cfg.train
    world, main = distributed.world_size(), distributed.is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(out, RUN_FILES)  # left by a process killed while writing
        if not resuming:
            atomic_write_text(out / "config.yaml", cfg.to_yaml())

    data_gen, mix_rng = seed_everything(t.seed)
    channels_last = t.channels_last if t.channels_last is not None else device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov)
    amp_mode, autocast, scaler = _amp(cfg, device)
    if t.compile:
        _compile(model)
    sync_bn = bool(t.sync_bn and world > 1)
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    stepper: torch.nn.Module = _Step(model, method)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        stepper = DistributedDataParallel(stepper, device_ids=[device.index] if device.type == "cuda" else None)

    start_epoch, step, log, elapsed = 0, 0, [], 0.0
    times = {"setup": 0.0, "validation": 0.0, "saves": 0.0, "test_pass": 0.0}  # besides the epochs (elapsed)
    state = _load_state(out) if resuming else None
    if resuming and state is None:
        damaged = [n for n in ("state.pt", "state.prev.pt") if (out / n).exists()]
        if damaged:  # never restart silently: that would throw the run's epochs away
            raise UserError(f"--resume '{out}': expected a readable state file, got only damaged ones "
                            f"({', '.join(damaged)}); pass --overwrite to train this run again from scratch")
        warnings.warn(f"resuming '{out}': no state file saved yet (killed before its first epoch ended); "
                      f"starting from epoch 0", stacklevel=2)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], data_gen, mix_rng)
        start_epoch, step, log, elapsed = state["epoch"], state["step"], list(state["log"]), state["elapsed_s"]
        if start_epoch >= cfg.train.epochs and (out / "model.safetensors").exists():
            if distributed.is_main():
                print(f"{out}: already finished ({start_epoch} of {cfg.train.epochs} epochs); nothing to train, "
                      f"the checkpoint is written again from the last state", file=sys.stderr)
        times.update({k: float(v) for k, v in (state.get("times_s") or {}).items() if k in times})
        if int(state.get("world_size", 1)) != world:
            warnings.warn(f"resuming a run saved by {state.get('world_size', 1)} process(es) with {world}: "
                          f"the remaining epochs pair images within different slices", stacklevel=2)

    x_all = data.train.x.to(device)  # uint8, resident: decoded once, augmented per batch
    y_all = data.train.y.to(device)
    times["setup"] += time.perf_counter() - t_run  # this process's: data, model, state; kept across a resume
    n, bs = len(data.train), t.batch_size
    n_batches = max(1, n // bs)  # drop the last partial batch (one batch of n if n < batch size)
    flip = data.flip if t.flip is None else t.flip
    sched = dict(schedule=t.schedule, steps_per_epoch=n_batches, epochs=t.epochs, milestones=t.milestones,
                 gamma=t.gamma, warmup_epochs=t.warmup_epochs)

    progress = progress and main
    bar = tqdm(total=t.epochs * n_batches, initial=start_epoch * n_batches, disable=not progress,
               unit="step", dynamic_ncols=True, desc=f"{method.name}")
    refresh = 10  # steps between host syncs (progress bar, non-finite check)
    for epoch in range(start_epoch, t.epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=data_gen).to(device)
        loss_sum = torch.zeros((), device=device)
        # Non-finite check without a host sync per step: remember the first bad batch on the device.
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        batch_no = torch.zeros((), dtype=torch.long, device=device)
        for b in range(n_batches):
            idx = perm[b * bs:(b + 1) * bs]
            xb = x_all[idx]
            if t.crop_padding or flip:
                xb = random_crop_flip(xb, t.crop_padding, flip, data_gen)
            yb = y_all[idx]
            if world > 1:  # this rank's contiguous slice of the augmented global batch
                lo, hi = distributed.shard(len(idx))
                xb, yb = xb[lo:hi], yb[lo:hi]
            xb = to_float(xb)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            lr = t.lr * lr_factor(step=step, **sched)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast():
                loss = stepper(xb, yb, mix_rng)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            loss = loss.detach()
            loss_sum += loss
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), batch_no, first_bad)
            batch_no += 1
            step += 1
            if (b + 1) % refresh == 0 or b + 1 == n_batches:
                _check_finite(distributed.max_int(int(first_bad)), epoch, out, log)
                if progress:
                    bar.set_description(f"{method.name} epoch {epoch + 1}/{t.epochs}")
                    bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{lr:.4g}",
                                    img_s=f"{(b + 1) * bs / (time.perf_counter() - t0):.0f}", refresh=False)
                bar.update((b + 1) - (bar.n - epoch * n_batches))
        threads.recheck(say=lambda line: bar.write(f"mmix-eval: {line}", file=sys.stderr))  # busy now: shrink
        epoch_s = time.perf_counter() - t0
        elapsed += epoch_s
        record = {"epoch": epoch + 1, "step": step, "lr": lr,
                  "train_loss": distributed.mean_float(float(loss_sum) / n_batches),
                  "images_per_s": round(n_batches * bs / epoch_s, 1), "epoch_s": round(epoch_s, 3)}
        if data.val is not None and main:
            tv = time.perf_counter()
            record.update({f"val_{k}": v for k, v in accuracy_nll(predict_logits(model, data.val.x, device=device), data.val.y).items()})
            times["validation"] += time.perf_counter() - tv
        log.append(record)
        ts = time.perf_counter()
        if main:
            atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        if main and ((epoch + 1) % t.save_every == 0 or epoch + 1 == t.epochs):
            _save_state(out, {"format": STATE_FORMAT, "version": STATE_VERSION, "epoch": epoch + 1, "step": step,
                              "model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scaler": scaler.state_dict() if scaler is not None else {},
                              "rng": _rng_state(data_gen, mix_rng), "log": log, "elapsed_s": elapsed,
                              "times_s": {**times, "saves": times["saves"] + time.perf_counter() - ts},
                              "config": json.dumps(cfg.to_dict()), "world_size": world})
        times["saves"] += time.perf_counter() - ts
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < t.epochs:
            bar.close()
            distributed.barrier()
            return None
    bar.close()
    if not main:
        distributed.barrier()  # returns once rank 0 has written the checkpoint
        return None

    metrics = {"train_loss": log[-1]["train_loss"] if log else None}
    tt = time.perf_counter()
    metrics.update({f"test_{k}": v for k, v in accuracy_nll(predict_logits(model, data.test.x, device=device), data.test.y).items()})
    times["test_pass"] += time.perf_counter() - tt
    if data.val is not None:
        metrics.update({k: log[-1][k] for k in ("val_acc", "val_nll")})
    meta = run_metadata(p, model, metrics, {"training": elapsed, **times}, amp_mode, channels_last, flip, device, step)
    meta["train"]["distributed"] = {"world_size": world, "sync_bn": sync_bn,
                                    "backend": torch.distributed.get_backend() if world > 1 else None}
    model.to(memory_format=torch.contiguous_format)
    saved = save_checkpoint(out / "model.safetensors", model, meta)
    distributed.barrier()
    return saved


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
        raise TrainingError(f"training stopped: non-finite loss at epoch {epoch + 1}, step {bad_batch + 1}; "
                            f"the last good state ({last}) stays in {out / 'state.pt'}")


def run_metadata(p: Prepared, model, metrics, times: dict, amp_mode, channels_last, flip, device, steps) -> dict[str, Any]:
    cfg, data, t, mean, std = p.cfg, p.data, p.cfg.train, p.mean, p.std
    data_info = {k: v for k, v in data.info.items() if k != "cache"}
    return {
        "model": {"name": cfg.model.name,
                  "kwargs": {"num_classes": data.num_classes, "in_channels": data.in_channels, "mean": mean, "std": std,
                             **cfg.model.kwargs},
                  "num_mix_points": num_mix_points(model),
                  "params": sum(q.numel() for q in model.parameters())},
        "data": {"name": data.name, "classes": data.classes, "num_classes": data.num_classes,
                 "in_channels": data.in_channels, "image_size": list(data.image_size),
                 "normalization": {"mean": mean, "std": std, "computed_on": "training split"}, **data_info},
        "method": fingerprint(p.method),  # its settings and, for a plugin, the hash of its source file
        "train": {"seed": t.seed, "epochs": t.epochs, "steps": steps, "batch_size": t.batch_size,
                  "optimizer": {"name": "SGD", "lr": t.lr, "momentum": t.momentum, "weight_decay": t.weight_decay,
                                "nesterov": t.nesterov},
                  "schedule": {"name": t.schedule, "milestones": t.milestones, "gamma": t.gamma,
                               "warmup_epochs": t.warmup_epochs},
                  "augment": {"crop_padding": t.crop_padding, "flip": flip},
                  "amp": amp_mode, "channels_last": channels_last, "compile": t.compile, "device": str(device)},
        "config": cfg.to_dict(),
        "metrics": metrics,
        "cost": {"forward_passes_per_step": getattr(p.method, "forward_passes", 1)},
        # The whole run (summed over the processes of a resumed one), but for the final checkpoint write;
        # time_split_s says where it went: training epochs, validation passes, state saves, the final test
        # pass, and setup (data loading, model building, process start-up inside train()).
        "wall_time_s": round(sum(times.values()), 3),
        "time_split_s": {k: round(v, 3) for k, v in times.items()},
        "versions": versions(),
        "git_commit": git_commit(),
        "hardware": hardware(str(device)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
