"""Tiny-ImageNet in its distributed layout, the natural-shift test sets, and their bad inputs."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch
from builders import TINY_WNIDS, tiny_pixel, write_tinyimagenet

from mmix_eval.data import load_data
from mmix_eval.errors import UserError


def _zip(folder, dest):
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder.parent).as_posix())
    return dest


def test_tinyimagenet_native_layout_labels_every_val_image_from_the_annotations(tmp_path):
    top = write_tinyimagenet(tmp_path / "ti", grey_val={"val_4.JPEG"})
    for src in (top, _zip(top, tmp_path / "tiny-imagenet-200.zip")):
        d = load_data(f"tinyimagenet:{src}")
        # sorted wnid order, first names from words.txt
        assert d.classes == ["goldfish", "European fire salamander", "bullfrog"]
        assert (len(d.train), len(d.test)) == (12, 9) and d.test.x.shape[1:] == (3, 8, 8)
        assert "validation split as the test split" in d.info["split"]
        # every image's pixel value says its class and index: the labels came from the right place
        for split, name, n in ((d.train, "train", 4), (d.test, "val", 3)):
            got = sorted((int(y), int(p)) for y, p in zip(split.y, split.x[:, 0, 0, 0]))
            assert got == [(c, tiny_pixel(c, j, name)) for c in range(3) for j in range(n)]  # constant JPEGs: exact
        assert d.extra["test_names"][:3] == ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG"]
        assert d.extra["wnids"] == sorted(TINY_WNIDS)
    # the grey val image among colour ones is repeated to 3 channels
    assert torch.equal(d.test.x[4, 0], d.test.x[4, 2])


def test_tinyimagenet_bad_layouts_are_one_line_naming_the_file(tmp_path):
    top = write_tinyimagenet(tmp_path / "a")
    (top / "val" / "val_annotations.txt").unlink()
    with pytest.raises(
        UserError, match=r"expected val/val_annotations.txt \(the validation labels\) beside val/images/"
    ):
        load_data(f"tinyimagenet:{top}")
    top = write_tinyimagenet(tmp_path / "b")
    shutil.copy(top / "val" / "images" / "val_0.JPEG", top / "val" / "images" / "val_99.JPEG")
    with pytest.raises(
        UserError,
        match=r"tinyimagenet image '.*val/images/val_99.JPEG': expected an image listed in "
        r"'.*val_annotations.txt'",
    ):
        load_data(f"tinyimagenet:{top}")
    top = write_tinyimagenet(tmp_path / "c")
    (top / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(UserError, match=r"expected every listed image in val/images/, got 1 missing \(val_3.JPEG\)"):
        load_data(f"tinyimagenet:{top}")
    top = write_tinyimagenet(tmp_path / "d")
    with open(top / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG\tn00000000\t0\t0\t8\t8\n")
    with pytest.raises(UserError, match=r"expected 'file<TAB>wnid<TAB>box' with a wnid of train/ on line 10"):
        load_data(f"tinyimagenet:{top}")
    with pytest.raises(UserError, match="got a path that does not exist"):
        load_data(f"tinyimagenet:{tmp_path / 'nowhere'}")


def _cifar10_1(folder, n=20, labels=None, dtype=np.uint8, shape=(32, 32, 3)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    np.save(folder / "cifar10.1_v6_data.npy", rng.integers(0, 256, (n, *shape)).astype(dtype))
    np.save(folder / "cifar10.1_v6_labels.npy", np.arange(n) % 10 if labels is None else labels)
    return folder


def test_natural_shift_sets_load_checked_and_test_only(tmp_path):
    f = _cifar10_1(tmp_path / "c101")
    d = load_data(f"cifar10.1:{f}", need_train=False)
    assert d.test.x.shape == (20, 3, 32, 32) and d.classes[0] == "airplane" and d.classes[9] == "truck"
    assert torch.equal(d.test.y, torch.arange(20) % 10)
    assert set(d.info["sha256"]) == {"cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy"}
    raw = np.load(f / "cifar10.1_v6_data.npy")
    assert np.array_equal(d.test.x.numpy(), raw.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "cifar102_test.npz", images=raw[:7], labels=np.arange(7))
    assert len(load_data(f"cifar10.2:{tmp_path / 'cifar102_test.npz'}", need_train=False).test) == 7
    with pytest.raises(
        UserError,
        match=r"data set 'cifar10.1:.*': expected a data set with a training split, got a "
        r"test-only set",
    ):
        load_data(f"cifar10.1:{f}")
    with pytest.raises(
        UserError, match=r"cifar10.1 images '.*': expected uint8 of shape \(N, 32, 32, 3\), got float32"
    ):
        load_data(f"cifar10.1:{_cifar10_1(tmp_path / 'f', dtype=np.float32)}", need_train=False)
    with pytest.raises(UserError, match=r"expected uint8 of shape \(N, 32, 32, 3\), got uint8 \(20, 28, 28, 3\)"):
        load_data(f"cifar10.1:{_cifar10_1(tmp_path / 's', shape=(28, 28, 3))}", need_train=False)
    with pytest.raises(
        UserError, match=r"cifar10.1 labels .*: expected CIFAR-10 class indices 0..9, got values from 0 to 12"
    ):
        load_data(f"cifar10.1:{_cifar10_1(tmp_path / 'l', labels=np.arange(20) % 13)}", need_train=False)
    np.savez(tmp_path / "bad.npz", x=raw)
    with pytest.raises(UserError, match=r"expected an .npz with arrays 'images' and 'labels', got \['x'\]"):
        load_data(f"cifar10.2:{tmp_path / 'bad.npz'}", need_train=False)
    with pytest.raises(UserError, match=r"cifar10.1 '.*cifar10.1_v6_data.npy': expected the CIFAR-10.1 file there"):
        load_data(f"cifar10.1:{tmp_path / 'nowhere'}", need_train=False)


def test_training_on_a_memory_mapped_set_gives_the_weights_of_the_in_memory_one(tmp_path, monkeypatch):
    """The same run with every image array memory-mapped (read a batch at a time) and held in memory."""
    from builders import write_tree
    from safetensors.numpy import load_file

    from mmix_eval.cli import main
    from mmix_eval.data import imagefolder as imagefolder_module

    tree = write_tree(tmp_path / "tree", size=8, per_class=10)
    weights = {}
    for mb in ("0", "100000"):
        monkeypatch.setenv("MMIX_EVAL_MMAP_MIN_MB", mb)
        monkeypatch.setenv("MMIX_EVAL_CACHE", str(tmp_path / f"cache-{mb}"))
        imagefolder_module._MEMORY.clear()
        out = tmp_path / f"run-{mb}"
        assert (
            main(
                [
                    "train",
                    "--data",
                    f"imagefolder:{tree}",
                    "--method",
                    "manifold_mixup",
                    "--epochs",
                    "2",
                    "--set",
                    "train.device=cpu",
                    "--set",
                    "model.kwargs={width: 4}",
                    "--set",
                    "train.batch_size=10",
                    "--out",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
        weights[mb] = load_file(out / "model.safetensors")
    assert weights["0"].keys() == weights["100000"].keys()
    assert all(np.array_equal(weights["0"][k], weights["100000"][k]) for k in weights["0"])


def test_a_mixed_size_folder_trains_evaluates_and_reports_with_its_decode_policy(tmp_path, capsys):
    from PIL import Image

    from mmix_eval.cli import main
    from mmix_eval.evaluate.records import read_records

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / "photos" / split / c).mkdir(parents=True)
            for j in range(6):
                w, h = int(rng.integers(12, 40)), int(rng.integers(12, 40))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    tmp_path / "photos" / split / c / f"{j}.png"
                )
    args = [
        "train",
        "--data",
        f"imagefolder:{tmp_path / 'photos'}",
        "--method",
        "vanilla",
        "--epochs",
        "1",
        "--set",
        "train.device=cpu",
        "--set",
        "model.kwargs={width: 4}",
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "no")]) == 2
    assert "expected images of one size" in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert main([*args, "--image-size", "16", "--resize", "stretch", "--out", str(tmp_path / "run")]) == 0
    assert main(["calibration", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "res"), "--no-progress"]) == 0
    rows = read_records(tmp_path / "res" / "run" / "calibration.jsonl")
    assert rows[0]["data"] == f"imagefolder:{tmp_path / 'photos'}?image_size=16&resize=stretch"
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    assert "?image_size=16&amp;resize=stretch" in (tmp_path / "rep" / "report.html").read_text()
