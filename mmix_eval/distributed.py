"""torch.distributed, as torchrun starts it: nothing here launches processes or builds process groups by hand.

Under ``torchrun --nproc-per-node N -m mmix_eval train|evaluate ...`` the environment carries RANK,
WORLD_SIZE and LOCAL_RANK; ``init_from_env`` joins the default process group (NCCL on CUDA, gloo on a
CPU) and everything else asks this module who it is. Without torchrun every helper is the identity, so
single-process code paths are unchanged.

Rules (documented in docs/distributed.md):
  * training: ``train.batch_size`` is the global batch; each rank trains on its contiguous 1/N slice of
    the same shuffled, augmented global batch. All ranks share the mixing RNG, so one (k, λ) is drawn per
    global step as in Algorithm 1, and each rank pairs images inside its own slice.
  * evaluation: the test images are split into N contiguous shards; logits and counts are gathered so
    every rank holds the single-process result, and rank 0 alone writes files.
"""

from __future__ import annotations

import gc
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from mmix_eval.errors import UserError


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(
            f"WORLD_SIZE: expected an integer (set by torchrun), got {os.environ['WORLD_SIZE']!r}"
        ) from None


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_spec: str = "auto") -> bool:
    """Join the process group torchrun describes. Returns True if this process is one of several.

    The device: with CUDA each rank takes cuda:LOCAL_RANK (a user's cuda:N is not honoured under torchrun),
    otherwise the CPU with gloo."""
    if env_world_size() <= 1 or active():
        return active()
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise UserError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {key} is not set: start several processes "
                f"with torchrun (one per device: torchrun's nproc-per-node option, then -m mmix_eval ...)"
            )
    use_cuda = torch.cuda.is_available() and device_spec not in ("cpu",)
    if use_cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return True


def device_for(spec: str) -> str:
    """The device spec for this rank: cuda:LOCAL_RANK under torchrun with CUDA, else ``spec``."""
    if active() and spec in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return spec


def shutdown() -> None:
    """Leave the process group while the interpreter is fully alive. Garbage is collected first: an object in
    a reference cycle that holds the group (a DDP wrapper's reducer, a finished work handle) would otherwise
    keep gloo's worker threads alive past ``destroy_process_group`` and be freed during interpreter
    finalisation, where gloo aborts the process ("terminate called without an active exception", exit -6)
    after the run has finished and saved; CI saw it once in a few hundred torchrun tests."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(obj):
    """Rank 0's value of a small picklable object (our own data, never a file's contents), on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(fn):
    """Run ``fn`` on rank 0 only and give its result, or its UserError, to every rank, so a bad input
    fails every process with the same one-line error instead of leaving the others waiting."""
    if not active():
        return fn()
    result = None
    if is_main():
        try:
            result = ("ok", fn())
        except UserError as e:
            result = ("error", (type(e), str(e)))
    kind, value = broadcast(result)
    if kind == "error":
        cls, msg = value
        raise cls(msg)
    return value


def shard(n: int) -> tuple[int, int]:
    """This rank's contiguous range [lo, hi) of n items (the first n % N ranks take one more)."""
    return shard_of(n, rank(), world_size())


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _all_reduce(value, dtype: torch.dtype, op=dist.ReduceOp.SUM):
    t = torch.tensor([value], dtype=dtype, device=_comm_device())
    dist.all_reduce(t, op=op)
    return t.item()


def sum_int(value: int) -> int:
    """The sum of an integer over ranks."""
    return int(_all_reduce(value, torch.int64)) if active() else value


def max_int(value: int) -> int:
    return int(_all_reduce(value, torch.int64, dist.ReduceOp.MAX)) if active() else value


def mean_float(value: float) -> float:
    return float(_all_reduce(value, torch.float64)) / world_size() if active() else value


def gather_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's shard (rows lo:hi of an n-row whole, in rank order) into the whole, on the CPU."""
    if not active():
        return t
    w = world_size()
    sizes = [shard_of(n, r, w) for r in range(w)]
    cap = max(hi - lo for lo, hi in sizes)
    dev = _comm_device()
    padded = torch.zeros((cap, *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[: t.shape[0]] = t.to(dev)
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: hi - lo] for p, (lo, hi) in zip(parts, sizes)]).cpu()


def shard_of(n: int, r: int, w: int) -> tuple[int, int]:
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)
