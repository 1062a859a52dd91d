from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import write_tree
from conftest import raises_as_shown
from PIL import Image

from mmix_eval.data import imagefolder as imagefolder_module
from mmix_eval.data import load_data
from mmix_eval.data.augment import random_crop_flip, to_float
from mmix_eval.errors import UserError


def reference_crop(x, dy, dx, p):
    """Per-image reference: zero-pad by p and take the HxW window at offset (dy, dx)."""
    xp = torch.nn.functional.pad(x, (p, p, p, p))
    return xp[:, dy : dy + x.shape[1], dx : dx + x.shape[2]]


def test_batched_crop_matches_per_image_reference():
    x = torch.arange(6 * 2 * 5 * 5, dtype=torch.int64).remainder(251).to(torch.uint8).view(6, 2, 5, 5)
    p = 2
    out = random_crop_flip(x, p, False, torch.Generator().manual_seed(3))
    offs = torch.randint(0, 2 * p + 1, (2, 6), generator=torch.Generator().manual_seed(3))
    for i in range(6):
        assert torch.equal(out[i], reference_crop(x[i], int(offs[0, i]), int(offs[1, i]), p))


def test_crop_of_zero_and_no_flip_is_identity_and_flip_mirrors_half():
    x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(random_crop_flip(x, 0, False, torch.Generator()), x)
    out = random_crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(o, xi.flip(2))) and not torch.equal(o, xi) for o, xi in zip(out, x)]
    same = [bool(torch.equal(o, xi)) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 160 <= sum(flipped) <= 240  # ~half of 400


def test_to_float_range():
    assert torch.equal(to_float(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([0.0, 1.0]))


def _tar(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname="wrapped")
    return dest


def test_imagefolder_tree_and_archive_give_the_same_arrays(tmp_path):
    tree = write_tree(tmp_path / "tree")
    a = load_data(f"imagefolder:{tree}")
    b = load_data(f"imagefolder:{_tar(tree, tmp_path / 'x.tar.gz')}")
    assert a.classes == b.classes == ["cat", "dog", "emu"]
    assert a.train.x.shape == (12, 3, 6, 6) and a.test.x.shape == (12, 3, 6, 6)
    for d in (a, b):
        # pixel value 40*class + index identifies every image
        assert torch.equal(d.train.x[:, 0, 0, 0] // 40, d.train.y)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert a.info["layout"] == "train/ and test/ folders"


def test_imagefolder_flat_layout_splits_80_20_and_grayscale_is_one_channel(tmp_path):
    tree = write_tree(tmp_path / "flat", layout="flat", mode="L", per_class=10)
    d = load_data(f"imagefolder:{tree}")
    assert d.in_channels == 1
    assert (len(d.train), len(d.test)) == (24, 6)
    assert "80/20" in d.info["layout"]


def test_imagefolder_decodes_once_then_reads_the_cache(tmp_path, monkeypatch):
    tree = write_tree(tmp_path / "tree")
    first = load_data(f"imagefolder:{tree}")
    monkeypatch.setattr(imagefolder_module, "decode_splits", lambda *a: pytest.fail("decoded twice"))
    again = load_data(f"imagefolder:{tree}")
    assert torch.equal(first.train.x, again.train.x)


def test_imagefolder_cache_key_needs_no_listing_and_sees_added_files(tmp_path, monkeypatch):
    tree = write_tree(tmp_path / "tree")
    first = load_data(f"imagefolder:{tree}")
    imagefolder_module._MEMORY.clear()  # a new process: the cache on disk is all there is
    monkeypatch.setattr(imagefolder_module, "_list_folder", lambda *a: pytest.fail("listed every file for the key"))
    monkeypatch.setattr(imagefolder_module, "decode_splits", lambda *a: pytest.fail("decoded twice"))
    assert torch.equal(load_data(f"imagefolder:{tree}").test.x, first.test.x)
    # within one process, the decoded arrays are reused without reading the cache again
    monkeypatch.setattr(imagefolder_module.np, "load", lambda *a, **k: pytest.fail("read the cache file again"))
    assert torch.equal(load_data(f"imagefolder:{tree}").test.x, first.test.x)
    monkeypatch.undo()
    # an image added to a class folder changes that folder's mtime, hence the key: decoded afresh
    Image.fromarray(np.full((6, 6, 3), 7, np.uint8)).save(tree / "train" / "cat" / "new.png")
    os.utime(tree / "train" / "cat", ns=(1, 10**18))  # make the mtime change visible on coarse clocks too
    assert len(load_data(f"imagefolder:{tree}").train) == len(first.train) + 1


def test_an_evaluation_without_validation_split_reads_only_the_test_images(tmp_path, monkeypatch):
    tree = write_tree(tmp_path / "tree")
    full = load_data(f"imagefolder:{tree}")
    imagefolder_module._MEMORY.clear()  # a new process, with the decode cached on disk
    read = []
    real = imagefolder_module._raw_from_arrays
    monkeypatch.setattr(imagefolder_module, "_raw_from_arrays", lambda a, *r: read.append(sorted(a)) or real(a, *r))
    d = load_data(f"imagefolder:{tree}", test_limit=5, need_train=False)
    assert read == [["classes", "empty_classes", "layout", "test_x", "test_y"]]  # the training arrays were never read
    assert len(d.train) == 0 and d.in_channels == full.in_channels and d.image_size == full.image_size
    assert torch.equal(d.test.x, load_data(f"imagefolder:{tree}", test_limit=5).test.x)  # the same seeded subset
    digits = load_data("digits", need_train=False)
    assert len(digits.train) == 0 and len(digits.test) == 300


@pytest.mark.parametrize("archive", [False, True])
def test_an_empty_class_folder_is_warned_about_and_recorded(tmp_path, archive):
    tree = write_tree(tmp_path / "tree")
    (tree / "train" / "aardvark").mkdir()  # sorts first: dropping it silently would be invisible
    (tree / "test" / "aardvark").mkdir()
    src = _tar(tree, tmp_path / "t.tar.gz") if archive else tree
    for _ in range(2):  # decoded, then from the cache: said both times
        with pytest.warns(UserWarning, match=r"class folder\(s\) aardvark hold no image and are not classes"):
            d = load_data(f"imagefolder:{src}")
        imagefolder_module._MEMORY.clear()
    assert d.classes == ["cat", "dog", "emu"] and d.info["empty_class_folders"] == ["aardvark"]


def test_imagefolder_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="found no images"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(UserError, match="does not exist"):
        load_data(f"imagefolder:{tmp_path / 'nowhere'}")
    bad = write_tree(tmp_path / "bad")
    (bad / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"image 'train/dog/broken.png': expected a decodable image"):
        load_data(f"imagefolder:{bad}")
    mixed = write_tree(tmp_path / "mixed")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(mixed / "test" / "emu" / "big.png")
    with raises_as_shown(
        UserError,
        match=r"expected images of one size, got 6x6 \('test/cat/000.png'\) and 9x9 "
        r"\('test/emu/big.png'\); give an image size .*--image-size S",
    ):
        load_data(f"imagefolder:{mixed}")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"<html>not an archive</html>")
    with pytest.raises(UserError, match="expected a readable .tar or .tar.gz archive"):
        load_data(f"imagefolder:{junk}")
    with pytest.raises(UserError, match="expected a path"):
        load_data("imagefolder")


def test_seeded_subsets_and_validation_split_are_disjoint_and_reproducible(tmp_path):
    tree = write_tree(tmp_path / "t", per_class=20)
    a = load_data(f"imagefolder:{tree}", train_limit=30, val_size=15, test_limit=10, subset_seed=5)
    b = load_data(f"imagefolder:{tree}", train_limit=30, val_size=15, test_limit=10, subset_seed=5)
    assert (len(a.train), len(a.val), len(a.test)) == (30, 15, 10)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.x, b.val.x) and torch.equal(a.test.x, b.test.x)
    key = lambda s: {int(v) for v in s.x[:, 0, 0, 0]}  # every training image has a unique pixel value
    assert not key(a.train) & key(a.val)
    c = load_data(f"imagefolder:{tree}", train_limit=30, val_size=15, subset_seed=6)
    assert not torch.equal(a.train.x, c.train.x)
    with pytest.raises(UserError, match="val_size: expected fewer than the 60 training images"):
        load_data(f"imagefolder:{tree}", val_size=60)


def test_digits_is_embedded_and_uint8():
    d = load_data("digits")
    assert (len(d.train), len(d.test), d.in_channels, d.image_size, d.num_classes) == (1497, 300, 1, (8, 8), 10)
    assert d.train.x.dtype == torch.uint8 and int(d.train.x.max()) == 255
    assert d.flip is False


def test_digits_read_from_sklearns_file_equal_load_digits_and_import_no_sklearn(monkeypatch):
    """The file is read as scikit-learn reads it (golden: load_digits itself); a missing file falls back to it."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from mmix_eval.data import sources

    images, target = sources._digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
    code = "import sys; from mmix_eval.data import sources; sources._digits_arrays(); print('sklearn' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
        == "False"
    )
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # scikit-learn's file not found: load_digits
    images2, target2 = sources._digits_arrays()
    assert np.array_equal(images2, bunch.images) and np.array_equal(target2, bunch.target)


def test_torchvision_sets_without_files_say_how_to_get_them(tmp_path):
    for name in ("cifar10", "cifar100", "svhn"):
        with raises_as_shown(
            UserError, match=f"data root '{tmp_path}': expected the {name} files there, found none; pass --download"
        ):
            load_data(name, root=tmp_path)


def test_unknown_data_set_suggests():
    with pytest.raises(UserError, match=r"unknown data set 'cifar-10' \(did you mean 'cifar10'\?\)"):
        load_data("cifar-10")  # (cifar11 is nearer cifar10.1 now that it exists)


def _photo(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_mixed_sizes_decode_by_the_policy_as_torchvision_resize_and_centre_crop(tmp_path, monkeypatch):
    """--image-size S: the shorter side to round(S*256/224), then the centre S x S, pixel for pixel what
    torchvision's Resize(int) + CenterCrop(S) give on the same PIL image; 'stretch' is Resize((S, S))."""
    from torchvision import transforms as T

    root = tmp_path / "photos"
    sizes = {
        ("train", "cat"): [(40, 30), (33, 50)],
        ("train", "dog"): [(64, 64), (20, 45)],
        ("test", "cat"): [(31, 47)],
        ("test", "dog"): [(90, 28)],
    }
    for k, ((split, cls), whs) in enumerate(sizes.items()):
        (root / split / cls).mkdir(parents=True)
        for j, (w, h) in enumerate(whs):
            Image.fromarray(_photo(w, h, 10 * k + j)).save(root / split / cls / f"{j}.png")
    with pytest.raises(UserError, match="expected images of one size"):
        load_data(f"imagefolder:{root}")
    for resize, ref in (("crop", T.Compose([T.Resize(18), T.CenterCrop(16)])), ("stretch", T.Resize((16, 16)))):
        d = load_data(f"imagefolder:{root}?image_size=16&resize={resize}")
        assert d.train.x.shape == (4, 3, 16, 16) and d.test.x.shape == (2, 3, 16, 16)
        assert d.info["decode"].startswith("shorter side resized to 18" if resize == "crop" else "resized to 16x16")
        want = [np.asarray(ref(Image.open(root / "test" / c / "0.png"))).transpose(2, 0, 1) for c in ("cat", "dog")]
        assert np.array_equal(d.test.x.numpy(), np.stack(want))
    with pytest.raises(UserError, match="image_size expected an integer from 1 to 4096, got 'x'"):
        load_data(f"imagefolder:{root}?image_size=x")
    with pytest.raises(UserError, match="resize expected one of crop, stretch, got 'zoom'"):
        load_data(f"imagefolder:{root}?image_size=8&resize=zoom")


def test_large_arrays_are_memory_mapped_and_equal_the_in_memory_ones(tmp_path, monkeypatch):
    from helpers.references import is_mapped

    from mmix_eval.data.mapped import release_pages

    tree = write_tree(tmp_path / "tree", per_class=30)
    monkeypatch.setenv("MMIX_EVAL_CACHE", str(tmp_path / "c1"))
    held = load_data(f"imagefolder:{tree}")
    imagefolder_module._MEMORY.clear()
    monkeypatch.setenv("MMIX_EVAL_MMAP_MIN_MB", "0")  # every image array mapped
    mapped = load_data(f"imagefolder:{tree}")
    assert is_mapped(mapped.test.x) and not is_mapped(held.test.x)
    assert torch.equal(mapped.train.x, held.train.x) and torch.equal(mapped.test.y, held.test.y)
    batch = mapped.test.x[5:20].float()  # a batch is a copy: dropping the map's pages leaves it intact
    release_pages(mapped.test.x[5:20], 1 << 40)
    assert torch.equal(batch, held.test.x[5:20].float()) and torch.equal(mapped.test.x, held.test.x)


@pytest.mark.parametrize("damage", ["truncate", "rewrite"])
def test_a_cache_file_changed_behind_our_back_is_one_line_naming_it(tmp_path, monkeypatch, damage):
    tree = write_tree(tmp_path / "tree")
    monkeypatch.setenv("MMIX_EVAL_CACHE", str(tmp_path / "cache"))
    load_data(f"imagefolder:{tree}")
    imagefolder_module._MEMORY.clear()
    (cache,) = (tmp_path / "cache").iterdir()
    f = cache / "test_x.npy"
    data = f.read_bytes()
    f.write_bytes(data[:-10] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
    want = f"{len(data) - 10} bytes" if damage == "truncate" else "a file rewritten since"
    with pytest.raises(
        UserError,
        match=rf"decoded cache '{f}': expected the {len(data)} bytes written with the "
        rf"cache, got {want}.*delete '{cache}'",
    ):
        load_data(f"imagefolder:{tree}")


def test_a_failed_decode_leaves_no_cache_behind(tmp_path, monkeypatch):
    bad = write_tree(tmp_path / "bad")
    (bad / "test" / "dog" / "zz.png").write_bytes(b"\x89PNG not really")
    monkeypatch.setenv("MMIX_EVAL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="zz.png"):
        load_data(f"imagefolder:{bad}")
    assert not any((tmp_path / "cache").iterdir())


def test_an_image_past_pillows_decompression_bomb_limit_is_one_line(tmp_path, monkeypatch):
    """Pillow raises DecompressionBombError (not an OSError) above 2 x MAX_IMAGE_PIXELS: a one-line error."""
    from PIL import Image as PILImage

    tree = write_tree(tmp_path / "tree", size=6)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)  # 6x6 = 36 pixels > 2 x 10
    with pytest.raises(
        UserError,
        match=r"image '.*\.png': expected at most 20 pixels \(Pillow's decompression-bomb "
        r"limit\), got more",
    ):
        load_data(f"imagefolder:{tree}")
