"""The checkpoint contract: a .safetensors file whose header carries everything needed to rebuild
and cite the model, plus a readable JSON copy of that metadata beside it.

Header metadata (safetensors ``__metadata__``): {"mmix_eval": <JSON>, "format": "pt"}, where the JSON holds
    schema, schema_version, model {name, kwargs}, data {...}, method {...}, train {...}, metrics {...},
    wall_time_s, versions, git_commit, created, data_sha256 (SHA-256 of the tensor data section).

Loading never unpickles anything: a pickle or ``torch.save`` file is refused by its magic bytes
before any parser sees it, the header is bounds-checked before it is parsed, and the tensor data is
checked against the hash recorded at save time.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mmix_eval.checkpoint_meta import check_fields, check_leaves
from mmix_eval.errors import UserError, mention
from mmix_eval.io import atomic_write_bytes, atomic_write_json, check_regular
from mmix_eval.models import create_model, is_builtin_model
from mmix_eval.trust import refuse_code

SCHEMA = "mmix-eval/checkpoint"
SCHEMA_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit for the JSON header
MAX_CHECKPOINT_BYTES = 16 << 30  # 16 GiB: a PreActResNet-18 is 45 MB, a WRN-28-10 146 MB, a ViT-L 1.2 GB
ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
META_KEY = "mmix_eval"

_CONVERT_HINT = (
    'if you trust the file, convert it with: python -c "import torch, safetensors.torch as s; '
    "s.save_file(torch.load('IN', weights_only=True), 'OUT.safetensors')\" and rebuild its metadata; or, for a "
    "state dict, give --model NAME --data NAME to evaluate it as it is"
)


def _state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; clone to plain contiguous CPU tensors.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``path`` (.safetensors) and ``path`` with .json, atomically. Returns the metadata written."""
    path = Path(path)
    tensors = _state_tensors(model)
    plain = st_save(tensors)
    n = struct.unpack("<Q", plain[:8])[0]
    meta = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        **meta,
        "data_sha256": hashlib.sha256(plain[8 + n :]).hexdigest(),
    }
    blob = st_save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True, allow_nan=False), "format": "pt"})
    atomic_write_bytes(path, blob)
    atomic_write_json(path.with_suffix(".json"), meta)
    return meta


def _refuse_non_safetensors(path: Path, head: bytes) -> None:
    if head[:4] == b"PK\x03\x04":
        raise UserError(
            f"checkpoint '{path}': expected a .safetensors file, got a torch.save (zip/pickle) file; "
            f"refused without unpickling it; {_CONVERT_HINT}"
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise UserError(
            f"checkpoint '{path}': expected a .safetensors file, got a pickle file; "
            f"refused without unpickling it; {_CONVERT_HINT}"
        )
    # A pickle behind a short prefix (a length field, a stray header) is a pickle. A safetensors file has its
    # JSON header at byte 8, and its length field may hold any bytes: then there is nothing to scan.
    for offset in range(1, 17) if head[8:9] != b"{" else ():
        if head[offset : offset + 4] == b"PK\x03\x04" or (
            head[offset : offset + 1] == b"\x80"
            and head[offset + 1 : offset + 2] in (b"\x02", b"\x03", b"\x04", b"\x05")
        ):
            raise UserError(
                f"checkpoint '{path}': expected a .safetensors file, got a pickle behind a {offset}-byte "
                f"prefix; refused without unpickling it; {_CONVERT_HINT}"
            )
    if head.lstrip()[:1] == b"<":
        raise UserError(f"checkpoint '{path}': expected a .safetensors file, got an HTML/XML page (a failed download?)")


def read_header(path: str | Path, whole: bool = True) -> tuple[dict, bytes]:
    """Bounds-checked safetensors header, and the file's bytes: all of them, or (``whole=False``) only
    the 8-byte length and the header, so reading metadata never reads the tensors."""
    path = Path(path)
    size = check_regular(path, "checkpoint") if path.exists() else 0  # a FIFO would hang the read, a device fill it
    if whole and size > MAX_CHECKPOINT_BYTES:
        raise UserError(
            f"checkpoint '{path}': expected a file of at most {MAX_CHECKPOINT_BYTES:,} bytes, got {size:,} bytes"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            _refuse_non_safetensors(path, head)
            if size < 8:
                raise UserError(f"checkpoint '{path}': expected a .safetensors file, got {size} bytes (truncated)")
            n = struct.unpack("<Q", head[:8])[0]
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise UserError(
                    f"checkpoint '{path}': expected a safetensors header of at most "
                    f"{min(MAX_HEADER_BYTES, size - 8)} bytes, got one claiming {n} bytes "
                    f"(truncated or not a safetensors file)"
                )
            f.seek(0)
            blob = f.read() if whole else f.read(8 + n)
    except FileNotFoundError:
        raise UserError(f"checkpoint '{path}': expected a .safetensors file, got a path that does not exist") from None
    except OSError as e:
        raise UserError(f"checkpoint '{path}': expected a readable file, got {e.strerror or e}") from None
    try:
        header = json.loads(blob[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(
            f"checkpoint '{path}': expected a JSON safetensors header, got unreadable bytes (corrupt file)"
        ) from None
    if not isinstance(header, dict):
        raise UserError(
            f"checkpoint '{path}': expected a JSON object as safetensors header, got {type(header).__name__}"
        )
    return header, blob


def header_tensors(path, header: dict, header_bytes: int, size: int, who: str) -> dict[str, torch.Tensor]:
    """The tensors a safetensors header describes, as meta tensors (nothing read or allocated), each entry's
    dtype, shape and byte range checked, and the data's extent against the file's size: a 1 TB sparse file
    whose header describes a small network is refused here, before a byte of data is read or hashed.
    ``who``: how a message names the file (``checkpoint 'PATH'``, ``--ckpt 'PATH'``)."""
    end, sd = 0, {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        ok = (
            isinstance(v, dict)
            and isinstance(v.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in v["shape"])
            and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2
            and all(isinstance(o, int) and o >= 0 for o in v["data_offsets"])
        )
        if not ok:
            raise UserError(
                f"{who}: tensor '{k}' expected a safetensors entry (dtype, shape, data_offsets), got {str(v)[:80]}"
            )
        if v.get("dtype") not in ST_DTYPES:
            raise UserError(
                f"{who}: tensor '{k}' expected a dtype among {', '.join(ST_DTYPES)}, got {str(v.get('dtype'))[:20]}"
            )
        dtype = ST_DTYPES[v["dtype"]]
        begin, stop = v["data_offsets"]
        need = math.prod(v["shape"]) * dtype.itemsize
        if stop - begin != need:
            raise UserError(
                f"{who}: tensor '{k}' expected {need} bytes for shape {v['shape']} {v['dtype']}, got "
                f"data_offsets {begin}..{stop}"
            )
        end = max(end, stop)
        sd[k] = torch.empty(v["shape"], dtype=dtype, device="meta")
    if 8 + header_bytes + end != size:
        raise UserError(
            f"{who}: expected {end} bytes of tensor data after the header, as the header says, "
            f"got a file of {size} bytes ({size - 8 - header_bytes} after the header)"
        )
    return sd


def read_metadata(path: str | Path) -> dict[str, Any]:
    header, _ = read_header(path, whole=False)
    return _metadata(path, header)


def _metadata(path, header: dict) -> dict[str, Any]:
    raw = (header.get("__metadata__") or {}).get(META_KEY)
    if raw is None:
        raise UserError(
            f"checkpoint '{path}': expected mmix-eval metadata in the safetensors header, found none "
            f"(a safetensors file from elsewhere? give {mention('model')} NAME {mention('data')} NAME to rebuild it as a plain state dict)"
        )
    try:
        meta = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        raise UserError(f"checkpoint '{path}': metadata '{META_KEY}' expected JSON, got unreadable text") from None
    if not isinstance(meta, dict):
        raise UserError(f"checkpoint '{path}': metadata expected a JSON object, got {type(meta).__name__}")
    if meta.get("schema") != SCHEMA:
        raise UserError(f"checkpoint '{path}': metadata 'schema' expected '{SCHEMA}', got {meta.get('schema')!r}")
    version = meta.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise UserError(
            f"checkpoint '{path}': metadata 'schema_version' expected 1..{SCHEMA_VERSION} "
            f"(newer files need a newer mmix-eval), got {version!r}"
        )
    model = meta.get("model")
    if (
        not isinstance(model, dict)
        or not isinstance(model.get("name"), str)
        or not isinstance(model.get("kwargs"), dict)
    ):
        raise UserError(
            f"checkpoint '{path}': metadata 'model' expected {{name: str, kwargs: object}}, got {model!r:.200}"
        )
    check_leaves(path, meta, "", 0)
    check_fields(path, meta)
    _upgrade_model(meta, header)
    return meta


# Before 2026-12 the PreActResNets closed with He et al.'s BN-ReLU, which the official code does not have; their
# checkpoints (a head.bn.* tensor) are read as the models that keep that head, and say so.
HE_HEAD = {"preactresnet18": "preactresnet18_he", "preactresnet34": "preactresnet34_he"}


def _upgrade_model(meta: dict, header: dict) -> None:
    model = meta["model"]
    if model["name"] in HE_HEAD and "head.bn.weight" in header:
        model["upgraded_from"] = model["name"]
        model["name"] = HE_HEAD[model["name"]]
        model["layout"] = "He et al. 2016 (final BN-ReLU before pooling; written before the official head)"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", allow_import: bool = False, trusted=()):
    """Rebuild the model from the checkpoint alone. Returns (model in eval mode, metadata).

    ``allow_import``: a model saved under a ``module:factory`` path is rebuilt only when the caller
    opts in, since importing a module named by a downloaded file runs that module's code. ``trusted``: model
    names the caller gave itself (a bench YAML), rebuilt without that opt-in.
    """

    path = Path(path)
    header, head = read_header(path, whole=False)  # the header alone first: nothing else is read until it passes
    meta = _metadata(path, header)
    name, kwargs = meta["model"]["name"], meta["model"]["kwargs"]
    if not allow_import:
        refuse_code(
            "model",
            name,
            f"checkpoint '{path}': the metadata",
            "allow it with --trust-model-import (allow_import=True)",
            trusted,
        )
    n = len(head) - 8
    described = header_tensors(path, header, n, path.stat().st_size, f"checkpoint '{path}'")
    skeleton = _skeleton(path, name, kwargs)
    if skeleton is not None:
        _check_weights(path, name, skeleton, described)  # names and shapes from the header, before the data is read
    tensors = _read_tensors(path, head, meta.get("data_sha256"))
    try:
        model = create_model(name, **kwargs)
    except (RuntimeError, MemoryError, TypeError, ValueError) as e:
        raise UserError(
            f"checkpoint '{path}': model '{name}' could not be built from metadata 'model.kwargs' "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        ) from None
    if skeleton is None:
        _check_weights(path, name, model, tensors)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise UserError(f"checkpoint '{path}': weights do not fit model '{name}' ({first.strip()[:300]})") from None
    return model.to(device).eval(), meta


def _skeleton(path: Path, name: str, kwargs: dict):
    """The model built on the meta device (shapes, no memory: kwargs asking for a huge model cost nothing); None for
    a plugin factory that cannot build there (its weights are checked after the real build)."""
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except TypeError as e:
        raise UserError(f"checkpoint '{path}': metadata 'model.kwargs' does not fit model '{name}' ({e})") from None
    except UserError:
        raise
    except Exception as e:
        if is_builtin_model(name):  # every built-in model builds on meta: a failure is the metadata's (overflow)
            raise UserError(
                f"checkpoint '{path}': metadata 'model.kwargs' does not fit model '{name}' "
                f"(building it on the meta device failed: {str(e).splitlines()[0][:200]})"
            ) from None
        return None


def _read_tensors(path: Path, head: bytes, expected_sha: str | None) -> dict:
    """The whole file read again: the header must be the one checked, the data its recorded SHA-256, every tensor
    well formed and finite."""
    _, blob = read_header(path)
    if blob[: len(head)] != head:  # the file changed between the two reads: what was checked is not what is loaded
        raise UserError(
            f"checkpoint '{path}': expected the file whose header was checked, got one rewritten while read"
        )
    if expected_sha is not None and hashlib.sha256(blob[len(head) :]).hexdigest() != expected_sha:
        raise UserError(
            f"checkpoint '{path}': tensor data expected SHA-256 {expected_sha[:16]}…, got another (file corrupted after "
            f"saving)"
        )
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own SafetensorError for malformed files
        raise UserError(
            f"checkpoint '{path}': expected well-formed safetensors data, got an error ({str(e)[:200]})"
        ) from None
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise UserError(f"checkpoint '{path}': tensor '{k}' expected finite values, got NaN or Inf")
    return tensors


def _check_weights(path, name: str, reference: torch.nn.Module, tensors: dict) -> None:
    """The file's tensors have exactly the names and shapes of ``reference`` (the model built from the
    metadata, on the meta device when the factory allows it, so nothing is allocated before this check)."""
    want = reference.state_dict()
    missing, unexpected, k = weight_mismatch(want, tensors)
    if missing or unexpected:
        raise UserError(
            f"checkpoint '{path}': weights expected to match model '{name}', got "
            f"{len(missing)} missing (e.g. {missing[:3]}) and {len(unexpected)} unexpected (e.g. {unexpected[:3]}) tensors"
        )
    if k is not None:
        raise UserError(
            f"checkpoint '{path}': weights do not fit model '{name}' (tensor '{k}': the metadata's "
            f"model.kwargs give shape {tuple(want[k].shape)}, the file holds {tuple(tensors[k].shape)})"
        )


def weight_mismatch(want: dict, tensors: dict) -> tuple[list[str], list[str], str | None]:
    """How ``tensors`` fail to fit a model's state dict ``want``: the missing and the unexpected names (sorted),
    and the first name whose shape differs (None when all fit)."""
    missing, unexpected = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing or unexpected:
        return missing, unexpected, None
    return [], [], next((k for k, v in want.items() if tuple(v.shape) != tuple(tensors[k].shape)), None)
