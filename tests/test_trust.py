"""Issue 14 (numbers a user can trust), the items done so far: class names and order are compared."""

from __future__ import annotations

import shutil

import pytest

from mmix_eval.cli import main
from mmix_eval.evaluate.records import read_records
from test_data import _write_tree


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A checkpoint trained on an image folder of classes cat, dog, emu (pixels encode the class)."""
    root = tmp_path_factory.mktemp("trust")
    tree = _write_tree(root / "tree", per_class=12)
    run = root / "run"
    assert main(["train", "--data", f"imagefolder:{tree}", "--epochs", "8", "--set", "train.device=cpu",
                 "--set", "model.kwargs={width: 4}", "--set", "train.batch_size=12", "--set", "train.crop_padding=0",
                 "--out", str(run), "--no-progress"]) == 0
    return tree, run / "model.safetensors"


def acc_of(folder):
    rows = read_records(next(folder.glob("*/calibration.jsonl")))
    return next(r["value"] for r in rows if r["condition"] == "test" and r["metric"] == "acc"), rows


def test_renamed_class_folder_is_refused_then_remapped_by_name(folder_run, tmp_path, capsys):
    tree, ckpt = folder_run
    assert main(["calibration", "--ckpt", str(ckpt), "--data", f"imagefolder:{tree}", "--out", str(tmp_path / "same"),
                 "--no-progress"]) == 0
    base_acc, _ = acc_of(tmp_path / "same")
    assert base_acc >= 90.0  # the model learned its classes, so shuffled labels would score differently
    renamed = tmp_path / "renamed"
    shutil.copytree(tree, renamed)
    for split in ("train", "test"):  # 'cat' -> 'zcat': the alphabetical order, hence every label, shifts
        (renamed / split / "cat").rename(renamed / split / "zcat")
    code = main(["calibration", "--ckpt", str(ckpt), "--data", f"imagefolder:{renamed}", "--out", str(tmp_path / "bad"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "class 0 is 'dog' in the evaluation data but 'cat' in the checkpoint" in err
    assert not (tmp_path / "bad").exists()
    # with a map, the labels are remapped and the accuracy is the one on the original folder
    cmap = tmp_path / "map.yaml"
    cmap.write_text("zcat: cat\n")
    assert main(["calibration", "--ckpt", str(ckpt), "--data", f"imagefolder:{renamed}", "--class-map", str(cmap),
                 "--out", str(tmp_path / "mapped"), "--no-progress"]) == 0
    mapped_acc, rows = acc_of(tmp_path / "mapped")
    assert mapped_acc == base_acc and {r["settings"]["class_map"] for r in rows} == {str(cmap)}
    # by-name cannot match 'zcat' to any class of the checkpoint: said so
    assert main(["calibration", "--ckpt", str(ckpt), "--data", f"imagefolder:{renamed}", "--class-map", "by-name",
                 "--out", str(tmp_path / "byname"), "--no-progress"]) == 2
    assert "class 'zcat' of" in capsys.readouterr().err


def test_reordered_but_same_names_remap_by_name(folder_run, tmp_path, capsys):
    tree, ckpt = folder_run
    assert main(["calibration", "--ckpt", str(ckpt), "--data", f"imagefolder:{tree}", "--out", str(tmp_path / "same"),
                 "--no-progress"]) == 0
    base_acc, _ = acc_of(tmp_path / "same")
    moved = tmp_path / "moved"
    shutil.copytree(tree, moved)
    for split in ("train", "test"):  # same three names, but 'a_emu' now sorts first
        (moved / split / "emu").rename(moved / split / "a_emu")
    cmap = tmp_path / "m.yaml"
    cmap.write_text("a_emu: emu\n")
    assert main(["calibration", "--ckpt", str(ckpt), "--data", f"imagefolder:{moved}", "--class-map", str(cmap),
                 "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    assert acc_of(tmp_path / "m")[0] == base_acc
