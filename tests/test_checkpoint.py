from __future__ import annotations

import json
import math
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from mmix_eval.checkpoint import SCHEMA, load_checkpoint, read_metadata, save_checkpoint
from mmix_eval.errors import UserError
from mmix_eval.models import create_model


def _model():
    torch.manual_seed(0)
    m = create_model("smallnet", 5, 3, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3], width=4)
    for p in m.parameters():  # non-trivial BN statistics and weights
        p.data.normal_()
    m.stages[0][1].bn1.running_mean.normal_()
    return m


META = {
    "model": {
        "name": "smallnet",
        "kwargs": {"num_classes": 5, "in_channels": 3, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "width": 4},
    },
    "data": {"classes": ["a", "b", "c", "d", "e"]},
    "method": {"name": "vanilla"},
}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.safetensors"
    model = _model()
    save_checkpoint(path, model, META)
    return path, model


def test_round_trip_is_bitwise_and_gives_equal_logits(saved):
    path, model = saved
    loaded, meta = load_checkpoint(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(4, 3, 8, 8)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert meta["schema"] == SCHEMA and meta["data"]["classes"] == META["data"]["classes"]
    assert json.loads(path.with_suffix(".json").read_text()) == meta == read_metadata(path)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left


def _refused(path, match):
    with pytest.raises(UserError, match=match):
        load_checkpoint(path)


class _Payload:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["evil.pt", "evil.safetensors"])
def test_pickles_are_refused_before_unpickling(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    zip_file = tmp_path / f"zip-{name}"
    torch.save({"w": _Payload(marker)}, zip_file)
    _refused(
        zip_file,
        "got a torch.save \\(zip/pickle\\) file; refused without unpickling it; if you trust the file, convert it",
    )
    raw = tmp_path / f"raw-{name}"
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    _refused(raw, "got a pickle file; refused without unpickling")
    assert not marker.exists()


def test_corrupt_files_give_one_line_errors(saved, tmp_path):
    path, _ = saved
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    for cut in (0, 4, 8, 8 + n // 2, 8 + n, len(blob) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(blob[:cut])
        with pytest.raises(UserError) as e:
            load_checkpoint(bad)
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
    flipped = bytearray(blob)
    flipped[-10] ^= 0x01
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    _refused(tmp_path / "flip.safetensors", "tensor data expected SHA-256 .* got another")
    (tmp_path / "page.safetensors").write_bytes(b"<!DOCTYPE html><html><body>Not found</body></html>")
    _refused(tmp_path / "page.safetensors", "got an HTML/XML page")
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    _refused(tmp_path / "huge.safetensors", "got one claiming 1099511627776 bytes")
    _refused(tmp_path / "missing.safetensors", "does not exist")


def _with_meta(tmp_path, meta, tensors=None, name="m.safetensors"):
    path = tmp_path / name
    tensors = tensors if tensors is not None else {k: v.contiguous() for k, v in _model().state_dict().items()}
    path.write_bytes(st_save(tensors, metadata={"mmix_eval": json.dumps(meta)} if meta is not None else None))
    return path


def test_invalid_metadata(tmp_path):
    base = {"schema": SCHEMA, "schema_version": 1, **META}
    _refused(_with_meta(tmp_path, None), "expected mmix-eval metadata in the safetensors header, found none")
    _refused(_with_meta(tmp_path, {**base, "schema_version": 99}), "'schema_version' expected 1..1 .* got 99")
    _refused(_with_meta(tmp_path, {**base, "model": "smallnet"}), "metadata 'model' expected")
    _refused(
        _with_meta(tmp_path, {**base, "model": {"name": "os:system", "kwargs": META["model"]["kwargs"]}}),
        "names model .os:system., a module:attr path; importing a module named by a file would run its code",
    )
    kw = dict(META["model"]["kwargs"], num_classes=7)
    _refused(
        _with_meta(tmp_path, {**base, "model": {"name": "smallnet", "kwargs": kw}}),
        "weights do not fit model 'smallnet'",
    )


def test_non_finite_weights_are_refused(tmp_path):
    tensors = {k: v.contiguous().clone() for k, v in _model().state_dict().items()}
    tensors["head.linear.weight"][0, 0] = math.nan
    path = _with_meta(tmp_path, {"schema": SCHEMA, "schema_version": 1, **META}, tensors)
    _refused(path, "tensor 'head.linear.weight' expected finite values, got NaN or Inf")


def test_save_is_atomic_when_interrupted(saved, monkeypatch):
    path, model = saved
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, {**META, "method": {"name": "changed"}})
    assert path.read_bytes() == before
    assert [p.name for p in Path(path.parent).iterdir() if p.name.endswith(".tmp")] == []
