"""Decode image files once into a cache of uint8 ``.npy`` arrays, streaming, in bounded memory; read it back.

The decode policy (``Decode``) says what happens to images of different sizes: nothing (the default: every
image must have one size, and two different sizes found are refused in one line naming both), or, with an
image size S, ``crop`` (the shorter side resized to round(S·256/224) with bilinear filtering, antialiased, the
longer side in proportion as torchvision's ``Resize(int)``, then the centre S×S, as torchvision's
``CenterCrop``: the ImageNet evaluation rule) or ``stretch`` (resized straight to S×S). It is part of the data
spec (``imagefolder:PATH?image_size=64&resize=crop``) and so of every checkpoint's and record's data field.

Decoding: first the image headers (size and mode, without decoding pixels) to fix the arrays' shape, then
the pixels in chunks of ``CHUNK`` images, written straight to the split's ``.npy`` file: memory holds one
chunk, whatever the data set's size. Pillow releases the GIL while decoding, so a thread pool uses every core.
An archive is read twice (headers, then pixels), never held whole.

The cache folder is written under a temporary name and renamed when complete (a reader sees all of it or
none); ``manifest.json`` records each file's size, mtime, a fingerprint (SHA-256 of 18 blocks spread over
the file) and a CRC-32 of every byte, checked on every load: a cache file truncated or rewritten after it was
written, anywhere in it, is refused in one line naming it. Decoders take turns (a lock on the cache root): the
second decoder of one data set reads what the first wrote. Image arrays of at least ``mmap_min_bytes()`` are memory-mapped (``data.mapped``), smaller
ones read into memory (faster for small sets; ``benchmarks/bench_data.py`` measures both).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from mmix_eval.errors import ParamError, UserError, mention
from mmix_eval.io import IMAGE_CAP, read_bounded, read_member

CHUNK = 1024  # images decoded and written per step, at most
CHUNK_BYTES = 256 << 20  # and at most this many bytes of encoded files, and of decoded pixels, per step
GREY_MODES = ("L", "1", "I", "I;16", "LA", "I;16B", "I;16L", "F")
Resize = Literal["crop", "stretch"]
RESIZES = get_args(Resize)
MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class Decode:
    size: int | None = None  # None: images are kept at their size, which must be one size
    resize: Resize = "crop"

    @property
    def short_side(self) -> int | None:
        return None if self.size is None else int(self.size * 256 / 224 + 0.5)

    def describe(self) -> str:
        if self.size is None:
            return "as stored (one size)"
        if self.resize == "stretch":
            return f"resized to {self.size}x{self.size}"
        return f"shorter side resized to {self.short_side}, centre {self.size}x{self.size} crop"

    def key(self) -> str:
        return "" if self.size is None else f"{self.size}-{self.resize}"


AS_STORED = Decode()


def split_query(arg: str, what: str) -> tuple[str, Decode]:
    """'PATH?image_size=64&resize=crop' -> ('PATH', Decode(64, 'crop')); 'PATH' -> ('PATH', Decode())."""
    path, sep, query = arg.rpartition("?")
    if not sep or "=" not in query:
        return arg, Decode()
    got: dict[str, str] = {}
    for part in query.split("&"):
        k, eq, v = part.partition("=")
        if not eq or k not in ("image_size", "resize"):
            raise UserError(
                f"data set '{what}:{arg}': expected PATH?image_size=S[&resize=crop|stretch], got '?{query}'"
            )
        got[k] = v
    resize = got.get("resize", "crop")
    if resize not in RESIZES:
        raise UserError(f"data set '{what}:{arg}': resize expected one of {', '.join(RESIZES)}, got '{resize}'")
    size = got.get("image_size")
    if size is None:
        raise UserError(f"data set '{what}:{arg}': expected image_size=S with resize, got none")
    if not (size.isascii() and size.isdigit()) or not 1 <= int(size) <= MAX_IMAGE_SIZE:  # '²' is a digit to isdigit
        raise UserError(
            f"data set '{what}:{arg}': image_size expected an integer from 1 to {MAX_IMAGE_SIZE}, got '{size}'"
        )
    return path, Decode(int(size), resize)


def with_decode(spec: str, size: int | None, resize: str | None) -> str:
    """The data spec with a decode policy added (``--image-size``, ``--resize``); the spec unchanged without one."""
    if size is None:
        if resize is not None:
            raise ParamError(
                "resize", f"expected {mention('image_size')} with it, got {mention('resize')} {resize} alone"
            )
        return spec
    resize = resize or "crop"
    if resize not in RESIZES:
        raise ParamError("resize", f"expected one of {', '.join(RESIZES)}, got '{resize}'")
    if not 1 <= size <= MAX_IMAGE_SIZE:
        raise ParamError("image_size", f"expected an integer from 1 to {MAX_IMAGE_SIZE}, got {size}")
    name, sep, arg = spec.partition(":")
    if not sep or name not in ("imagefolder", "tinyimagenet"):
        raise ParamError(
            "image_size",
            f"expected a data set read from image files (imagefolder:PATH, tinyimagenet:PATH), got '{spec}'",
        )
    base, _ = split_query(arg, name)
    return f"{name}:{base}?image_size={size}&resize={resize}"


# --- reading image files -------------------------------------------------------------------------------------


class Files:
    """Image bytes by name, from a folder or an archive. An archive is streamed (``each``), never held whole."""

    def __init__(self, root: Path, archive: bool):
        self.root, self.archive = root, archive

    def read(self, name: str) -> bytes:
        return read_bounded(self.root / name, "image", IMAGE_CAP)

    def size(self, name: str) -> int:
        """The file's size on disk (0 where it cannot be read: ``read`` then says why, in one line)."""
        try:
            return os.stat(self.root / name).st_size
        except OSError:
            return 0

    def each(self, wanted: set[str]):
        """(name, bytes) of the wanted images, in archive order (an archive) or name order (a folder)."""
        if not self.archive:
            for n in sorted(wanted):
                yield n, self.read(n)
            return
        try:
            if self.root.name.lower().endswith(".zip"):
                with zipfile.ZipFile(self.root) as zf:
                    for info in zf.infolist():
                        if not info.is_dir() and info.filename in wanted:
                            yield info.filename, read_member(zf, info, f"image in '{self.root}'", IMAGE_CAP)
                return
            with tarfile.open(self.root, "r:*") as tar:
                for m in tar:
                    if m.isfile() and m.name in wanted:
                        yield m.name, read_member(tar, m, f"image in '{self.root}'", IMAGE_CAP)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
            raise UserError(
                f"archive '{self.root}': expected a readable .tar, .tar.gz or .zip archive, got an "
                f"unreadable file ({e})"
            ) from None


def _open(name: str, data: bytes):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # not an OSError: would otherwise escape as a traceback
        raise UserError(
            f"image '{name}': expected at most {2 * Image.MAX_IMAGE_PIXELS:,} pixels (Pillow's "
            f"decompression-bomb limit), got more ({e})"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"image '{name}': expected a decodable image, got a file that fails to decode ({e})") from None


def header(name: str, data: bytes) -> tuple[int, int, int]:
    """(width, height, channels) from the image's header, pixels not decoded."""
    with _open(name, data) as img:
        return img.size[0], img.size[1], 1 if img.mode in GREY_MODES else 3


def decode_image(name: str, data: bytes, decode: Decode, shape: tuple[int, int, int]) -> np.ndarray:
    """One image as uint8 (C, H, W) of ``shape``: converted to grey or RGB, resized by the policy, a grey image
    among colour ones repeated to 3 channels."""
    from PIL import Image

    c, h, w = shape
    try:
        with _open(name, data) as img:
            img.load()
            img = _eight_bit(name, img)
            img = img.convert("L") if img.mode in GREY_MODES or c == 1 else img.convert("RGB")
            if decode.size is not None:
                img = _resized(img, decode, Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except UserError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"image '{name}': expected a decodable image, got a file that fails to decode ({e})") from None
    if arr.shape[:2] != (h, w):
        raise UserError(
            f"image '{name}': expected {w}x{h} pixels like the data set's other images, got "
            f"{arr.shape[1]}x{arr.shape[0]} (give an image size: {mention('image_size')} S, or ?image_size=S)"
        )
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return np.broadcast_to(arr, (h, w, c)).transpose(2, 0, 1)


WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


def _eight_bit(name: str, img):
    """A 16-bit grey image (mode I;16*, or I as Pillow opens a 16-bit PNG) scaled to 8 bits as
    round(v * 255 / 65535), where Pillow's ``convert("L")`` would clip every value above 255 to white. Other modes
    are returned as they are (Pillow already reduces 16-bit colour PNGs to 8 bits by scaling). A mode-I image
    with values outside 0-65535 and floating-point images (mode F) are refused: their range is not known."""
    from PIL import Image

    if img.mode == "F":
        raise UserError(
            f"image '{name}': expected 8- or 16-bit pixels, got 32-bit floating-point pixels (mode F), "
            f"whose range is not known; convert it to an 8- or 16-bit image first"
        )
    top = WIDE_MODES.get(img.mode)
    if top is None:
        return img
    a = np.asarray(img)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo < 0 or hi > top:
        raise UserError(
            f"image '{name}': expected 16-bit pixel values (0 to {top}), got values from {lo} to {hi} (mode {img.mode})"
        )
    scaled = np.floor(a.astype(np.float64) * (255.0 / top) + 0.5).astype(np.uint8)
    return Image.fromarray(scaled)  # uint8, 2-D: mode L


def _resized(img, decode: Decode, resample):
    s = decode.size
    if decode.resize == "stretch":
        return img.resize((s, s), resample)
    w, h = img.size
    t = decode.short_side
    nw, nh = (t, int(t * h / w)) if w <= h else (int(t * w / h), t)  # torchvision's Resize(int)
    img = img.resize((nw, nh), resample)
    top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))  # torchvision's CenterCrop
    return img.crop((left, top, left + s, top + s))


def decode_pool() -> ThreadPoolExecutor:
    """Threads for decoding: Pillow releases the GIL while it decodes."""
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=total < 5000 or None, dynamic_ncols=True, leave=False)


def image_shape(files: Files, names: list[str], decode: Decode, where: str) -> tuple[int, int, int]:
    """(C, H, W) every image will have: 3 channels if any image is in colour; the policy's size, or the one size
    all images have (two different sizes are refused, naming both)."""
    first: dict[tuple[int, int], str] = {}
    channels = 1

    def note(name: str, hdr: tuple[int, int, int]) -> None:
        nonlocal channels
        w, h, c = hdr
        channels = max(channels, c)
        if decode.size is None and (w, h) not in first:
            first[(w, h)] = name
            if len(first) > 1:
                (s1, n1), (s2, n2) = list(first.items())[:2]
                raise UserError(
                    f"{where}: expected images of one size, got {s1[0]}x{s1[1]} ('{n1}') and "
                    f"{s2[0]}x{s2[1]} ('{n2}'); give an image size to resize them to: {mention('image_size')} S "
                    f"(or ?image_size=S in the data spec)"
                )

    with _bar(len(names), f"reading image sizes {where}") as bar:
        if files.archive:
            for n, data in files.each(set(names)):
                note(n, header(n, data))
                bar.update(1)
        else:
            with decode_pool() as pool:
                for k in range(0, len(names), CHUNK):  # a chunk at a time: map() queues a future per item it is given
                    chunk = names[k : k + CHUNK]
                    for n, hdr in zip(chunk, pool.map(lambda n: header(n, files.read(n)), chunk)):
                        note(n, hdr)
                    bar.update(len(chunk))
    if decode.size is not None:
        return channels, decode.size, decode.size
    if not first:
        raise UserError(f"{where}: expected images to decode, got none")
    w, h = next(iter(first))
    return channels, h, w


def _npy_header(f, shape: tuple[int, ...]) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})


def decode_splits(
    files: Files, splits: dict[str, list[str]], decode: Decode, folder: Path, where: str
) -> tuple[int, int, int]:
    """Each split's images (names, in order) decoded into ``folder/<split>_x.npy``, uint8 (N, C, H, W), a
    chunk at a time. Returns the image shape (C, H, W)."""
    every = [n for names in splits.values() for n in names]
    shape = image_shape(files, every, decode, where)
    per = int(np.prod(shape))
    _check_free_space(folder, len(every) * per, where)
    most = max(1, min(CHUNK, CHUNK_BYTES // per))  # decoded pixels held per step: bounded by bytes, not count
    place = {n: (s, i) for s, names in splits.items() for i, n in enumerate(names)}
    outs, offsets = {}, {}
    try:
        for s, names in splits.items():
            f = open(folder / f"{s}_x.npy", "wb")  # noqa: SIM115  (kept open across chunks; closed in finally)
            outs[s] = f
            _npy_header(f, (len(names), *shape))
            offsets[s] = f.tell()
            f.truncate(offsets[s] + len(names) * per)
        with decode_pool() as pool, _bar(len(every), f"decoding {where}") as bar:

            def write(batch: list[tuple[str, bytes]]) -> None:
                for (n, _), arr in zip(batch, pool.map(lambda it: decode_image(it[0], it[1], decode, shape), batch)):
                    s, i = place[n]
                    outs[s].seek(offsets[s] + i * per)
                    outs[s].write(np.ascontiguousarray(arr).tobytes())
                bar.update(len(batch))

            batch: list[tuple[str, bytes]] = []
            held = 0  # encoded bytes in the batch (a folder's: the files' sizes, read when the batch is full)
            source = files.each(set(every)) if files.archive else ((n, None) for n in every)
            for n, data in source:
                batch.append((n, data))
                held += len(data) if data is not None else files.size(n)
                if len(batch) == most or held >= CHUNK_BYTES:
                    write(_filled(files, batch, pool))
                    batch, held = [], 0
            if batch:
                write(_filled(files, batch, pool))
        for f in outs.values():
            f.flush()
            os.fsync(f.fileno())
    finally:
        for f in outs.values():
            f.close()
    return shape


def _check_free_space(folder: Path, need: int, where: str) -> None:
    """The decoded arrays' size against the cache's free disk, before a byte is decoded."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free:
        raise UserError(
            f"{where}: expected {need / 1e9:,.1f} GB free for the decoded images in '{folder.parent}', got "
            f"{free / 1e9:,.1f} GB free (a smaller image size, ?image_size=S, or another cache folder: "
            f"MMIX_EVAL_CACHE)"
        )


def _filled(files: Files, batch, pool) -> list[tuple[str, bytes]]:
    if files.archive:
        return batch
    return list(zip([n for n, _ in batch], pool.map(files.read, [n for n, _ in batch])))


# --- the cache folder ---------------------------------------------------------------------------------------
