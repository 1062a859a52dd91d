"""The evaluator commands end to end on a digits checkpoint, and every bad input with its one-line error."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mmix_eval.cli import main
from mmix_eval.config import Config
from mmix_eval.evaluate.records import FIELDS, read_records
from mmix_eval.training import train


def train_digits(tmp_path_factory, name: str, seed: int = 0) -> Path:
    cfg = Config()
    cfg.model.kwargs = {"width": 8}
    cfg.train.epochs, cfg.train.device, cfg.train.crop_padding, cfg.train.schedule = 3, "cpu", 1, "cosine"
    cfg.train.seed = seed
    cfg.data.val_size = 200
    out = tmp_path_factory.mktemp("runs") / name
    train(cfg, out, progress=False)
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    return train_digits(tmp_path_factory, "mm-digits")


def run(capsys, *argv):
    code = main(list(argv))
    c = capsys.readouterr()
    return code, c.out, c.err


def test_evaluate_writes_tidy_records_for_every_evaluator(digits_ckpt, tmp_path, capsys):
    code, out, _ = run(
        capsys, "evaluate", "--ckpt", str(digits_ckpt), "--out", str(tmp_path / "res"), "--no-progress", "--eps", "1,8"
    )
    assert code == 0
    assert "mm-digits  deformations" in out and "rotation40" in out and "eps8" in out and "brier" in out
    folder = tmp_path / "res" / "mm-digits"
    for e in ("deformations", "fgsm", "calibration"):
        rows = read_records(folder / f"{e}.jsonl")
        with open(folder / f"{e}.csv", newline="") as f:
            table = list(csv.DictReader(f))
        assert len(rows) == len(table) and list(table[0]) == FIELDS
        assert {r["method"] for r in rows} == {"manifold_mixup"} and {r["method_settings"]["alpha"] for r in rows} == {
            2.0
        }
        assert {
            r["method_settings"]["eligible"] == [0, 1, 2] and r["train_seed"] == 0 and r["data"] == "digits"
            for r in rows
        } == {True}
        assert {(r["condition"], r["metric"]) for r in rows} >= (
            {("clean", "acc"), ("clean", "nll"), ("clean", "ece")}
            if e != "calibration"
            else {("test", "ece"), ("temperature_scaled", "ece")}
        )
        meta = json.loads((folder / f"{e}.meta.json").read_text())
        assert meta["n_images"] == 300 and "torch" in meta["versions"]
    fgsm = read_records(folder / "fgsm.jsonl")
    assert [r["settings"]["eps_255"] for r in fgsm if r["condition"].startswith("eps") and r["metric"] == "acc"] == [
        1.0,
        8.0,
    ]


def test_limit_gives_every_checkpoint_the_same_subset(digits_ckpt, tmp_path, capsys):
    for name in ("a", "b"):
        assert (
            run(
                capsys,
                "deformations",
                "--ckpt",
                str(digits_ckpt),
                "--limit",
                "50",
                "--seed",
                "3",
                "--out",
                str(tmp_path / name),
                "--no-progress",
            )[0]
            == 0
        )
    a = read_records(tmp_path / "a" / "mm-digits" / "deformations.jsonl")
    b = read_records(tmp_path / "b" / "mm-digits" / "deformations.jsonl")
    assert [r["value"] for r in a] == [r["value"] for r in b] and {r["n"] for r in a} == {50}


def bad(capsys, tmp_path, *argv, match):
    out = tmp_path / "res"
    code, _, err = run(capsys, *argv, "--out", str(out), "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mmix-eval: error: "), err
    assert match in lines[0], lines[0]
    assert not out.exists()


def test_untrusted_and_broken_checkpoint_files(digits_ckpt, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.safetensors"
    torch.save({"w": Payload()}, evil)
    for cmd in ("deformations", "fgsm", "calibration", "evaluate"):
        bad(
            capsys,
            tmp_path,
            cmd,
            "--ckpt",
            str(evil),
            match="got a torch.save (zip/pickle) file; refused without unpickling it; if you trust the file, convert it",
        )
    assert not marker.exists()
    blob = digits_ckpt.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[: len(blob) // 2])
    bad(capsys, tmp_path, "fgsm", "--ckpt", str(tmp_path / "cut.safetensors"), match="cut.safetensors")
    (tmp_path / "page.safetensors").write_bytes(b"<html><body>403 Forbidden</body></html>")
    bad(capsys, tmp_path, "fgsm", "--ckpt", str(tmp_path / "page.safetensors"), match="got an HTML/XML page")
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(st_save({"w": torch.zeros(2)}))
    bad(
        capsys,
        tmp_path,
        "calibration",
        "--ckpt",
        str(plain),
        match="expected mmix-eval metadata in the safetensors header, found none",
    )
    # The first checkpoint is fine, the second is not: nothing is written for either.
    bad(capsys, tmp_path, "evaluate", "--ckpt", str(digits_ckpt), str(plain), match="found none")


def _rewrite(src: Path, dst: Path, meta_change=None, tensor_change=None) -> Path:
    blob = src.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    meta = json.loads(json.loads(blob[8 : 8 + n])["__metadata__"]["mmix_eval"])
    tensors = {k: v.clone() for k, v in st_load(blob).items()}
    if meta_change:
        meta_change(meta)
    if tensor_change:
        tensor_change(tensors)
    meta.pop("data_sha256", None)
    dst.write_bytes(st_save(tensors, metadata={"mmix_eval": json.dumps(meta)}))
    return dst


def test_non_finite_weights_and_logits(digits_ckpt, tmp_path, capsys):
    nan = _rewrite(
        digits_ckpt, tmp_path / "nan.safetensors", tensor_change=lambda t: t["head.linear.bias"].fill_(float("nan"))
    )
    bad(
        capsys,
        tmp_path,
        "fgsm",
        "--ckpt",
        str(nan),
        match="tensor 'head.linear.bias' expected finite values, got NaN or Inf",
    )
    huge = _rewrite(
        digits_ckpt, tmp_path / "huge.safetensors", tensor_change=lambda t: t["head.linear.weight"].fill_(3e38)
    )
    bad(
        capsys,
        tmp_path,
        "deformations",
        "--ckpt",
        str(huge),
        match="model output: expected finite logits, got NaN or Inf for",
    )


def _tree(root: Path, classes: int, size: int, channels: int) -> Path:
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            shape = (size, size, 3) if channels == 3 else (size, size)
            Image.fromarray(np.full(shape, 20 * c, np.uint8)).save(d / "0.png")
    return root


def test_data_that_does_not_fit_the_checkpoint(digits_ckpt, tmp_path, capsys):
    three = _tree(tmp_path / "three", 3, 8, 1)
    bad(
        capsys,
        tmp_path,
        "fgsm",
        "--ckpt",
        str(digits_ckpt),
        "--data",
        f"imagefolder:{three}",
        match="the checkpoint's head expects 10 classes, the data set has 3",
    )
    rgb = _tree(tmp_path / "rgb", 10, 8, 3)
    bad(
        capsys,
        tmp_path,
        "fgsm",
        "--ckpt",
        str(digits_ckpt),
        "--data",
        f"imagefolder:{rgb}",
        match="the checkpoint expects 1 input channels, the data set has 3",
    )
    big = _tree(tmp_path / "big", 10, 16, 1)
    bad(
        capsys,
        tmp_path,
        "fgsm",
        "--ckpt",
        str(digits_ckpt),
        "--data",
        f"imagefolder:{big}",
        match="the checkpoint expects 8x8 images, the data set has 16x16",
    )


def test_bad_evaluation_settings(digits_ckpt, tmp_path, capsys):
    ck = str(digits_ckpt)
    bad(capsys, tmp_path, "fgsm", "--ckpt", ck, "--eps", "1,-2", match="--eps: expected finite values >= 0")
    bad(capsys, tmp_path, "fgsm", "--ckpt", ck, "--eps", "nan", match="--eps: expected finite values >= 0")
    grid = tmp_path / "g.yaml"
    grid.write_text("- {zoom: 0}\n")
    bad(
        capsys,
        tmp_path,
        "deformations",
        "--ckpt",
        ck,
        "--grid",
        str(grid),
        match="'zoom' expected a percentage > 0, got 0",
    )
    grid.write_text("- {zoom: 80, skew: 3}\n")
    bad(capsys, tmp_path, "deformations", "--ckpt", ck, "--grid", str(grid), match="unknown key(s) skew")
    bad(
        capsys,
        tmp_path,
        "deformations",
        "--ckpt",
        ck,
        "--interpolation",
        "cubic",
        match="--interpolation: expected one of nearest, bilinear",
    )
    bad(
        capsys,
        tmp_path,
        "calibration",
        "--ckpt",
        ck,
        "--bins",
        "0",
        match="--bins: expected an integer from 1 to 10,000, got 0",
    )
    bad(
        capsys,
        tmp_path,
        "calibration",
        "--ckpt",
        ck,
        "--limit",
        "0",
        match="--limit: expected an integer from 1 to 1,000,000,000, got 0",
    )
    bad(capsys, tmp_path, "calibration", "--ckpt", str(tmp_path / "nope.safetensors"), match="does not exist")


def test_an_evaluation_never_changes_its_thread_count_when_the_machine_becomes_busy(
    digits_ckpt, tmp_path, capsys, monkeypatch
):
    """Issue 43: the count is decided once and never follows the load (it changed trained weights when it did);
    a busy machine is recorded in provenance and said nowhere else."""
    from mmix_eval import threads

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(
        threads,
        "_applied",
        {"threads": 1, "source": "default", "jobs": 1, "checked_at": 0.0, "busy_tasks": "0 (test)", "free_cores": "2"},
    )
    monkeypatch.setattr(threads, "free_cores", lambda: (1, {"busy_tasks": "1 (test)", "free_cores": "1"}))
    code, _, err = run(
        capsys,
        "calibration",
        "--ckpt",
        str(digits_ckpt),
        "--limit",
        "50",
        "--out",
        str(tmp_path / "res"),
        "--no-progress",
    )
    assert code == 0 and calls == [] and "busy" not in err
    meta = json.loads((tmp_path / "res" / "mm-digits" / "calibration.meta.json").read_text())
    hw = meta["hardware"]  # the decision made once, at the start (free cores 2), not the later busy look
    assert hw["threads_from"] == "default" and hw["threads_free_cores"] == "2" and "threads_shrunk_from" not in hw


def test_bad_calibration_settings_are_one_line_before_any_result(digits_ckpt, tmp_path, capsys):
    ck = str(digits_ckpt)
    bad(
        capsys,
        tmp_path,
        "evaluate",
        "--ckpt",
        ck,
        "--calibrator",
        "temperatur",
        match="--calibrator: unknown calibrator 'temperatur' (did you mean 'temperature'?); available: dirichlet, ensemble_temperature, histogram, isotonic, matrix, none, temperature, vector",
    )
    bad(
        capsys,
        tmp_path,
        "evaluate",
        "--ckpt",
        ck,
        "--calibrator",
        "temperature,isotonic,temperature",
        match="--calibrator: expected each calibrator once, got 'temperature,isotonic,temperature'",
    )
    for value, shown in (("2", "2.0"), ("ten", "'ten'")):
        bad(
            capsys,
            tmp_path,
            "evaluate",
            "--ckpt",
            ck,
            "--conformal-alpha",
            value,
            match=f"--conformal-alpha: expected a number in (0, 1) or none, got {shown}",
        )
    bad(
        capsys,
        tmp_path,
        "calibration",
        "--ckpt",
        ck,
        "--calibration-split",
        "300",
        match="--calibration-split: expected fewer than the test split's 300 images (some must be left to evaluate), got 300",
    )
    bad(
        capsys,
        tmp_path,
        "calibration",
        "--ckpt",
        ck,
        "--calibration-split",
        "100",
        "--limit",
        "250",
        match="--calibration-split: expected at most 50 with limit 250 (the test split has 300 images), got 100",
    )
    bad(
        capsys,
        tmp_path,
        "calibration",
        "--ckpt",
        ck,
        "--calibration-split",
        "x",
        match="--calibration-split: expected an integer, got 'x'",
    )


def test_a_calibration_split_fits_on_test_images_never_evaluated(digits_ckpt, tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "evaluate",
        "--ckpt",
        str(digits_ckpt),
        "--out",
        str(tmp_path / "res"),
        "--no-progress",
        "--evaluators",
        "deformations,calibration",
        "--calibration-split",
        "100",
        "--calibrator",
        "vector",
    )
    assert code == 0 and "nll@vector" in out
    folder = tmp_path / "res" / "mm-digits"
    rows = read_records(folder / "deformations.jsonl")
    assert {r["n"] for r in rows} == {200} and {r["settings"]["calibration_split"] for r in rows} == {100}
    scaled = [r for r in rows if r["calibrator"] == "vector"]
    assert {r["condition"] for r in scaled} == {r["condition"] for r in rows}  # every condition, calibrated
    assert {r["settings"]["calibrator_fit_images"] for r in scaled} == {100}
    assert {r["settings"]["calibrator_fit_on"] for r in scaled} == {"100 seeded test images, never evaluated"}
    evaluated = np.load(folder / "deformations.outcomes.npz")["indices"]
    assert len(evaluated) == 200
    from mmix_eval.evaluate.target import split_test

    _, held = split_test(300, None, 0, 100)
    assert not set(evaluated.tolist()) & set(held.tolist())  # fitted on images no condition evaluates
    calib = read_records(folder / "calibration.jsonl")
    assert {r["condition"] for r in calib} == {"test", "vector_scaled"}


@pytest.fixture(scope="module")
def second_ckpt(tmp_path_factory):
    return train_digits(tmp_path_factory, "mm-digits-s1", seed=1)


def test_an_ensemble_is_evaluated_as_one_model_whose_softmax_is_the_members_mean(
    digits_ckpt, second_ckpt, tmp_path, capsys
):
    from mmix_eval.checkpoint import load_checkpoint
    from mmix_eval.data import load_data

    code, out, _ = run(
        capsys,
        "evaluate",
        "--ensemble",
        str(digits_ckpt),
        str(second_ckpt),
        "--out",
        str(tmp_path / "res"),
        "--no-progress",
        "--eps",
        "8",
    )
    assert code == 0
    folder = tmp_path / "res" / "manifold_mixup-ensemble"
    rows = read_records(folder / "deformations.jsonl")
    assert {r["method_label"] for r in rows} == {"manifold_mixup ensemble of 2"} and {
        r["train_seed"] for r in rows
    } == {None}
    assert {r["method_settings"]["ensemble_members"] for r in rows} == {2}
    assert {r["calibrator"] for r in rows} == {"none", "temperature"}  # fitted on the members' shared validation split
    # the clean accuracy, from an independent computation: argmax of the mean of the two members' softmax
    d = load_data("digits")
    x = d.test.x.float() / 255
    with torch.no_grad():
        p = sum(torch.softmax(load_checkpoint(c)[0].eval()(x), 1) for c in (digits_ckpt, second_ckpt)) / 2
    expected = 100.0 * float((p.argmax(1) == d.test.y).double().mean())
    clean = next(r["value"] for r in rows if r["condition"] == "clean" and r["metric"] == "acc")
    assert clean == pytest.approx(expected, abs=1e-9)
    meta = json.loads((folder / "fgsm.meta.json").read_text())
    assert meta["checkpoint"] == [str(digits_ckpt), str(second_ckpt)]
    # evaluated again with --skip-done semantics through the library: nothing is redone for the same members
    from mmix_eval.evaluate.base import EvalOptions
    from mmix_eval.evaluate.runner import EvalJob, make_plan, run_evaluation

    before = (folder / "fgsm.meta.json").read_text()
    run_evaluation(
        [digits_ckpt, second_ckpt],
        make_plan(["fgsm"], {"fgsm": {"eps": [8]}}),
        tmp_path / "res",
        EvalOptions(progress=False),
        EvalJob(echo=lambda *_: None, skip_done=True, ensemble=True),
    )
    assert (folder / "fgsm.meta.json").read_text() == before


def test_bad_ensembles_are_one_line_before_any_result(digits_ckpt, tmp_path, capsys):
    bad(
        capsys,
        tmp_path,
        "evaluate",
        "--ensemble",
        str(digits_ckpt),
        match="ensemble: expected at least 2 checkpoints, got 1",
    )
    other = tmp_path / "cifar-ish"
    bad(
        capsys,
        tmp_path,
        "evaluate",
        "--ensemble",
        str(digits_ckpt),
        str(tmp_path / "none-*"),
        match="--ensemble: expected checkpoint files, got a pattern that matches nothing",
    )
    assert not other.exists()
