"""Untrusted checkpoints given to every command that takes --ckpt: refused before anything is unpickled
or imported, each with a one-line error naming the file and the field, exit code 2, no hang."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from reliability.util import cli, one_line_error

CKPT_COMMANDS = ["deformations", "fgsm", "calibration", "evaluate"]


class Payload:
    """Unpickling this object would create the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def run_ckpt(cmd, ckpt, tmp_path, capsys, *extra):
    return cli(
        [cmd, "--ckpt", str(ckpt), "--out", str(tmp_path / "res"), "--limit", "20", "--device", "cpu", *extra], capsys
    )


@pytest.mark.parametrize("cmd", CKPT_COMMANDS)
@pytest.mark.parametrize("name", ["evil.pt", "evil.safetensors"])
@pytest.mark.parametrize("force_pickle", [False, True])
@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_pickle_payloads_are_refused_before_unpickling(
    cmd, name, force_pickle, kind, tmp_path, capsys, monkeypatch, no_hang
):
    if force_pickle:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's own switch back to full unpickling
    marker = tmp_path / "pwned"
    evil = tmp_path / name
    if kind == "torch.save":
        torch.save({"weight": Payload(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps(Payload(marker), protocol=4))
    code, _, err = run_ckpt(cmd, evil, tmp_path, capsys)
    line = one_line_error(err)
    assert code == 2 and str(evil) in line and "refused without unpickling it" in line
    assert not marker.exists()
    assert not (tmp_path / "res").exists()  # nothing half-written


def test_a_pickle_payload_as_the_resume_state_is_never_unpickled(tmp_path, capsys, monkeypatch):
    """--resume reads state.pt with torch.load(weights_only=True): a payload there is skipped, not run."""
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        "digits",
        "--train-limit",
        "100",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--set",
        "model.kwargs={width: 4}",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert cli(args, capsys)[0] == 0
    marker = tmp_path / "pwned"
    for name in ("state.pt", "state.prev.pt"):
        torch.save({"format": "mmix-eval/state", "x": Payload(marker)}, out / name)
    (out / "model.safetensors").unlink()
    code, _, err = cli(args + ["--resume"], capsys)
    assert not marker.exists()
    assert "unreadable state file" in err  # refused by weights_only, said, never retried without it


def _cut_points(blob: bytes) -> dict[str, int]:
    n = struct.unpack("<Q", blob[:8])[0]
    return {
        "empty": 0,
        "1 byte": 1,
        "inside the length": 7,
        "length only": 8,
        "header's first byte": 9,
        "mid-header": 8 + n // 2,
        "header minus one": 8 + n - 1,
        "header, no data": 8 + n,
        "first data byte": 8 + n + 1,
        "mid-data": (8 + n + len(blob)) // 2,
        "last byte missing": len(blob) - 1,
    }


def test_truncation_at_every_interesting_offset(checkpoint, tmp_path, capsys, no_hang):
    blob = checkpoint.read_bytes()
    tried = 0
    for what, cut in _cut_points(blob).items():
        bad = tmp_path / f"cut-{cut}.safetensors"
        bad.write_bytes(blob[:cut])
        for cmd in CKPT_COMMANDS:
            code, _, err = run_ckpt(cmd, bad, tmp_path, capsys)
            line = one_line_error(err)
            assert code == 2 and str(bad) in line, (what, line)
            tried += 1
    assert tried == 44


def test_a_flipped_bit_anywhere_in_the_data_is_detected(checkpoint, tmp_path, capsys, no_hang):
    blob = checkpoint.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    for offset in (8 + n, 8 + n + 1000, len(blob) // 2, len(blob) - 1):
        flipped = bytearray(blob)
        flipped[offset] ^= 0x10
        bad = tmp_path / f"flip-{offset}.safetensors"
        bad.write_bytes(bytes(flipped))
        code, _, err = run_ckpt("evaluate", bad, tmp_path, capsys)
        assert code == 2 and "tensor data expected SHA-256" in one_line_error(err)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"<!DOCTYPE html><html><head><title>404</title></head><body>Not Found</body></html>", "got an HTML/XML page"),
        (b"  \n<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>", "got an HTML/XML page"),
        (struct.pack("<Q", 2**40) + b"{}", "got one claiming 1099511627776 bytes"),
        (struct.pack("<Q", 2**64 - 1) + b"{}", "got one claiming 18446744073709551615 bytes"),
        (struct.pack("<Q", 4) + b"\xff\xfe\x00\x01", "expected a JSON safetensors header, got unreadable bytes"),
        (struct.pack("<Q", 2) + b"[]", "expected a JSON object as safetensors header, got list"),
        (b"", "got 0 bytes (truncated)"),
    ],
)
def test_not_a_checkpoint(content, message, tmp_path, capsys, no_hang):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    for cmd in CKPT_COMMANDS:
        code, _, err = run_ckpt(cmd, bad, tmp_path, capsys)
        assert code == 2 and message in one_line_error(err)


def _rewrite(checkpoint: Path, tmp_path: Path, change, tensors=None, name="hostile.safetensors") -> Path:
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    change(meta)
    tensors = tensors if tensors is not None else load_file(checkpoint)
    meta.pop("data_sha256", None)  # a hostile file need not carry a hash
    path = tmp_path / name
    raw = json.dumps(meta, allow_nan=True)  # allow NaN so the hostile file can carry it
    path.write_bytes(st_save(tensors, metadata={"mmix_eval": raw, "format": "pt"}))
    return path


def _set(path: str, value):
    def change(meta):
        keys = path.split(".")
        d = meta
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return change


HOSTILE_METADATA = [
    (
        "schema_version",
        _set("schema_version", 2),
        "'schema_version' expected 1..1 (newer files need a newer mmix-eval), got 2",
    ),
    ("schema", _set("schema", "other/format"), "'schema' expected 'mmix-eval/checkpoint'"),
    (
        "num_classes as text",
        _set("model.kwargs.num_classes", "ten"),
        "'model.kwargs.num_classes' expected an integer >= 2, got 'ten'",
    ),
    (
        "in_channels negative",
        _set("model.kwargs.in_channels", -3),
        "'model.kwargs.in_channels' expected an integer >= 1, got -3",
    ),
    ("kwargs not an object", _set("model.kwargs", [1, 2]), "metadata 'model' expected {name: str, kwargs: object}"),
    ("model name a number", _set("model.name", 7), "metadata 'model' expected {name: str, kwargs: object}"),
    (
        "NaN alpha",
        _set("method.settings.alpha", float("nan")),
        "'method.settings.alpha' expected a finite number, got nan",
    ),
    (
        "negative alpha",
        _set("method.settings.alpha", -1.0),
        "'method.settings.alpha' expected a finite number > 0 or null, got -1.0",
    ),
    (
        "alpha as text",
        _set("method.settings.alpha", "2"),
        "'method.settings.alpha' expected a finite number > 0 or null, got '2'",
    ),
    (
        "settings not an object",
        _set("method.settings", [1]),
        "'method.settings' expected an object of the method's settings",
    ),
    (
        "first-layout negative alpha",
        lambda m: m.update(method={"name": "manifold_mixup", "alpha": -1.0, "loss": "bce_softmax"}),
        "'method.settings.alpha' expected a finite number > 0 or null, got -1.0",
    ),
    (
        "Infinity in metrics",
        _set("metrics.test_acc", float("inf")),
        "'metrics.test_acc' expected a finite number, got inf",
    ),
    ("unknown method", _set("config.method.name", "mystery_mix"), "'config.method.name' expected a registered method"),
    ("method name not text", _set("method.name", {"a": 1}), "'method.name' expected a printable name"),
    ("method name with control chars", _set("method.name", "mm\x1b[31m"), "'method.name' expected a printable name"),
    (
        "layer out of range",
        _set("method.settings.eligible", [0, 1, 9]),
        "'method.settings.eligible' expected layer indices in 0..3 for this model",
    ),
    (
        "negative layer",
        _set("method.settings.eligible", [-1]),
        "'method.settings.eligible' expected a list of layer indices >= 0",
    ),
    ("classes not a list", _set("data.classes", "abc"), "'data.classes' expected a list of strings, got 'abc'"),
    (
        "10 MB string",
        _set("data.spec", "x" * 10_000_000),
        "'data.spec' expected a string of at most 10000 characters, got 10000000",
    ),
    (
        "10 MB key",
        lambda m: m["data"].__setitem__("k" * 10_000_000, 1),
        "expected a string of at most 10000 characters, got 10000000",
    ),
    (
        "deep nesting",
        lambda m: m.__setitem__("extra", json.loads("[" * 500 + "]" * 500)),
        "'extra[0][0][0][0][0][0][0][0][0][0][0][0]' expected at most 12 levels",
    ),
    (
        "unregistered model (would import code)",
        _set("model.name", "os:system"),
        "names model 'os:system', a module:attr path; importing a module named by a file would run its code",
    ),
    ("kwargs that do not fit", _set("model.kwargs.num_classes", 7), "weights do not fit model 'smallnet'"),
    ("unknown model kwarg", _set("model.kwargs.depth", 50), "unknown argument(s) depth"),
    (
        "a model of 10^12 parameters",
        _set("model.kwargs.width", 200_000),
        "the metadata's model.kwargs give shape (200000, 1, 3, 3)",
    ),
    # issue 14: width 10^9 overflowed PyTorch's size computation on meta, and the fallback built it for real (36 GB)
    (
        "width 10^9 (overflows on meta)",
        _set("model.kwargs.width", 10**9),
        "building it on the meta device failed: Storage size calculation overflowed",
    ),
]


@pytest.mark.parametrize("what, change, message", HOSTILE_METADATA, ids=[h[0] for h in HOSTILE_METADATA])
def test_hostile_metadata(what, change, message, checkpoint, tmp_path, capsys, no_hang):
    bad = _rewrite(checkpoint, tmp_path, change)
    marker_free = list(tmp_path.iterdir())
    for cmd in ("evaluate", "calibration"):
        code, _, err = run_ckpt(cmd, bad, tmp_path, capsys)
        line = one_line_error(err)
        assert code == 2 and message in line, line
        assert len(line) < 2000  # the 10 MB value is never echoed
    assert list(tmp_path.iterdir()) == marker_free  # no results folder


def test_nan_weights_are_refused(checkpoint, tmp_path, capsys):
    tensors = load_file(checkpoint)
    key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[key][0] = float("nan")
    bad = _rewrite(checkpoint, tmp_path, lambda m: None, tensors)
    code, _, err = run_ckpt("evaluate", bad, tmp_path, capsys)
    assert code == 2 and f"tensor '{key}' expected finite values, got NaN or Inf" in one_line_error(err)


def test_the_unaltered_checkpoint_passes(checkpoint, tmp_path, capsys):
    """The control: the same commands on the genuine file succeed, so the refusals above are specific."""
    same = _rewrite(checkpoint, tmp_path, lambda m: None)
    for cmd in CKPT_COMMANDS:
        code, _, err = run_ckpt(cmd, same, tmp_path, capsys, *(["--eps", "2"] if cmd in ("fgsm", "evaluate") else []))
        assert code == 0, err
