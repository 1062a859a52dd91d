"""A run's metadata, as its checkpoint's header records it: the model and how to rebuild it, the data, the method,
the training settings, the metrics, the cost and the provenance."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from mmix_eval.methods.base import fingerprint
from mmix_eval.models import num_mix_points
from mmix_eval.provenance import git_commit, hardware, versions
from mmix_eval.training.preflight import Prepared


def run_metadata(
    p: Prepared, model, metrics, times: dict, amp_mode, channels_last, flip, device, steps
) -> dict[str, Any]:
    cfg = p.cfg
    return {
        "model": _model_meta(p, model),
        "data": _data_meta(p),
        "method": fingerprint(p.method),  # its settings and, for a plugin, the hash of its source file
        "train": _train_meta(cfg.train, steps, flip, amp_mode, channels_last, device),
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


def _model_meta(p: Prepared, model) -> dict[str, Any]:
    """How to rebuild the model (its name and keyword arguments, normalisation included) and its size."""
    data = p.data
    kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "mean": p.mean, "std": p.std}
    return {
        "name": p.cfg.model.name,
        "kwargs": {**kwargs, **p.cfg.model.kwargs},
        "num_mix_points": num_mix_points(model),
        "params": sum(q.numel() for q in model.parameters()),
    }


def _data_meta(p: Prepared) -> dict[str, Any]:
    data = p.data
    return {
        "name": data.name,
        "classes": data.classes,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "image_size": list(data.image_size),
        "normalization": {"mean": p.mean, "std": p.std, "computed_on": "training split"},
        **{k: v for k, v in data.info.items() if k != "cache"},
    }


def _train_meta(t, steps, flip, amp_mode, channels_last, device) -> dict[str, Any]:
    optimizer = {"lr": t.lr, "momentum": t.momentum, "weight_decay": t.weight_decay, "nesterov": t.nesterov}
    schedule = {"milestones": t.milestones, "gamma": t.gamma, "warmup_epochs": t.warmup_epochs}
    return {
        "seed": t.seed,
        "epochs": t.epochs,
        "steps": steps,
        "batch_size": t.batch_size,
        "optimizer": {"name": "SGD", **optimizer},
        "schedule": {"name": t.schedule, **schedule},
        "augment": {"crop_padding": t.crop_padding, "flip": flip},
        "amp": amp_mode,
        "channels_last": channels_last,
        "compile": t.compile,
        "device": str(device),
    }
