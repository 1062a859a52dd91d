"""Everything checked before a run folder is touched: the method and model built (on the meta device first),
one probe step on 2 images, the distributed settings, and the data loaded."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from mmix_eval import distributed
from mmix_eval.config import Config
from mmix_eval.data import ImageData, load_data
from mmix_eval.data.augment import to_float
from mmix_eval.device import resolve_device
from mmix_eval.errors import UserError
from mmix_eval.methods import Method, StepOutput, create_method
from mmix_eval.models import StagedNet, create_model, is_builtin_model, model_factory


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


def preflight(cfg: Config, data: ImageData) -> torch.nn.Module:
    """What ``prepare`` checks about the method and model, for a run that trains later (bench checks every
    run this way before the first one trains). ``data`` needs only its test split: the probe's 2 images
    come from it. Returns the model built (untrained), for the evaluators' own checks."""
    method = create_method(cfg.method.name, cfg.method.kwargs)
    mean, std = data.mean_std() if len(data.train) else ([0.5] * data.in_channels, [0.25] * data.in_channels)
    with torch.random.fork_rng():
        return check_model(cfg, method, data.num_classes, data.in_channels, mean, std, data.test.x[:2], data.test.y[:2])


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
        if is_builtin_model(name):
            raise UserError(
                f"model.kwargs: expected sizes model '{name}' can be built with, got {kwargs!r:.200} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
            ) from None
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
        raise UserError(
            f"train.batch_size: expected a multiple of the {w} processes (it is the global batch, "
            f"split evenly across ranks), got {cfg.train.batch_size}"
        )
    if cfg.train.sync_bn and w > 1 and device.type != "cuda":
        raise UserError(
            f"train.sync_bn: expected CUDA devices (PyTorch's SyncBatchNorm is GPU-only), got {device}; "
            f"set train.sync_bn=false to normalise each rank's slice on its own"
        )


def _probe(method: Method, model, x2, y2, name: str, model_name: str, num_classes: int) -> None:
    """One step on 2 images with copies of the method and model, and one eval-mode forward: a plugin (method or
    model) that does not fit the interface fails here, before the run folder is touched."""
    x = to_float(x2)
    want = (len(x), num_classes)
    probe = copy.deepcopy(model)
    with torch.random.fork_rng():
        try:
            with torch.no_grad():
                logits = probe.eval()(x)
        except Exception as e:
            raise UserError(
                f"model '{model_name}': forward failed on a 2-image probe batch of shape {tuple(x.shape)} "
                f"({type(e).__name__}: {str(e)[:200]})"
            ) from None
        if not torch.is_tensor(logits) or tuple(logits.shape) != want:
            got = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise UserError(
                f"model '{model_name}': expected logits of shape {want} (batch, classes) on a 2-image "
                f"probe batch, got {got}"
            )
        try:
            out = copy.deepcopy(method).step(probe.train(), x, y2, np.random.default_rng(0))
        except UserError:
            raise
        except Exception as e:
            raise UserError(
                f"method '{name}': step() failed on a 2-image probe batch ({type(e).__name__}: {e})"
            ) from None
    if (
        not isinstance(out, StepOutput)
        or not torch.is_tensor(out.loss)
        or out.loss.ndim != 0
        or not out.loss.requires_grad
    ):
        raise UserError(
            f"method '{name}': step() expected to return StepOutput(loss=<scalar tensor with grad>, logits), "
            f"got {type(out).__name__}"
        )
    if not torch.is_tensor(out.logits) or tuple(out.logits.shape) != want:
        got = tuple(out.logits.shape) if torch.is_tensor(out.logits) else type(out.logits).__name__
        raise UserError(
            f"method '{name}': step() expected logits of shape {want} (batch, classes) on a 2-image "
            f"probe batch, got {got}"
        )
    if not torch.isfinite(out.loss.detach()):
        raise UserError(
            f"method '{name}': step() expected a finite loss on a 2-image probe batch, got {out.loss.item()}"
        )
