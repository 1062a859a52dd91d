"""Issue 44, items 2, 3 and 8: every read bounded before it allocates, pixels read as they are, data that
contradicts itself refused. Each test failed before its fix (a hang, a traceback, memory held whole, or a
silently wrong number); each case is now a one-line error naming the input, or the right pixels."""

from __future__ import annotations

import io
import os
import shutil
import signal
import tarfile
import tracemalloc
import zipfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from builders import write_tinyimagenet, write_tree
from PIL import Image

from mmix_eval import results
from mmix_eval.cli import main
from mmix_eval.data import decode, load_data
from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import read_records
from mmix_eval.evaluate.target import class_lookup
from mmix_eval.io import IMAGE_CAP, read_bounded


def one_error(capsys, argv, message):
    assert main(argv) == 2, message
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], (message, err)


@contextmanager
def no_hang(seconds: int = 20):
    """A read that blocks (a FIFO with no writer) fails the test instead of hanging the suite."""

    def expired(*_):
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def peak_python_memory(limit_mb: float):
    """Python-level allocations (bytes objects, numpy arrays) peak under ``limit_mb`` while the block runs."""
    tracemalloc.start()
    try:
        yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < limit_mb * 1e6, f"peak {peak / 1e6:.0f} MB held (limit {limit_mb} MB)"


# ---------------------------------------------------------------- special files where a file is read


def test_a_device_or_fifo_among_images_is_one_line_naming_it(tmp_path):
    """A symlink to /dev/zero in an image folder grew memory without bound; a FIFO hung forever."""
    for kind in ("zero", "fifo"):
        root = write_tree(tmp_path / kind)
        bad = root / "test" / "dog" / "999.png"
        os.symlink("/dev/zero", bad) if kind == "zero" else os.mkfifo(bad)
        want = "character device" if kind == "zero" else "FIFO"
        with no_hang(), pytest.raises(UserError, match=rf"image '.*999.png': expected a regular file, got a {want}"):
            load_data(f"imagefolder:{root}")


def test_special_files_named_on_the_command_line_are_one_line(tmp_path, capsys):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with no_hang():
        one_error(
            capsys,
            ["bench", str(fifo), "--out", str(tmp_path / "b")],
            f"bench config '{fifo}': expected a regular file, got a FIFO (named pipe)",
        )
        one_error(
            capsys,
            ["bench", "/dev/zero", "--out", str(tmp_path / "b")],
            "bench config '/dev/zero': expected a regular file, got a character device",
        )
        one_error(
            capsys,
            ["calibration", "--ckpt", str(fifo), "--out", str(tmp_path / "c")],
            f"checkpoint '{fifo}': expected a regular file, got a FIFO (named pipe)",
        )
        with pytest.raises(ValueError, match="expected a regular file, got a FIFO"):
            read_records(fifo)
        with pytest.raises(ValueError, match="expected a regular file, got a device"):
            results.outcomes("/dev/zero")  # it was read to 5.3 GB
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_read_bounded_refuses_a_file_past_its_cap_before_reading(tmp_path):
    f = tmp_path / "words.txt"
    f.write_bytes(b"x" * 1001)
    with pytest.raises(
        UserError, match=r"words '.*words.txt': expected a file of at most 1,000 bytes, got 1,001 bytes"
    ):
        read_bounded(f, "words", cap=1000)
    assert read_bounded(f, "words", cap=1001) == b"x" * 1001
    with pytest.raises(UserError, match="expected a regular file, got a folder"):
        read_bounded(tmp_path, "words")


# ---------------------------------------------------------------- bombs: archive and npz members


def _zip_member_of_zeros(zf: zipfile.ZipFile, name: str, size: int, prefix: bytes = b"") -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(prefix)
        block = bytes(1 << 20)
        left = size - len(prefix)
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def test_an_archive_member_past_the_image_cap_is_refused_unread(tmp_path):
    """A 6.7 MB zip holding a 6 GB .JPEG was read whole (MemoryError traceback), and a 28 MB tar.gz member too:
    now the member's stated size is refused before a byte is decompressed. 100 MB members stand in for them."""
    big = IMAGE_CAP + (36 << 20)
    top = write_tinyimagenet(tmp_path / "ti")
    archive = tmp_path / "ti.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in sorted(top.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(tmp_path / "ti").as_posix())
        _zip_member_of_zeros(zf, "tiny-imagenet-200/train/n01443537/images/bomb.JPEG", big)
    assert archive.stat().st_size < 1_000_000
    with (
        peak_python_memory(30),
        pytest.raises(
            UserError,
            match=rf"image in '.*ti.zip' 'tiny-imagenet-200/train/n01443537/images/bomb.JPEG': expected an "
            rf"archive member of at most {IMAGE_CAP:,} bytes, got one of {big:,} bytes",
        ),
    ):
        load_data(f"tinyimagenet:{archive}")
    root = write_tree(tmp_path / "t")
    tgz = tmp_path / "t.tar.gz"
    with tarfile.open(tgz, "w:gz", compresslevel=1) as tar:
        for p in sorted(root.rglob("*.png")):
            tar.add(p, p.relative_to(root).as_posix())
        info = tarfile.TarInfo("test/cat/bomb.png")
        info.size = big
        tar.addfile(info, io.BufferedReader(_Zeros(big)))
    assert tgz.stat().st_size < 1_000_000
    with (
        peak_python_memory(30),
        pytest.raises(
            UserError,
            match=rf"image in '.*t.tar.gz' 'test/cat/bomb.png': expected an archive member of at most "
            rf"{IMAGE_CAP:,} bytes, got one of {big:,} bytes",
        ),
    ):
        load_data(f"imagefolder:{tgz}")


def test_an_npz_member_past_its_cap_is_refused_before_numpy_reads_it(tmp_path):
    """A 7.5 MB cifar102_test.npz holding 7.15 GiB was loaded by np.load; here a 300 MB member (cap 256 MiB)."""
    path = tmp_path / "cifar102_test.npz"
    header = io.BytesIO()
    n = 300_000_000 // 3072
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (n, 32, 32, 3)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        _zip_member_of_zeros(zf, "images.npy", len(header.getvalue()) + n * 3072, header.getvalue())
        with zf.open("labels.npy", "w") as f:
            np.save(f, np.zeros(n, np.int64))
    with (
        peak_python_memory(30),
        pytest.raises(
            UserError,
            match=r"cifar10.2 file '.*cifar102_test.npz': expected arrays of at most 268,435,456 bytes "
            r"each, got member 'images.npy' of 299,999,\d\d\d bytes",
        ),
    ):
        load_data(f"cifar10.2:{path}", need_train=False)


def test_a_tinyimagenet_text_file_past_its_cap_is_refused(tmp_path, monkeypatch):
    """A 6 GB nested words.txt was read whole; the cap (64 MiB) is lowered here to keep the test small."""
    from mmix_eval.data import tinyimagenet

    top = write_tinyimagenet(tmp_path / "ti")
    (top / "words.txt").write_bytes(b"n0\tx\n" * 2000)
    monkeypatch.setattr(tinyimagenet, "TEXT_CAP", 5000)
    archive = shutil.make_archive(str(tmp_path / "ti"), "zip", tmp_path / "ti")
    with pytest.raises(
        UserError,
        match=r"tinyimagenet file in '.*ti.zip' 'tiny-imagenet-200/words.txt': expected an "
        r"archive member of at most 5,000 bytes, got one of 10,000 bytes",
    ):
        load_data(f"tinyimagenet:{archive}")


# ---------------------------------------------------------------- decoding in bounded memory


def test_decoding_holds_a_bounded_number_of_bytes_per_step(tmp_path, monkeypatch):
    """1,024 images per step whatever their size (51 GB at image_size=4096): now at most CHUNK_BYTES of pixels."""
    root = write_tree(tmp_path / "t", size=16, per_class=5)
    whole = load_data(f"imagefolder:{root}")
    monkeypatch.setenv("MMIX_EVAL_CACHE", str(tmp_path / "second-cache"))  # decoded again, not read from the first
    steps = []
    real = decode._filled
    monkeypatch.setattr(
        decode, "_filled", lambda files, batch, pool: steps.append(len(batch)) or real(files, batch, pool)
    )
    monkeypatch.setattr(decode, "CHUNK_BYTES", 4 * 3 * 16 * 16)  # four decoded images
    small = load_data(f"imagefolder:{root}")
    assert max(steps) == 4 and sum(steps) == 30
    assert np.array_equal(whole.test.x.numpy(), small.test.x.numpy())
    assert np.array_equal(whole.train.x.numpy(), small.train.x.numpy())


def test_a_cache_larger_than_the_free_disk_is_refused_before_decoding(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "t")
    monkeypatch.setattr(decode.shutil, "disk_usage", lambda _: SimpleNamespace(total=10**12, used=10**12, free=1000))
    with pytest.raises(UserError, match=r"expected 0.0 GB free for the decoded images in .*, got 0.0 GB free"):
        load_data(f"imagefolder:{root}")
    assert not any((tmp_path / "cache").rglob("*.npy")) if (tmp_path / "cache").exists() else True


def test_threads_past_four_per_usable_core_are_refused(tmp_path, capsys):
    from mmix_eval.threads import affinity_cores

    most = 4 * affinity_cores()
    one_error(
        capsys,
        ["train", "--data", "digits", "--threads", "2000", "--out", str(tmp_path / "r")],
        f"--threads: expected at most {most} CPU threads (4 x the {affinity_cores()} usable cores), got 2000",
    )


# ---------------------------------------------------------------- pixels read as they are


def _png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path)


def test_sixteen_bit_pngs_are_scaled_like_numpy_not_clipped(tmp_path):
    """convert("L") clipped 16-bit values to 255 (99.6 % white); one among RGB images came out all white."""
    rng = np.random.default_rng(0)
    grey = {}
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "g" / split / c).mkdir(parents=True)
            for j in range(3):
                a = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
                _png(a, tmp_path / "g" / split / c / f"{j}.png")
                grey[(split, c, j)] = a
    d = load_data(f"imagefolder:{tmp_path / 'g'}")
    want = lambda a: np.floor(a.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)  # noqa: E731
    assert d.test.x.shape[1:] == (1, 6, 7)
    for k, (c, j) in enumerate((c, j) for c in ("a", "b") for j in range(3)):
        assert np.array_equal(d.test.x[k, 0].numpy(), want(grey[("test", c, j)]))
    # one 16-bit grey image among RGB ones: repeated to 3 channels, scaled
    mixed = tmp_path / "m" / "test" / "a"
    mixed.mkdir(parents=True)
    _png(np.full((6, 7, 3), 9, np.uint8), mixed / "0.png")
    _png(grey[("test", "a", 0)], mixed / "1.png")
    (tmp_path / "m" / "test" / "b").mkdir()
    _png(np.full((6, 7, 3), 200, np.uint8), tmp_path / "m" / "test" / "b" / "0.png")
    shutil.copytree(tmp_path / "m" / "test", tmp_path / "m" / "train")
    m = load_data(f"imagefolder:{tmp_path / 'm'}")
    assert all(np.array_equal(m.test.x[1, ch].numpy(), want(grey[("test", "a", 0)])) for ch in range(3))
    assert int(m.test.x[0].max()) == 9 and int(m.test.x[2].min()) == 200


def test_floating_point_images_are_refused_not_guessed(tmp_path):
    root = write_tree(tmp_path / "t", fmt="tiff")
    Image.fromarray(np.full((6, 6), 0.5, np.float32), "F").save(root / "test" / "cat" / "000.tiff")
    with pytest.raises(UserError, match=r"image '.*000.tiff': expected 8- or 16-bit pixels, got 32-bit floating-point"):
        load_data(f"imagefolder:{root}")


# ---------------------------------------------------------------- data that contradicts itself


def test_conflicting_annotation_lines_are_refused_repeats_are_not(tmp_path, monkeypatch):
    """The last of two conflicting lines won silently (accuracy 47.5 vs 50.0)."""
    top = write_tinyimagenet(tmp_path / "a")
    ann = top / "val" / "val_annotations.txt"
    first = ann.read_text().splitlines()[0]
    name, wnid = first.split("\t")[:2]
    ann.write_text(ann.read_text() + first + "\n")  # the same line twice: harmless
    assert len(load_data(f"tinyimagenet:{top}").test) == 9
    monkeypatch.setenv("MMIX_EVAL_CACHE", str(tmp_path / "second-cache"))  # an edit in place keeps the folder's key
    other = next(w for w in ("n01443537", "n01629819") if w != wnid)
    ann.write_text(ann.read_text() + f"{name}\t{other}\t0\t0\t8\t8\n")
    with pytest.raises(
        UserError,
        match=rf"expected one class per image, got '{name}' labelled {wnid} and, on line 11, "
        rf"{other}",
    ):
        load_data(f"tinyimagenet:{top}")


def test_a_class_map_sending_two_classes_to_one_is_refused(tmp_path):
    """Two folders mapped to one checkpoint class left another class empty, without a word."""
    meta = {"data": {"classes": ["cat", "dog", "emu"]}}
    data = SimpleNamespace(classes=["Cat", "Dog", "Emu"], spec="imagefolder:x")
    good = tmp_path / "good.yaml"
    good.write_text("Cat: cat\nDog: dog\nEmu: emu\n")
    assert class_lookup(meta, data, str(good)).tolist() == [0, 1, 2]
    bad = tmp_path / "bad.yaml"
    bad.write_text("Cat: cat\nDog: cat\nEmu: emu\n")
    with pytest.raises(
        UserError,
        match="expected each checkpoint class at most once, got 'Cat' and 'Dog' of "
        "'imagefolder:x' both mapped to 'cat'",
    ):
        class_lookup(meta, data, str(bad))


# ---------------------------------------------------------------- a checkpoint's data extent before hashing


def test_a_1_tb_mmix_eval_checkpoint_is_refused_from_its_header_in_seconds(tmp_path, capsys):
    """A checkpoint of our own format (metadata and all) padded to 1 TB was read whole before any check."""
    import time

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--method",
                "vanilla",
                "--epochs",
                "1",
                "--out",
                str(run),
                "--set",
                "train.device=cpu",
                "--set",
                "data.train_limit=100",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    big = tmp_path / "big.safetensors"
    shutil.copy(run / "model.safetensors", big)
    real = big.stat().st_size
    with open(big, "r+b") as f:
        f.truncate(1 << 40)  # sparse: no disk used
    t = time.perf_counter()
    one_error(
        capsys,
        ["calibration", "--ckpt", str(big), "--out", str(tmp_path / "o")],
        f"bytes of tensor data after the header, as the header says, got a file of {1 << 40} bytes",
    )
    assert time.perf_counter() - t < 20 and real < 1 << 30


def test_a_checkpoint_rewritten_between_its_header_check_and_its_read_is_refused(tmp_path, capsys, monkeypatch):
    """The header is checked first, the whole file read after: the header loaded must be the one checked."""
    from mmix_eval import checkpoint

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--out",
                str(run),
                "--set",
                "data.train_limit=100",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    real = checkpoint.read_header

    def rewritten(path, whole=True):
        header, blob = real(path, whole)
        return header, (blob[:8] + blob[8:].replace(b"smallnet", b"smallnot", 1)) if whole else blob

    monkeypatch.setattr(checkpoint, "read_header", rewritten)
    one_error(
        capsys,
        ["calibration", "--ckpt", str(run), "--out", str(tmp_path / "o")],
        f"checkpoint '{run / 'model.safetensors'}': expected the file whose header was checked, got one "
        f"rewritten while read",
    )
