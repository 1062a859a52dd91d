"""Models made elsewhere: a plain state dict rebuilt as a named model, for evaluation.

``--ckpt x.pt --model preactresnet18 --data cifar10`` evaluates weights that carry no mmix-eval metadata: a
``.safetensors`` file, or a ``.pt`` / ``.pth`` that ``torch.load(weights_only=True)`` reads (tensors in plain
dicts; a pickle of objects, such as a whole model saved with ``torch.save(model)``, is refused, never
unpickled). The model is any registered one (``mmix-eval ls models``), ``torchvision:ARCH`` or ``timm:ARCH``,
built for the data's classes and channels with ``model_args``; ``mean`` / ``std`` are the normalisation the
weights were trained with, applied inside the model (none by default: a model that normalises inside needs
nothing).

Key layouts (``key_layout``, detected by default):
- ``mmix-eval``: this project's own names (``stages.0.0.weight``, ``head.linear.weight``).
- ``official``: the official Manifold Mixup code's PreActResNet (``supervised/models/preresnet.py``), whose
  key set is exactly ``conv1``, ``layer{1..4}.N.{bn1,conv1,bn2,conv2,shortcut.0}``, ``linear`` (no final BN:
  our ``preactresnet18`` / ``preactresnet34`` are that network):
    conv1.*              -> stages.0.0.*          (the stem convolution opens stage 1)
    layer1.J.*           -> stages.0.(J+1).*
    layerI.J.* (I >= 2)  -> stages.(I-1).J.*
    *.shortcut.0.*       -> *.shortcut.*          (a Sequential of one 1x1 convolution there, a bare one here)
    linear.*             -> head.linear.*
  That code normalises in its data pipeline with CIFAR's mean (125.3, 123.0, 113.9)/255 and std
  (63.0, 62.1, 66.7)/255; for this layout those are the default (3-channel data, no ``mean`` / ``std`` given,
  no normalisation in the file), recorded in the metadata.
- ``plain``: a torchvision / timm network's own names, under this project's wrapper (``net.`` prefixed).
A ``module.`` (DataParallel / DDP) or ``_orig_mod.`` (torch.compile) prefix is dropped, and a checkpoint dict
holding the weights under ``state_dict``, ``model_state_dict``, ``model`` or ``net`` is unwrapped.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch

from mmix_eval.checkpoint import SCHEMA, SCHEMA_VERSION, weight_mismatch
from mmix_eval.data import load_data_cached
from mmix_eval.errors import ParamError, UserError, mention
from mmix_eval.io import file_sha256
from mmix_eval.models import create_model, model_factory

KeyLayout = Literal["auto", "mmix-eval", "official", "plain"]
LAYOUTS = get_args(KeyLayout)
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
OFFICIAL_CIFAR_MEAN = [125.3 / 255, 123.0 / 255, 113.9 / 255]
OFFICIAL_CIFAR_STD = [63.0 / 255, 62.1 / 255, 66.7 / 255]


@dataclass
class Foreign:
    """How to rebuild a plain state dict: the model's name, the data set it was trained on, and the rest."""

    model: str
    data: str | None = None
    model_args: dict = field(default_factory=dict)
    mean: list[float] | None = None
    std: list[float] | None = None
    key_layout: KeyLayout = "auto"
    data_root: str | None = None
    download: bool = False

    def check(self) -> None:
        if not self.data:
            raise ParamError(
                "data",
                f"expected the data set model '{self.model}' was trained on (a plain state dict "
                f"does not say), got none",
            )
        if self.key_layout not in LAYOUTS:
            raise ParamError("key_layout", f"expected one of {', '.join(LAYOUTS)}, got '{self.key_layout}'")
        for name, v in ((mention("mean"), self.mean), (mention("std"), self.std)):
            if v is not None and (not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) for x in v)):
                raise UserError(f"{name}: expected comma-separated numbers, one per channel, got {v!r}")
        if (self.mean is None) != (self.std is None):
            raise ParamError("mean/std", "expected both or neither, got one")
        model_factory(self.model)  # an unknown model fails before any file is read


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict file, read without unpickling objects."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise ParamError("ckpt", "expected a state dict file, got a path that does not exist", path) from None
    except OSError as e:
        raise ParamError("ckpt", f"expected a readable file, got {e.strerror or e}", path) from None
    if head[8:9] == b"{":  # safetensors: an 8-byte length, then its JSON header
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:
            raise ParamError(
                "ckpt", f"expected a well-formed safetensors file, got an error ({str(e)[:200]})", path
            ) from None
    else:
        import pickle

        try:  # a zip (torch.save's format) is mapped, not read: a tensor's bytes are touched only when used
            with warnings.catch_warnings():  # a sparse tensor is refused by name below; torch's note adds nothing
                warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
                warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=head.startswith(b"PK\x03\x04"))
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ParamError(
                "ckpt",
                f"expected a state dict that torch.load(weights_only=True) reads, got a file "
                f"it refuses ({first}); a whole model saved with torch.save(model), as the official code's "
                f"torch.save(C, ...) writes, is a pickle of objects that runs code when read: where its code "
                f"is and you trust the file, run torch.save(torch.load(F, weights_only=False).state_dict(), "
                f"'state.pt') and pass state.pt",
                path,
            ) from None
    return _unwrap(path, sd)


def _unwrap(path, sd) -> dict[str, torch.Tensor]:
    if isinstance(sd, dict) and not all(torch.is_tensor(v) for v in sd.values()):
        inner = next((sd[k] for k in WRAPPER_KEYS if isinstance(sd.get(k), dict)), None)
        if inner is None:
            keys = ", ".join(map(str, list(sd)[:8]))
            raise ParamError(
                "ckpt",
                f"expected a state dict (names -> tensors), or one under "
                f"{', '.join(WRAPPER_KEYS)}; got a dict of {keys}",
                path,
            )
        sd = inner
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise ParamError("ckpt", f"expected a state dict (names -> tensors), got {type(sd).__name__}", path)
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


_LAYER = re.compile(r"^layer(\d+)\.(\d+)\.(.*)$")


def official_to_mmix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official Manifold Mixup PreActResNet's names -> this project's (see the module docstring)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("conv1."):
            k = "stages.0.0." + k.removeprefix("conv1.")
        elif (m := _LAYER.match(k)) is not None:
            i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            rest = re.sub(r"^shortcut\.0\.", "shortcut.", rest)
            k = f"stages.{i - 1}.{j + 1 if i == 1 else j}.{rest}"
        elif k.startswith("linear."):
            k = "head." + k
        out[k] = v
    return out


def detect_layout(model: str, sd: dict) -> str:
    if any(k.startswith(("stages.", "head.")) for k in sd):
        return "mmix-eval"
    if model.startswith(("torchvision:", "timm:")):
        return "plain"
    if "conv1.weight" in sd and any(k.startswith("layer1.") for k in sd):
        return "official"
    return "mmix-eval"


def map_keys(sd: dict, layout: str) -> dict:
    if layout == "official":
        return official_to_mmix(sd)
    if layout == "plain":
        return {k if k.startswith("net.") or k.startswith("normalize.") else "net." + k: v for k, v in sd.items()}
    return sd


def _data(spec: str, root: str | None, download: bool = False):
    """The data set, through the evaluation's own cache (the test split is read once)."""
    return load_data_cached(spec, root, download)


def metadata(path: str | Path, foreign: Foreign) -> dict:
    """Checkpoint-like metadata for a plain state dict: what the evaluators and records read."""
    foreign.check()
    path = Path(path)
    d = _data(foreign.data, foreign.data_root, foreign.download)
    kwargs = {
        "num_classes": d.num_classes,
        "in_channels": d.in_channels,
        "mean": foreign.mean or [0.0] * d.in_channels,
        "std": foreign.std or [1.0] * d.in_channels,
        **foreign.model_args,
    }
    precheck_header(path, foreign, kwargs)  # names, dtypes, shapes and size from the header: before any data is read
    try:
        sha = file_sha256(path)
    except OSError as e:
        raise ParamError("ckpt", f"expected a readable file, got {e.strerror or e}", path) from None
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "model": {"name": foreign.model, "kwargs": kwargs},
        "data": {"spec": foreign.data, "classes": list(d.classes), "image_size": list(d.image_size)},
        "method": {"name": "external", "settings": {"file": path.name, "key_layout": foreign.key_layout}},
        "train": {},
        "config": {"data": {"name": foreign.data, "root": foreign.data_root}},
        "data_sha256": sha,
        "foreign": True,
    }


def load_foreign(path: str | Path, device, foreign: Foreign, meta: dict | None = None):
    """(model in eval mode, metadata) for a plain state dict; a mismatch of names or shapes is one line."""
    path = Path(path)
    meta = meta or metadata(path, foreign)
    sd = read_state_dict(path)
    layout = detect_layout(foreign.model, sd) if foreign.key_layout == "auto" else foreign.key_layout
    meta["method"]["settings"]["key_layout"] = layout
    sd = map_keys(sd, layout)
    if (
        layout == "official"
        and foreign.mean is None
        and meta["model"]["kwargs"].get("in_channels") == 3
        and not any(k.startswith("normalize.") for k in sd)
    ):  # the official data pipeline's normalisation
        meta["model"]["kwargs"].update(mean=list(OFFICIAL_CIFAR_MEAN), std=list(OFFICIAL_CIFAR_STD))
        meta["method"]["settings"]["normalisation"] = "official CIFAR mean/std (the official layout's default)"
    kwargs = dict(meta["model"]["kwargs"])
    try:
        model = create_model(foreign.model, **kwargs)
    except TypeError as e:
        raise ParamError(
            "model_arg", f"expected arguments model '{foreign.model}' takes, got {foreign.model_args} ({e})"
        ) from None
    want = model.state_dict()
    fit(path, foreign, layout, want, sd)
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in sd.items()}, strict=True)
    return model.to(device).eval(), meta


def _check_kinds(path: Path, want: dict, sd: dict) -> None:
    """Dense, plain (not quantized or nested) tensors of a real dtype where the model has a floating-point one."""
    for k, v in sd.items():
        kinds = (("sparse", v.layout != torch.strided), ("quantized", v.is_quantized), ("nested", v.is_nested))
        kind = next((name for name, is_kind in kinds if is_kind), None)
        if kind is not None:
            raise ParamError("ckpt", f"tensor '{k}' expected a plain dense tensor, got a {kind} one", path)
        if k in want and want[k].is_floating_point() and not v.is_floating_point():
            raise ParamError(
                "ckpt",
                f"tensor '{k}' expected a floating-point dtype (the model's is "
                f"{want[k].dtype}), got {v.dtype}; it would be cast silently",
                path,
            )


def _check_normalisation(foreign: Foreign, sd: dict, given: dict, shapes_only: bool) -> None:
    """A mean and std given for a file that holds its own normalisation buffers must be those buffers."""
    own = {k: v for k, v in sd.items() if k.startswith("normalize.")}
    if foreign.mean is None or not own or shapes_only:
        return
    differ = lambda k, v: (
        own[k].shape != v.shape or not torch.allclose(own[k].float().cpu(), v.float().cpu(), atol=1e-6)
    )  # noqa: E731
    if any(k in own and differ(k, v) for k, v in given.items()):
        got = {k.removeprefix("normalize."): [round(float(x), 4) for x in own[k].flatten()[:4]] for k in sorted(own)}
        raise ParamError(
            "mean/std",
            f"the file holds its own normalisation ({got}), got a different one; drop "
            f"{mention('mean')}/{mention('std')} to use the file's",
        )


def fit(path: Path, foreign: Foreign, layout: str, want: dict, sd: dict, shapes_only: bool = False) -> None:
    """The file's tensors (real ones, or shape-only ones on the meta device from a safetensors header) fit the
    model's state dict ``want``: dense, plain (not meta, quantized or nested) tensors of a real dtype where the
    model has a floating-point one, the names and shapes of the model, and finite values. Normalisation: the
    file's own buffers when it has them; --mean/--std that contradict them are refused, not silently applied.
    Completes ``sd`` with the normalisation buffers the model takes."""
    _check_kinds(path, want, sd)
    given = {k: v for k, v in want.items() if k.startswith("normalize.")}
    _check_normalisation(foreign, sd, given, shapes_only)
    for k in given:
        sd.setdefault(k, want[k])
    missing, unexpected, k = weight_mismatch(want, sd)
    if missing or unexpected:
        raise ParamError(
            "ckpt",
            f"state dict does not fit model '{foreign.model}' (key layout {layout}): "
            f"{len(missing)} missing, first {missing[:3]}; {len(unexpected)} unexpected, first {unexpected[:3]}",
            path,
        )
    if k is not None:
        raise ParamError(
            "ckpt",
            f"state dict does not fit model '{foreign.model}': tensor '{k}' has shape "
            f"{tuple(sd[k].shape)} in the file, the model ({mention('model_arg')} {foreign.model_args or 'none'}) "
            f"expects {tuple(want[k].shape)}",
            path,
        )
    for k, v in sd.items():
        if v.is_meta:
            if not shapes_only:
                raise ParamError("ckpt", f"tensor '{k}' expected data, got a meta tensor (shape only)", path)
        elif v.is_floating_point() and not torch.isfinite(v).all():
            raise ParamError("ckpt", f"tensor '{k}' expected finite values, got NaN or Inf", path)


def precheck_header(path: Path, foreign: Foreign, kwargs: dict) -> None:
    """A safetensors file checked from its header alone, before it is hashed or any tensor is read: every
    entry's dtype and shape, the data's extent against the file's size (a 1 TB sparse file whose header
    describes a small network is refused here, not after an hour of hashing), and the names, dtypes and
    shapes against the model built on the meta device. A torch.save zip is memory-mapped and its shapes checked
    the same way (a legacy pickle is read whole first); anything else is refused by its first bytes."""
    from mmix_eval.checkpoint import header_tensors, read_header

    try:
        with path.open("rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError:
        return  # read_state_dict says what is wrong with the path
    if head[8:9] != b"{":  # torch.save's zip (read through mmap: no tensor data read) or a legacy pickle
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
            raise ParamError(
                "ckpt",
                f"expected a safetensors file or a torch.save file (zip or pickle), got "
                f"{len(head)}+ bytes starting {head[:8].hex()}",
                path,
            )
        _fit_shapes(path, foreign, kwargs, read_state_dict(path))
        return
    header, blob = read_header(path, whole=False)
    sd = header_tensors(path, header, len(blob) - 8, size, f"{mention('ckpt')} '{path}'")
    _fit_shapes(path, foreign, kwargs, _unwrap(path, sd))


def _fit_shapes(path: Path, foreign: Foreign, kwargs: dict, sd: dict) -> None:
    """``fit`` against the model built on the meta device (nothing allocated), when the factory builds there."""
    layout = detect_layout(foreign.model, sd) if foreign.key_layout == "auto" else foreign.key_layout
    sd = map_keys(sd, layout)
    try:
        with torch.device("meta"):
            want = create_model(foreign.model, **kwargs).state_dict()
    except Exception:  # noqa: BLE001  (a factory that cannot build on meta, or bad --model-arg: said when built for real)
        return
    fit(path, foreign, layout, want, sd, shapes_only=True)
