"""Every bad input named by the training issue, through the real CLI entry point: one line, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from mmix_eval.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bad(capsys, tmp_path, *argv, match):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--out", str(out), "--no-progress", *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmix-eval: error: "), err
    assert match in lines[0], lines[0]
    assert not out.exists(), "a failed run must leave nothing behind"
    return lines[0]


@pytest.mark.parametrize(
    "argv,match",
    [
        (
            ["--model", "preactresnet81"],
            "unknown model 'preactresnet81' (did you mean 'preactresnet18'?); available: mlp, preactresnet18, preactresnet18_he, preactresnet34, preactresnet34_he, smallnet, wrn, wrn28_10",
        ),
        (
            ["--method", "manifold_mixp"],
            "unknown method 'manifold_mixp' (did you mean 'manifold_mixup'?); available: cutmix, input_mixup, label_smoothing, manifold_mixup, regmixup, vanilla",
        ),
        (
            ["--data", "cifar-10"],
            "unknown data set 'cifar-10' (did you mean 'cifar10'?); available: cifar10, cifar10.1, cifar10.2, cifar100, digits, imagefolder, spiral, svhn, tinyimagenet",
        ),
        (["--alpha", "0"], "alpha: expected a finite number > 0, got 0.0"),
        (["--alpha", "-2"], "alpha: expected a finite number > 0, got -2.0"),
        (["--alpha", "nan"], "alpha: expected a finite number > 0, got nan"),
        (["--alpha", "inf"], "alpha: expected a finite number > 0, got inf"),
        (["--method", "vanilla", "--alpha", "1"], "method 'vanilla': unknown argument 'alpha'; its arguments: loss"),
        (["--eligible", "0,4"], "eligible layer 4: expected one of 0..3 for SmallNet"),
        (
            ["--eligible", "1,layer1"],
            "--eligible: expected layer indices like 0,1,2 or module names like input,layer1, not both",
        ),
        (
            ["--eligible", "input,layer9"],
            "eligible layer 'layer9': expected a module name of SmallNet ('' = the input), e.g. '', 'normalize', 'stages', 'head'",
        ),
        (["--loss", "mse"], "unknown loss 'mse'; available: bce_softmax, soft_ce"),
        (["--epochs", "0"], "'train.epochs' expected an integer from 1 to 100,000, got 0"),
        (["--set", "train.lr_rate=0.1"], "unknown key 'train.lr_rate' (did you mean 'train.lr'?)"),
        (
            ["--set", "train.schedule=linear"],
            "'train.schedule' expected one of step, cosine, onecycle, constant, got 'linear'",
        ),
        (["--set", "lr=0.1"], "--set 'lr=0.1': expected section.key=value"),
        (
            ["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "warp"],
            "device: expected",
        ),
    ],
)
def test_bad_flags(capsys, tmp_path, argv, match):
    bad(capsys, tmp_path, *argv, match=match)


def test_missing_data_root_without_download(capsys, tmp_path):
    bad(
        capsys,
        tmp_path,
        "--data",
        "cifar100",
        "--data-root",
        str(tmp_path / "nothing"),
        match=f"data root '{tmp_path / 'nothing'}': expected the cifar100 files there, found none; pass --download",
    )


def test_bad_image_folders(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    bad(capsys, tmp_path, "--data", f"imagefolder:{tmp_path / 'empty'}", match="found no images")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    bad(capsys, tmp_path, "--data", f"imagefolder:{broken}", match="expected a readable .tar or .tar.gz archive")
    tree = tmp_path / "tree"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tree / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tree / split / c / "0.png")
    (tree / "train" / "b" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    bad(capsys, tmp_path, "--data", f"imagefolder:{tree}", match="image 'train/b/1.jpg': expected a decodable image")


def test_config_file_errors(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 3\n  momentun: 0.9\n")
    bad(
        capsys,
        tmp_path,
        "--config",
        str(cfg),
        match=f"config '{cfg}': unknown key 'train.momentun' (did you mean 'train.momentum'?)",
    )
    cfg.write_text("model: {name: smallnet\n")
    bad(capsys, tmp_path, "--config", str(cfg), match="expected valid YAML, got a syntax error")
    bad(capsys, tmp_path, "--config", str(tmp_path / "none.yaml"), match="expected a readable YAML file")


def test_output_folder_holding_a_different_run(capsys, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--out", str(out), "--no-progress", "--epochs", "1", "--set", "train.device=cpu"]
    assert run(capsys, *base)[0] == 0
    code, _, err = run(capsys, *base, "--seed", "3")
    assert code == 2 and "holds a run" in err and "--resume" in err and "--overwrite" in err
    code, _, err = run(capsys, *base, "--seed", "3", "--resume")
    assert code == 2 and "train.seed: 0 in the run, 3 given" in err
    code, out_text, _ = run(capsys, *base, "--seed", "3", "--overwrite")
    assert code == 0 and "seed 3" in out_text


def test_train_prints_a_summary_and_resume_alone_continues(capsys, tmp_path):
    out = tmp_path / "run"
    code, text, _ = run(
        capsys, "train", "--out", str(out), "--no-progress", "--epochs", "2", "--set", "train.device=cpu"
    )
    assert code == 0 and "test acc" in text and "[manifold_mixup, smallnet, digits, seed 0]" in text
    # `--out X --resume` on a finished run reloads its config, finds nothing left to do and re-saves the same weights.
    before = (out / "model.json").read_text()
    assert run(capsys, "train", "--out", str(out), "--resume", "--no-progress")[0] == 0
    import json

    assert json.loads((out / "model.json").read_text())["data_sha256"] == json.loads(before)["data_sha256"]


def test_ls_and_help(capsys):
    code, out, _ = run(capsys, "ls", "methods")
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert code == 0 and names == [
        "cutmix",
        "input_mixup",
        "label_smoothing",
        "manifold_mixup",
        "regmixup",
        "vanilla",
        "module:attr",
    ]
    args = dict(zip(names, [line.split("arguments: ")[1] for line in out.splitlines() if "arguments: " in line]))
    assert args["cutmix"] == "alpha=1.0, prob=0.5, loss='bce_softmax'" and args["vanilla"] == "loss='bce_softmax'"
    code, out, _ = run(capsys, "ls", "datasets")
    assert "digits" in out and "imagefolder" in out
    help_text = subprocess.run(
        [sys.executable, "-m", "mmix_eval", "train", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert "mmix-eval train --config configs/quick.yaml --out runs/quick" in help_text
    version = subprocess.run([sys.executable, "-m", "mmix_eval", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert version.stdout.strip().startswith("mmix-eval ")
