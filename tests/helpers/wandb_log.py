"""A reader of W&B's run file (``run-ID.wandb``), written here from its format, not taken from wandb: a 7-byte header
(``:W&B``, magic, version), then LevelDB log records in 32 KiB blocks (crc32, length, type: full / first / middle /
last), each a serialized ``wandb_internal_pb2.Record``. wandb 0.31 no longer ships a Python reader, and an offline
run writes no summary file: this is how a test reads back what an offline export wrote."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768


def _chunks(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError(f"not a W&B run file (header {data[:7]!r})")
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # the block's zero padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk
            buf = b""


def read_run(path: Path) -> dict:
    """{"config": {...}, "summary": {...}, "history": [{...}], "artifacts": [names]} of one run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = {"config": {}, "summary": {}, "history": [], "artifacts": []}
    for raw in _chunks(Path(path).read_bytes()):
        r = pb.Record()
        r.ParseFromString(raw)
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "summary":
            for u in r.summary.update:
                key = u.key or "/".join(u.nested_key)
                out["summary"][key] = json.loads(u.value_json)
        elif kind == "history":
            out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
        elif kind == "artifact":
            out["artifacts"].append(r.artifact.name)
    return out
