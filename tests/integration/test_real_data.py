"""The real path once: the small net on a seeded subset of the shared CIFAR-10 JPEGs, through the CLI."""

from __future__ import annotations

import os

import pytest
from conftest import SHARED_DATA

from mmix_eval.checkpoint import load_checkpoint
from mmix_eval.cli import main
from mmix_eval.data import load_data
from mmix_eval.evaluate.records import read_records
from mmix_eval.inference import accuracy_nll, predict_logits

ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="module")
def archive():
    if not ARCHIVE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{ARCHIVE} is missing: CI runs with ../shared beside the clone")
        pytest.skip(f"{ARCHIVE} not found (../shared/data beside the checkout)")
    return ARCHIVE


@pytest.mark.slow
def test_smallnet_on_cifar10_subset_is_well_above_chance(archive, tmp_path, capsys, shared_decode_cache):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            f"imagefolder:{archive}",
            "--train-limit",
            "5000",
            "--test-limit",
            "1000",
            "--model",
            "smallnet",
            "--set",
            "model.kwargs={width: 16}",
            "--method",
            "vanilla",
            "--epochs",
            "6",
            "--schedule",
            "onecycle",
            "--set",
            "train.device=cpu",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    model, meta = load_checkpoint(out / "model.safetensors")
    assert meta["data"]["classes"][:3] == ["airplane", "automobile", "bird"]
    assert (meta["data"]["train_size"], meta["data"]["test_size"]) == (5000, 1000)
    # Measured 41.3 % on 2 CPU cores (chance is 10 %); the bound leaves room for thread-count noise.
    assert meta["metrics"]["test_acc"] >= 30.0
    data = load_data(f"imagefolder:{archive}", test_limit=1000)
    assert accuracy_nll(predict_logits(model, data.test.x), data.test.y)["acc"] == meta["metrics"]["test_acc"]

    # The evaluators on that real checkpoint: the deformations really happen.
    res = tmp_path / "results"
    assert (
        main(
            [
                "evaluate",
                "--ckpt",
                str(out / "model.safetensors"),
                "--limit",
                "1000",
                "--eps",
                "1,8",
                "--device",
                "cpu",
                "--out",
                str(res),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = read_records(res / "run" / "deformations.jsonl")
    acc = {r["condition"]: r["value"] for r in rows if r["metric"] == "acc"}
    assert list(acc) == [
        "clean",
        "rotation20",
        "rotation40",
        "shear28.6",
        "shear57.3",
        "zoom_in60",
        "zoom_in80",
        "zoom_out120",
        "zoom_out140",
    ]
    assert acc["rotation40"] < acc["rotation20"] < acc["clean"]
    assert acc["shear57.3"] < acc["shear28.6"] and acc["zoom_out140"] < acc["zoom_out120"]
    fgsm = {r["condition"]: r["value"] for r in read_records(res / "run" / "fgsm.jsonl") if r["metric"] == "acc"}
    assert fgsm["eps8"] < fgsm["eps1"] <= fgsm["clean"]
