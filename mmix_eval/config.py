"""Run configuration: dataclasses, strict YAML loading and ``section.key=value`` overrides.

A key that does not exist is an error (with 'did you mean'), never silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from mmix_eval.errors import ParamError, UserError, did_you_mean
from mmix_eval.options import MAX_BATCH, MAX_IMAGES, MAX_SEED, check_type, short_type
from mmix_eval.upgrade import V1_METHOD_KEYS


@dataclass
class DataConfig:
    name: str = "digits"  # registry name, or imagefolder:PATH
    root: str | None = None  # where torchvision data sets live (default ~/.cache/mmix-eval/data)
    download: bool = False
    train_limit: int | None = None  # seeded random subset of the training split
    test_limit: int | None = None  # seeded random subset of the test split
    val_size: int = 0  # images held out of the training split for validation / temperature scaling
    subset_seed: int = 0


@dataclass
class ModelConfig:
    name: str = "smallnet"
    kwargs: dict = field(default_factory=dict)  # extra architecture arguments, e.g. {width: 16}


@dataclass
class MethodConfig:
    name: str = "manifold_mixup"
    # The method's own keyword arguments (alpha, eligible, loss, a plugin's prob, ...), checked against its
    # signature when it is built; a setting not given takes the method's default.
    kwargs: dict = field(default_factory=dict)


Schedule = Literal["step", "cosine", "onecycle", "constant"]
AmpMode = Literal["auto", "off", "bf16", "fp16"]


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: Schedule = "step"
    milestones: list[int] = field(default_factory=list)  # epochs at which 'step' multiplies lr by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up; onecycle uses 20 % of the epochs when this is 0
    crop_padding: int = 2  # random-crop padding in pixels (the official code uses 2)
    flip: bool | None = None  # None: the data set's default (off for digits and SVHN)
    seed: int = 0
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps
    amp: AmpMode = "auto"  # auto: bf16 on CUDA, off elsewhere
    channels_last: bool | None = None  # None: on for CUDA
    save_every: int = 1  # epochs between resumable state files
    compile: bool = False  # torch.compile each stage and the head (GPU; needs a C++ compiler on a CPU)
    sync_bn: bool = False  # under torchrun on GPUs: SyncBatchNorm across ranks (else each rank's slice alone)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SCHEDULES = typing.get_args(Schedule)
AMP_MODES = typing.get_args(AmpMode)


def _apply(section_obj: Any, section: str, key: str, value: Any, where: str) -> None:
    names = [f.name for f in fields(section_obj)]
    if key not in names:
        hint = did_you_mean(f"{section}.{key}", [f"{section}.{n}" for n in names])
        raise UserError(
            f"{where}: unknown key '{section}.{key}'{hint}; "
            f"expected one of: {', '.join(f'{section}.{n}' for n in names)}"
        )
    hint = typing.get_type_hints(type(section_obj))[key]
    ok, converted = check_type(value, hint)
    if not ok:
        raise UserError(f"{where}: '{section}.{key}' expected {short_type(hint)}, got {value!r}")
    setattr(section_obj, key, converted)


def merge(cfg: Config, updates: dict, where: str) -> Config:
    """Apply a nested {section: {key: value}} dict onto ``cfg`` (a copy), strictly."""
    cfg = dataclasses.replace(cfg, **{f.name: dataclasses.replace(getattr(cfg, f.name)) for f in fields(cfg)})
    if not isinstance(updates, dict):
        raise UserError(
            f"{where}: expected a mapping of sections (data, model, method, train), got {type(updates).__name__}"
        )
    sections = [f.name for f in fields(cfg)]
    for section, values in updates.items():
        if section not in sections:
            raise UserError(
                f"{where}: unknown section '{section}'{did_you_mean(str(section), sections)}; "
                f"expected one of: {', '.join(sections)}"
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"{where}: section '{section}' expected a mapping of keys, got {values!r}")
        obj = getattr(cfg, section)
        for key, value in values.items():
            if section == "method" and key in V1_METHOD_KEYS:  # method.alpha: shorthand for method.kwargs.alpha
                obj.kwargs = {k: v for k, v in obj.kwargs.items() if k != key}
                if value != V1_METHOD_KEYS[key]:  # the old default meant "the method's default"
                    obj.kwargs[key] = value
                continue
            if section == "method" and key == "kwargs" and isinstance(value, dict):
                obj.kwargs = {**obj.kwargs, **{str(k): v for k, v in value.items()}}
                continue
            _apply(obj, section, str(key), value, where)
    validate(cfg, where)
    return cfg


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    from mmix_eval.io import load_yaml

    data = load_yaml(path, "config")
    return merge(Config(), data or {}, f"config '{path}'")


def yaml_value(raw: str) -> Any:
    """A command-line value read as YAML ('0.5', '[1, 2]', 'true', 'null'); text that is not YAML stays text."""
    from mmix_eval.io import YamlLimit, parse_yaml, yaml_problem

    try:
        return parse_yaml(raw) if raw.strip() else None
    except YamlLimit as e:
        raise UserError(f"value '{raw[:40]}': {yaml_problem(e)}") from None
    except yaml.YAMLError:
        return raw


def parse_override(text: str) -> dict:
    """'train.lr=0.05' -> {'train': {'lr': 0.05}}; the value is read as YAML ('[1, 2]', 'null')."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ParamError("set", "expected section.key=value, e.g. train.lr=0.05", text)
    return {section: {name: yaml_value(raw)}}


def validate(cfg: Config, where: str) -> None:
    t = cfg.train
    checks = [
        (1 <= t.epochs <= 100_000, "train.epochs", "an integer from 1 to 100,000", t.epochs),
        (1 <= t.batch_size <= MAX_BATCH, "train.batch_size", f"an integer from 1 to {MAX_BATCH:,}", t.batch_size),
        (0 <= t.seed <= MAX_SEED, "train.seed", f"an integer from 0 to {MAX_SEED:,}", t.seed),
        (
            0 <= cfg.data.subset_seed <= MAX_SEED,
            "data.subset_seed",
            f"an integer from 0 to {MAX_SEED:,}",
            cfg.data.subset_seed,
        ),
        (
            all(v is None or 1 <= v <= MAX_IMAGES for v in (cfg.data.train_limit, cfg.data.test_limit)),
            "data.train_limit / data.test_limit",
            f"null or an integer from 1 to {MAX_IMAGES:,}",
            (cfg.data.train_limit, cfg.data.test_limit),
        ),
        (math.isfinite(t.lr) and t.lr > 0, "train.lr", "a finite number > 0", t.lr),
        (math.isfinite(t.momentum) and 0 <= t.momentum < 1, "train.momentum", "a number in [0, 1)", t.momentum),
        (
            math.isfinite(t.weight_decay) and t.weight_decay >= 0,
            "train.weight_decay",
            "a finite number >= 0",
            t.weight_decay,
        ),
        (t.schedule in SCHEDULES, "train.schedule", f"one of {', '.join(SCHEDULES)}", t.schedule),
        (all(m >= 1 for m in t.milestones), "train.milestones", "epochs >= 1", t.milestones),
        (math.isfinite(t.gamma) and t.gamma > 0, "train.gamma", "a finite number > 0", t.gamma),
        (
            math.isfinite(t.warmup_epochs) and 0 <= t.warmup_epochs < t.epochs,
            "train.warmup_epochs",
            "a number in [0, epochs)",
            t.warmup_epochs,
        ),
        (t.crop_padding >= 0, "train.crop_padding", "an integer >= 0", t.crop_padding),
        (t.amp in AMP_MODES, "train.amp", f"one of {', '.join(AMP_MODES)}", t.amp),
        (t.save_every >= 1, "train.save_every", "an integer >= 1", t.save_every),
        (
            0 <= cfg.data.val_size <= MAX_IMAGES,
            "data.val_size",
            f"an integer from 0 to {MAX_IMAGES:,}",
            cfg.data.val_size,
        ),
    ]
    for ok, key, expected, got in checks:
        if not ok:
            raise UserError(f"{where}: '{key}' expected {expected}, got {got!r}")
