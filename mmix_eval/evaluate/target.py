"""What an evaluation runs on: a model (from a checkpoint, or any nn.Module), its [0, 1] test images with
their indices into the full test split, and the record columns from the checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmix_eval.data import ImageData, load_data_cached
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import OptionError
from mmix_eval.evaluate.checks import check_logits, output_checks, zero_gradient_check  # noqa: F401 (re-exported)
from mmix_eval.evaluate.images import Images
from mmix_eval.evaluate.outcomes import subset_hash
from mmix_eval.evaluate.passes import fit_batch_size, logits_of, prepare_model, setup, shard_batches  # noqa: F401
from mmix_eval.trust import refusal
from mmix_eval.upgrade import method_record


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
    test_size: int | None = None  # images in the full test split (None: not known, as for tensors given directly)
    clean: torch.Tensor | None = None  # clean test logits, computed once and shared by the evaluators
    precision: str = "fp32"  # "bf16": inference forwards under bf16 autocast (a GPU, for a checkpoint trained so)
    channels_last: bool = False  # on a GPU, where training used it
    settings: dict = field(default_factory=dict)  # evaluation-wide settings every record carries (precision, class map)
    val_source: str = "the checkpoint's validation split"  # which held-out images ``val`` holds
    calibration: Any = (
        None  # name -> fitted post-hoc calibrator (``evaluate.calibrate.Fitted``), shared by the evaluators
    )
    val_logits: Any = None  # the held-out images' logits, computed once for every calibrator fitted on them
    conformal: Any = None  # (calibrator, alpha) -> conformal thresholds (``evaluate.conformal.Thresholds``)
    calibration_note: str | None = None  # why there are no calibrated rows, when there are none
    classes: list[str] | None = None  # the checkpoint's class names, in its label order (None: not known)
    # () -> the checkpoint's training images (loaded on first call; None: not known, as for tensors given directly)
    train: Callable[[], Images] | None = None
    # where a shift evaluator keeps each condition's logits as it goes (``evaluate.journal.Journal``; None: nowhere)
    journal: Any = None

    def __post_init__(self):
        if self.indices is None:
            self.indices = np.arange(len(self.test), dtype=np.int64)
        self.base.setdefault("subset", subset_hash(self.indices))
        self.settings.setdefault("precision", self.precision)


def target_from_module(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    name: str = "model",
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    train: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Target:
    """Evaluate any nn.Module mapping [0, 1] images to logits, with no checkpoint file. ``train``: its training
    images and labels, which the OOD evaluator's feature scores are fitted on (without them it has none)."""
    base = {"run": name, "model": type(model).__name__, "data": "tensors"}
    return Target(
        model=model,
        test=Images(x, y),
        val=Images(*val) if val is not None else None,
        run=name,
        base=base,
        val_source="the validation images given",
        train=(lambda: Images(*train)) if train is not None else None,
    )


def base_columns(meta: dict, ckpt: Path, run: str) -> dict[str, Any]:
    m = method_record(meta.get("method", {}))
    settings = {k: v for k, v in (m.get("settings") or {}).items() if v is not None}  # alpha, eligible, loss, prob, ...
    members = (meta.get("ensemble") or {}).get("members")
    if members:  # an ensemble: its members' method and settings, how many, and no seed of its own
        settings["ensemble_members"] = len(members)
    return {
        "run": run,
        "checkpoint": ", ".join(members) if members else str(ckpt),
        "model": meta["model"]["name"],
        "method": m.get("name"),
        "method_settings": settings,
        "train_seed": meta.get("train", {}).get("seed"),
        "data": meta.get("data", {}).get("spec"),
    }


def eval_data(
    meta: dict,
    data: str | None,
    root: str | None,
    limit: int | None,
    seed: int,
    with_val: bool = True,
    class_map: str | None = None,
    download: bool = False,
    calibration_split: int | None = None,
    trusted: Collection[str] = (),
) -> tuple[Images, Images | None, str, np.ndarray, int, Callable[[], Images]]:
    """The test split (seeded subset of ``limit`` images, keyed by the evaluation seed so every checkpoint
    sees the same images) and the held-out images a calibrator is fitted on: the checkpoint's own validation
    split, if it held one out of training, or with ``calibration_split`` N seeded test images, which are then
    left out of the images drawn for evaluation (they can never be evaluated).
    Labels are the checkpoint's: the data's class names must equal the checkpoint's, in order, unless
    ``class_map`` says how to remap them (see ``class_lookup``).
    A data spec read from the metadata that would import code (``module:function``) is refused unless the caller
    names it in ``data`` or ``trusted`` (the trust boundary, ``mmix_eval.trust``)."""
    cfg = meta.get("config", {}).get("data", {})
    spec = data or meta.get("data", {}).get("spec") or cfg.get("name")
    if not isinstance(spec, str):
        raise UserError("checkpoint metadata 'data.spec' expected a data set name, got none; give the data option")
    if data is None:
        why = refusal(
            "data", spec, "the checkpoint's metadata", "give it yourself with this option (the same spec)", trusted
        )
        if why is not None:
            raise OptionError("data", why)
    same = data is None or data == meta.get("data", {}).get("spec")
    root = root or cfg.get("root")
    val_size = int(cfg.get("val_size") or 0) if same and with_val and calibration_split is None else 0
    # The training images are loaded only to rebuild the checkpoint's validation split (temperature scaling).
    try:
        d = load_data_cached(
            spec,
            root,
            download,
            cfg.get("train_limit") if same else None,
            val_size,
            int(cfg.get("subset_seed") or 0) if same else 0,
        )
    except UserError as e:
        raise OptionError(
            "data", f"{e} (the data set named in the checkpoint's metadata; override it, and data_root)"
        ) from None
    x, y = d.test.x, d.test.y
    idx, held = split_test(len(y), limit, seed, calibration_split)
    if len(idx) < len(y):
        x, y = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
    check_shapes(meta, d, remapped=class_map is not None)  # the head's size first: the plainest mismatch
    lut = class_lookup(meta, d, class_map)
    if held is not None:
        val = Images(d.test.x[torch.from_numpy(held)], d.test.y[torch.from_numpy(held)])
    else:
        val = Images(d.val.x, d.val.y) if d.val is not None else None
    if lut is not None:
        y = lut[y]
        val = Images(val.x, lut[val.y]) if val is not None else None

    def training_images() -> Images:  # the checkpoint's own training images (its limit, seed and validation split)
        t = load_data_cached(
            spec,
            root,
            download,
            cfg.get("train_limit") if same else None,
            int(cfg.get("val_size") or 0) if same else 0,
            int(cfg.get("subset_seed") or 0) if same else 0,
            need_train=True,
        ).train
        return Images(t.x, lut[t.y] if lut is not None else t.y)

    return Images(x, y), val, spec, idx, len(d.test), training_images


def split_test(
    n: int, limit: int | None, seed: int, calibration_split: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(evaluated indices, held-out calibration indices or None) into a test split of n images. Without a
    calibration split: all n, or a seeded subset of ``limit`` (as always). With one: N seeded images held out
    first, and the evaluated images (all the rest, or ``limit`` of them) drawn from the rest, so the two are
    disjoint by construction."""
    if limit is not None and limit < 1:
        raise OptionError("limit", f"expected an integer >= 1, got {limit}")
    if calibration_split is None:
        if limit is None or limit >= n:
            return np.arange(n, dtype=np.int64), None
        return np.sort(np.random.default_rng([seed, 0x74657374]).permutation(n)[:limit]), None
    if calibration_split >= n:
        raise OptionError(
            "calibration_split",
            f"expected fewer than the test split's {n} images (some must be left to evaluate), got {calibration_split}",
        )
    rest = n - calibration_split
    if limit is not None and limit > rest:
        raise OptionError(
            "calibration_split",
            f"expected at most {n - limit} with limit {limit} (the test split has {n} images), got {calibration_split}",
        )
    perm = np.random.default_rng([seed, 0x63616C69]).permutation(n)
    held, pool = np.sort(perm[:calibration_split]), np.sort(perm[calibration_split:])
    if limit is not None and limit < rest:
        pool = pool[np.sort(np.random.default_rng([seed, 0x74657374]).permutation(rest)[:limit])]
    return pool.astype(np.int64), held.astype(np.int64)


def class_lookup(meta: dict, d: ImageData, class_map: str | None) -> torch.Tensor | None:
    """None when the data's classes are the checkpoint's, in the same order (labels as they are); else, with
    a ``class_map`` ('by-name', or a YAML file mapping the data's class names to the checkpoint's), the
    lookup table data label -> checkpoint label. Different names or order without one is an error: a model
    scored against shuffled labels gives a wrong number, silently."""
    trained = meta.get("data", {}).get("classes")
    if not trained:  # a checkpoint that names no classes: nothing to compare (its head size is still checked)
        return None
    if class_map is None:
        if list(trained) == list(d.classes):
            return None
        i = next((k for k, (a, b) in enumerate(zip(d.classes, trained)) if a != b), min(len(d.classes), len(trained)))
        got = d.classes[i] if i < len(d.classes) else "nothing"
        want = trained[i] if i < len(trained) else "nothing"
        raise OptionError(
            "data",
            f"'{d.spec}': class {i} is '{got}' in the evaluation data but '{want}' in the "
            f"checkpoint; expected the checkpoint's {len(trained)} classes in its order (give "
            f"class_map 'by-name' to remap labels by class name, or a YAML file of data name: "
            f"checkpoint name)",
        )
    names = {c: c for c in d.classes}
    if class_map != "by-name":
        from mmix_eval.io import load_yaml

        mapping = load_yaml(Path(class_map), "class map")
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise OptionError(
                "class_map",
                f"'{class_map}': expected a YAML mapping of data class name: checkpoint class "
                f"name, got {type(mapping).__name__}",
            )
        unknown = sorted(set(mapping) - set(d.classes))
        if unknown:
            raise OptionError(
                "class_map",
                f"'{class_map}': maps '{unknown[0]}', which is not a class of '{d.spec}' ({', '.join(d.classes)})",
            )
        names.update(mapping)
    index = {c: k for k, c in enumerate(trained)}
    missing = [c for c in d.classes if names[c] not in index]
    if missing:
        raise OptionError(
            "class_map",
            f"class '{missing[0]}' of '{d.spec}' expected one of the checkpoint's classes "
            f"({', '.join(trained)}), got no match{' by name' if class_map == 'by-name' else ''}",
        )
    seen: dict[str, str] = {}
    for c in d.classes:
        if names[c] in seen:
            raise OptionError(
                "class_map",
                f"'{class_map}': expected each checkpoint class at most once, got "
                f"'{seen[names[c]]}' and '{c}' of '{d.spec}' both mapped to '{names[c]}'",
            )
        seen[names[c]] = c
    return torch.tensor([index[names[c]] for c in d.classes], dtype=torch.int64)


def check_shapes(meta: dict, d: ImageData, remapped: bool = False) -> None:
    kw = meta["model"]["kwargs"]
    if kw.get("num_classes") != d.num_classes and not (remapped and d.num_classes <= kw.get("num_classes", 0)):
        raise UserError(
            f"data '{d.spec}': the checkpoint's head expects {kw.get('num_classes')} classes, "
            f"the data set has {d.num_classes}"
        )
    if kw.get("in_channels") != d.in_channels:
        raise UserError(
            f"data '{d.spec}': the checkpoint expects {kw.get('in_channels')} input channels, "
            f"the data set has {d.in_channels}"
        )
    size = meta.get("data", {}).get("image_size")
    if size is not None and list(size) != list(d.image_size):
        raise UserError(
            f"data '{d.spec}': the checkpoint expects {size[0]}x{size[1]} images, "
            f"the data set has {d.image_size[0]}x{d.image_size[1]}"
        )


def load_target(
    ckpt: str | Path,
    device,
    data: str | None = None,
    root: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    run: str | None = None,
    allow_import: bool = False,
    with_val: bool = True,
    class_map: str | None = None,
    foreign=None,
    meta: dict | None = None,
    download: bool = False,
    calibration_split: int | None = None,
    members: list | None = None,
    trusted: Collection[str] = (),
) -> Target:
    """``foreign``: a ``mmix_eval.foreign.Foreign`` when ``ckpt`` is a plain state dict (see foreign.py).
    ``members``: checkpoints evaluated as one deep ensemble (``evaluate/ensemble.py``; ``ckpt`` is the first).
    ``trusted``: model and data specs the caller named itself (a bench YAML), which the checkpoint may name although
    they import code (``mmix_eval.trust``)."""
    from mmix_eval.checkpoint import load_checkpoint

    ckpt = Path(ckpt)
    if members:
        from mmix_eval.evaluate.ensemble import load_ensemble

        model, meta = load_ensemble([Path(m) for m in members], device, allow_import, trusted)
    elif foreign is not None:
        from mmix_eval.foreign import load_foreign

        model, meta = load_foreign(ckpt, device, foreign, meta)
    else:
        model, meta = load_checkpoint(ckpt, device, allow_import=allow_import, trusted=trusted)
    test, val, spec, idx, test_size, training_images = eval_data(
        meta, data, root, limit, seed, with_val, class_map, download, calibration_split, trusted
    )
    run = run or ckpt.parent.name or ckpt.stem
    base = base_columns(meta, ckpt, run)
    base["data"] = spec
    train_cfg = meta.get("train", {})
    gpu = torch.device(device).type == "cuda"
    if gpu:  # resident on the device as uint8, as training keeps them: no host copy per batch and condition
        test = Images(test.x.to(device), test.y)  # (labels stay on the CPU, beside the logits)
        val = Images(val.x.to(device), val.y) if val is not None else None
    precision = "bf16" if gpu and train_cfg.get("amp") == "bf16" else "fp32"
    settings = {
        "precision": precision,
        **({"class_map": class_map} if class_map else {}),
        **({"calibration_split": calibration_split} if calibration_split else {}),
    }
    source = (
        f"{calibration_split} seeded test images, never evaluated"
        if calibration_split
        else "the checkpoint's validation split"
    )
    return Target(
        model=model,
        test=test,
        val=val,
        run=run,
        base=base,
        indices=idx,
        test_size=test_size,
        precision=precision,
        channels_last=bool(gpu and train_cfg.get("channels_last")),
        settings=settings,
        val_source=source,
        classes=list(meta.get("data", {}).get("classes") or []) or None,
        train=training_images if not members else None,  # an ensemble's members may differ in training data
    )
