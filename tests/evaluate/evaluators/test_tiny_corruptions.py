"""Issue 31: Tiny-ImageNet-C's image-file layout in the corruption evaluator: detected, every evaluated image
found by name and checked by class folder, the right file read for each condition."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from builders import write_tinyimagenet, write_tinyimagenet_c

from mmix_eval.cli import main
from mmix_eval.data import load_data
from mmix_eval.errors import UserError
from mmix_eval.evaluate.evaluators.corruptions.files import ImageCorruptionFiles, image_layout, list_image_files
from mmix_eval.evaluate.records import read_records


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tinyc")
    top = write_tinyimagenet(tmp / "ti", per_class=6)
    tic = write_tinyimagenet_c(tmp / "Tiny-ImageNet-C", top)
    return tmp, top, tic


def test_the_files_of_each_condition_are_read_in_test_order_and_checked(tiny):
    tmp, top, tic = tiny
    d = load_data(f"tinyimagenet:{top}", need_train=False)
    names, wnids, labels = d.extra["test_names"], d.extra["wnids"], d.test.y.numpy()
    assert image_layout(tic) and not image_layout(top)
    idx = np.array([7, 2, 5])  # a subset, out of order
    listing = list_image_files(tic, ["fog", "contrast"], [1, 4], names, wnids, labels, idx)
    for ci, c in enumerate(["fog", "contrast"]):
        f = ImageCorruptionFiles(listing, c, idx, (3, 8, 8))
        for s in (1, 4):
            got = f.rows(s, idx[[2, 0]])  # a batch of the subset
            want = np.clip(d.test.x.numpy()[idx[[2, 0]]].astype(int) - 10 * s - 5 * ci, 0, 255)
            assert got.shape == (2, 3, 8, 8) and np.abs(got.astype(int) - want).max() <= 1  # JPEG at quality 100


def test_a_missing_or_misfiled_image_is_one_line_naming_it(tiny, tmp_path):
    tmp, top, tic = tiny
    d = load_data(f"tinyimagenet:{top}", need_train=False)
    args = (d.extra["test_names"], d.extra["wnids"], d.test.y.numpy(), np.arange(len(d.test)))
    bad = shutil.copytree(tic, tmp_path / "moved")
    name = d.extra["test_names"][0]
    want, other = d.extra["wnids"][int(d.test.y[0])], d.extra["wnids"][(int(d.test.y[0]) + 1) % 3]
    shutil.move(bad / "fog" / "2" / want / name, bad / "fog" / "2" / other / name)
    with pytest.raises(
        UserError, match=rf"corruption file '.*fog/2/{other}/{name}': expected it in class folder {want}"
    ):
        list_image_files(bad, ["fog"], [1, 2], *args)
    (bad / "fog" / "2" / other / name).unlink()
    with pytest.raises(UserError, match=rf"expected the test image '{name}' \(class {want}\) there, got no file"):
        list_image_files(bad, ["fog"], [1, 2], *args)
    with pytest.raises(UserError, match=r"expected severity 3 of fog"):
        shutil.rmtree(bad / "fog" / "3")
        list_image_files(bad, ["fog"], [3], *args)


def test_cli_trains_on_tinyimagenet_and_evaluates_its_corruption_files(tiny, capsys):
    tmp, top, tic = tiny
    run = tmp / "run"
    assert (
        main(
            [
                "train",
                "--data",
                f"tinyimagenet:{top}",
                "--method",
                "vanilla",
                "--epochs",
                "1",
                "--set",
                "train.device=cpu",
                "--set",
                "model.kwargs={width: 4}",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "corruptions",
                "--ckpt",
                str(run),
                "--files",
                str(tic),
                "--corruptions",
                "fog,contrast",
                "--severities",
                "1,5",
                "--out",
                str(tmp / "res"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = read_records(tmp / "res" / "run" / "corruptions.jsonl")
    assert {r["condition"] for r in rows if r["metric"] == "acc"} >= {
        "fog-1",
        "fog-5",
        "contrast-1",
        "contrast-5",
        "mean",
    }
    assert rows[0]["settings"]["source"].startswith("Tiny-ImageNet-C files")
    assert (
        main(
            [
                "corruptions",
                "--ckpt",
                str(run),
                "--files",
                str(tic),
                "--corruptions",
                "snow",
                "--out",
                str(tmp / "res2"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "expected snow/ (<corruption>/<severity>/<class>/<image>, as Tiny-ImageNet-C" in capsys.readouterr().err
    assert not (tmp / "res2").exists()
