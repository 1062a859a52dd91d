"""Per-condition results of an evaluator still running, so that a killed or preempted evaluation resumes at the first
missing condition instead of redoing the whole evaluator.

While an evaluator runs on a checkpoint, each condition's logits (and the few numbers an evaluator keeps beside them:
an AutoAttack cascade's counts) are written, atomically, to ``<run>/<stem>.partial/`` as soon as the condition's pass
ends. A later run with the same checkpoint (hash) and options reads them back instead of taking the pass again: the
rows are computed from the same logits, so they are the same bytes. When the evaluator's records are written the
folder is removed. A folder left by other options or another checkpoint is cleared, never mixed in. Files are
safetensors (tensors and a JSON header: nothing is unpickled)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.io import atomic_write_bytes, atomic_write_json, read_bounded, safe_name

KEY_FILE = "key.json"
MAX_ENTRY = 4 << 30  # one condition's logits: 10^6 images x 1,000 classes in float32


def journal_key(options: dict, checkpoint_sha: str | None) -> str:
    """What a journaled condition is valid for: the checkpoint's hash and every option the records depend on."""
    text = json.dumps({"checkpoint_sha256": checkpoint_sha, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_name(condition: str) -> str:
    """A file per condition: its name made safe, and a hash of it (two names that sanitise alike stay apart)."""
    return f"{safe_name(condition)[:80]}-{hashlib.sha256(condition.encode()).hexdigest()[:10]}.safetensors"


class Journal:
    """One evaluator's journaled conditions on one checkpoint. ``resume``: read what a killed run left with the same
    key (else it is cleared, and every condition is computed). Counts what it gave back and what it took."""

    def __init__(self, folder: Path, key: str, resume: bool = True, write: bool = True):
        self.folder, self.key, self.write = Path(folder), key, write
        self.reused: list[str] = []
        self.computed: list[str] = []
        stored = self._stored_key()
        if self.write and self.folder.exists() and (not resume or stored != key):
            shutil.rmtree(self.folder, ignore_errors=True)  # another checkpoint's, other options', or not asked for
            stored = None
        self.readable = resume and stored == key

    def _stored_key(self) -> str | None:
        try:
            return json.loads((self.folder / KEY_FILE).read_text(encoding="utf-8")).get("key")
        except (OSError, ValueError, AttributeError):
            return None

    def has(self, condition: str) -> bool:
        return self.write and (self.folder / _file_name(condition)).is_file()

    def get(self, condition: str, count: bool = True):
        """(logits, state) journaled for ``condition``, or None. A damaged file counts as missing (recomputed).
        ``count``: a condition of the evaluator's own (the shared clean pass is not counted)."""
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = self.folder / _file_name(condition)
        if not self.readable or not path.is_file():
            return None
        try:
            data = read_bounded(path, f"journal entry of condition '{condition}'", MAX_ENTRY)
            tensors = load(data)
            meta = json.loads(_header(data).get("__metadata__", {}).get("entry", "{}"))
        except (UserError, SafetensorError, ValueError, OSError):
            return None
        if meta.get("condition") != condition or meta.get("key") != self.key or "logits" not in tensors:
            return None
        if count:
            self.reused.append(condition)
        return tensors["logits"].to(torch.float32), meta.get("state") or {}

    def put(self, condition: str, logits, state: dict | None = None, count: bool = True) -> None:
        """Keep ``condition``'s logits (and its JSON-able ``state``) once its pass is done."""
        from safetensors.torch import save

        if count:
            self.computed.append(condition)
        if not self.write:
            return
        if not (self.folder / KEY_FILE).exists():
            atomic_write_json(self.folder / KEY_FILE, {"key": self.key})
            self.readable = True
        entry = json.dumps({"condition": condition, "key": self.key, "state": state or {}}, sort_keys=True)
        data = save({"logits": logits.detach().to("cpu").contiguous()}, metadata={"entry": entry})
        atomic_write_bytes(self.folder / _file_name(condition), data)

    def drop(self, condition: str) -> None:
        """Forget one entry (a condition's batches, once the condition is whole)."""
        if self.write:
            (self.folder / _file_name(condition)).unlink(missing_ok=True)

    def close(self) -> None:
        """The evaluator's records are written: its journal is no longer needed."""
        if self.write:
            shutil.rmtree(self.folder, ignore_errors=True)


def _header(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])


def plain_state(state: dict) -> dict:
    """An evaluator's per-condition numbers as JSON values (device scalars read once, here)."""
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out[k] = plain_state(v)
        elif hasattr(v, "item"):
            out[k] = v.item()
        else:
            out[k] = v
    return out
