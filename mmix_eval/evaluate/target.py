"""What an evaluation runs on: a model (from a checkpoint, or any nn.Module), its [0, 1] test images with
their indices into the full test split, and the record columns from the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmix_eval.data import ImageData, load_data
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import OptionError
from mmix_eval.evaluate.checks import check_logits, output_checks, zero_gradient_check  # noqa: F401 (re-exported)
from mmix_eval.evaluate.images import Images
from mmix_eval.evaluate.outcomes import subset_hash
from mmix_eval.evaluate.passes import fit_batch_size, logits_of, prepare_model, setup, shard_batches  # noqa: F401


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
    indices: np.ndarray | None = None  # test-subset indices into the full test split (default 0..N-1)
    clean: torch.Tensor | None = None  # clean test logits, computed once and shared by the evaluators
    precision: str = "fp32"  # "bf16": inference forwards under bf16 autocast (a GPU, for a checkpoint trained so)
    channels_last: bool = False  # on a GPU, where training used it

    def __post_init__(self):
        if self.indices is None:
            self.indices = np.arange(len(self.test), dtype=np.int64)
        self.base.setdefault("subset", subset_hash(self.indices))


def target_from_module(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = "model",
                       val: tuple[torch.Tensor, torch.Tensor] | None = None) -> Target:
    """Evaluate any nn.Module mapping [0, 1] images to logits, with no checkpoint file."""
    base = {"run": name, "model": type(model).__name__, "data": "tensors"}
    return Target(model=model, test=Images(x, y), val=Images(*val) if val is not None else None, run=name, base=base)


def base_columns(meta: dict, ckpt: Path, run: str) -> dict[str, Any]:
    m = meta.get("method", {})
    settings = {k: v for k, v in m.items() if k != "name" and v is not None}  # alpha, eligible, loss, ...
    return {"run": run, "checkpoint": str(ckpt), "model": meta["model"]["name"], "method": m.get("name"),
            "method_settings": settings, "train_seed": meta.get("train", {}).get("seed"), "data": meta.get("data", {}).get("spec")}


_DATA_CACHE: dict[tuple, ImageData] = {}


def eval_data(meta: dict, data: str | None, root: str | None, limit: int | None,
              seed: int, with_val: bool = True) -> tuple[Images, Images | None, str, np.ndarray]:
    """The test split (seeded subset of ``limit`` images, keyed by the evaluation seed so every checkpoint
    sees the same images) and the checkpoint's own validation split, if it held one out of training."""
    cfg = meta.get("config", {}).get("data", {})
    spec = data or meta.get("data", {}).get("spec") or cfg.get("name")
    if not isinstance(spec, str):
        raise UserError("checkpoint metadata 'data.spec' expected a data set name, got none; give the data option")
    same = data is None or data == meta.get("data", {}).get("spec")
    root = root or cfg.get("root")
    val_size = int(cfg.get("val_size") or 0) if same and with_val else 0
    # The training images are loaded only to rebuild the checkpoint's validation split (temperature scaling).
    key = (spec, root, cfg.get("train_limit") if same else None, val_size, int(cfg.get("subset_seed") or 0) if same else 0)
    if key not in _DATA_CACHE:
        try:
            _DATA_CACHE[key] = load_data(spec, root, False, key[2], None, val_size, key[4], need_train=val_size > 0)
        except UserError as e:
            raise OptionError("data", f"{e} (the data set named in the checkpoint's metadata; override it, and data_root)") from None
    d = _DATA_CACHE[key]
    x, y = d.test.x, d.test.y
    idx = np.arange(len(y), dtype=np.int64)
    if limit is not None:
        if limit < 1:
            raise OptionError("limit", f"expected an integer >= 1, got {limit}")
        if limit < len(y):
            idx = np.sort(np.random.default_rng([seed, 0x74657374]).permutation(len(y))[:limit])
            x, y = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
    check_shapes(meta, d)
    val = Images(d.val.x, d.val.y) if d.val is not None else None
    return Images(x, y), val, spec, idx


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
                allow_import: bool = False, with_val: bool = True) -> Target:
    from mmix_eval.checkpoint import load_checkpoint

    ckpt = Path(ckpt)
    model, meta = load_checkpoint(ckpt, device, allow_import=allow_import)
    test, val, spec, idx = eval_data(meta, data, root, limit, seed, with_val)
    run = run or ckpt.parent.name or ckpt.stem
    base = base_columns(meta, ckpt, run)
    base["data"] = spec
    train_cfg = meta.get("train", {})
    gpu = torch.device(device).type == "cuda"
    if gpu:  # resident on the device as uint8, as training keeps them: no host copy per batch and condition
        test = Images(test.x.to(device), test.y)  # (labels stay on the CPU, beside the logits)
        val = Images(val.x.to(device), val.y) if val is not None else None
    return Target(model=model, test=test, val=val, run=run, base=base, indices=idx,
                  precision="bf16" if gpu and train_cfg.get("amp") == "bf16" else "fp32",
                  channels_last=bool(gpu and train_cfg.get("channels_last")))
