"""Read a tree (or a .tar / .tar.gz archive) of class folders into uint8 tensors, once.

Layouts understood, with or without one wrapping folder:
    train/<class>/<image>, test/<class>/<image>      (``val/`` stands in for a missing ``test/``)
    <class>/<image>                                   (a seeded 20 % becomes the test split)

Decoding is the slow part (60,000 CIFAR JPEGs take ~12 s on one core), so the decoded arrays are
cached as a folder of .npy arrays (no zip member CRCs to check on every load: a cached CIFAR-10 loads in
about 0.1 s), loaded with ``allow_pickle=False``, and kept in memory for the rest of the process (a bench
decodes once). The cache key is cheap to compute: an archive's resolved path, size and mtime; a
folder's path and the names and mtimes of its sub-folders (a file added, removed or renamed changes its
folder's mtime; a file rewritten in place under the same name does not: touch the folder, or delete the
cache, after editing images in place).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mmix_eval.data.core import RawData, Split, default_cache_dir
from mmix_eval.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SPLIT_NAMES = ("train", "test", "val")
CACHE_VERSION = 3  # 3: a folder of .npy files (2: one .npz)
ARRAYS = ("classes", "layout", "empty_classes", "train_x", "train_y", "test_x", "test_y")
_MEMORY: dict[str, RawData] = {}  # cache file -> decoded data, for the life of the process


def _is_image(name: str) -> bool:
    p = PurePosixPath(name)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.parts)


def _list_archive(path: Path) -> tuple[list[str], dict[str, bytes], list[str]]:
    """Image names, their bytes, and the archive's folders (to find class folders with no image)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            blobs, dirs = {}, []
            for m in tar:
                if m.isfile() and _is_image(m.name):
                    f = tar.extractfile(m)
                    blobs[m.name] = f.read() if f is not None else b""
                elif m.isdir():
                    dirs.append(m.name.rstrip("/"))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"imagefolder '{path}': expected a readable .tar or .tar.gz archive, got an unreadable file ({e})") from None
    return sorted(blobs), blobs, sorted(dirs)


def _list_folder(path: Path) -> tuple[list[str], list[str]]:
    names, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirs += [Path(dirpath, d).relative_to(path).as_posix() for d in dirnames]
        for fn in filenames:
            rel = Path(dirpath, fn).relative_to(path).as_posix()
            if _is_image(rel):
                names.append(rel)
    return sorted(names), sorted(dirs)


def _empty_class_folders(dirs: list[str], classes: list[str], names: list[str]) -> list[str]:
    """Class folders (at the depth the images' class folders have) that hold no image: their class is
    dropped from the data set, which changes the class count and every later class's label."""
    depth = {len(PurePosixPath(n).parts) - 1 for n in names}  # a class folder's depth, in parts
    parents = {PurePosixPath(n).parent.parent for n in names}  # the folders the class folders sit in
    return sorted({PurePosixPath(d).name for d in dirs if len(PurePosixPath(d).parts) in depth
                   and PurePosixPath(d).parent in parents} - set(classes))


def _layout(names: list[str], where: str) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """Group image paths into splits of (path, class) pairs; strip one wrapping folder if present."""
    parts = [PurePosixPath(n).parts for n in names]
    prefix = 0
    if parts and all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1 and parts[0][0] not in SPLIT_NAMES:
        prefix = 1  # e.g. cifar10/train/cat/1.jpg
    tops = {p[prefix] for p in parts if len(p) > prefix + 1}
    splits: dict[str, list[tuple[str, str]]] = {}
    if tops & {"train", "test", "val"} and "train" in tops:
        for n, p in zip(names, parts):
            if len(p) == prefix + 3 and p[prefix] in SPLIT_NAMES:
                splits.setdefault(p[prefix], []).append((n, p[prefix + 1]))
        if "test" not in splits and "val" in splits:
            splits["test"] = splits.pop("val")
        if "test" not in splits:
            raise UserError(f"imagefolder '{where}': expected a test/ (or val/) folder beside train/, found none")
        splits.pop("val", None)
        return splits, "train/ and test/ folders"
    flat = [(n, p[prefix]) for n, p in zip(names, parts) if len(p) == prefix + 2]
    return {"all": flat}, "one set of class folders, seeded 80/20 train/test split (seed 0)"


def _decode(name: str, data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = img.convert("L") if img.mode in ("L", "1", "I", "I;16", "LA") else img.convert("RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"image '{name}': expected a decodable image, got a file that fails to decode ({e})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _decode_all(items: list[tuple[str, str]], read, where: str) -> np.ndarray:
    if not items:
        return np.zeros((0, 1, 1, 1), np.uint8)
    # Pillow releases the GIL while decoding, so threads use every core without pickling bytes.
    from tqdm.auto import tqdm

    # A bar only where decoding takes a while (the 60,000 CIFAR-10 JPEGs: tens of seconds, once; then cached).
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(items), desc=f"decoding {where}", unit="img", disable=len(items) < 5000 or None,
                 dynamic_ncols=True, leave=False) as bar:
        arrays = []
        for a in pool.map(lambda it: _decode(it[0], read(it[0])), items, chunksize=256):
            arrays.append(a)
            if len(arrays) % 1000 == 0:
                bar.update(1000)
    first_name, first = items[0][0], arrays[0]
    channels = max(a.shape[2] for a in arrays)
    out = np.empty((len(arrays), channels) + first.shape[:2], np.uint8)
    for i, ((name, _), a) in enumerate(zip(items, arrays)):
        if a.shape[:2] != first.shape[:2]:
            raise UserError(
                f"image '{name}': expected {first.shape[1]}x{first.shape[0]} pixels like '{first_name}', "
                f"got {a.shape[1]}x{a.shape[0]} (resize the data set to one size)"
            )
        out[i] = a.transpose(2, 0, 1)  # a grayscale image among colour ones broadcasts to 3 channels
    return out


def _source_key(path: Path) -> str:
    """From metadata only (no listing of every file, no hashing of the archive's bytes)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}\0{path.resolve()}".encode())
    if path.is_dir():
        for dirpath, dirnames, _ in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            st = os.stat(dirpath)
            h.update(f"{Path(dirpath).relative_to(path).as_posix()}\0{st.st_mtime_ns}\n".encode())
    else:
        st = path.stat()
        h.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def read_imagefolder(path: Path, cache_dir: Path | None = None, need_train: bool = True) -> RawData:
    """The decoded data set. ``need_train=False`` (an evaluation without a validation split) reads only
    the test arrays of a cached decode."""
    if not path.exists():
        raise UserError(f"imagefolder '{path}': expected a folder or .tar(.gz) archive of class folders, got a path that does not exist")
    is_archive = path.is_file()
    if is_archive and not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"imagefolder '{path}': expected a folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive, got '{path.suffix}' file")
    cache = (cache_dir or default_cache_dir()) / f"imagefolder-{_source_key(path)}"
    if str(cache) in _MEMORY and cache.is_dir():
        return _MEMORY[str(cache)]
    if cache.is_dir():
        try:
            keys = ARRAYS if need_train else ("classes", "layout", "empty_classes", "test_x", "test_y")
            raw = _raw_from_arrays({k: np.load(cache / f"{k}.npy", allow_pickle=False) for k in keys}, path, str(cache))
            if need_train:  # a test-only load is not kept: a later load that needs the training images reads them
                _MEMORY[str(cache)] = raw
            return raw
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below

    if is_archive:
        names, blobs, dirs = _list_archive(path)
        read = blobs.__getitem__
    else:
        names, dirs = _list_folder(path)
        read = lambda n: (path / n).read_bytes()
    if not names:
        raise UserError(
            f"imagefolder '{path}': expected class folders of images ({', '.join(sorted(IMAGE_EXTENSIONS))}), "
            f"e.g. train/cat/001.jpg, found no images"
        )
    splits, layout = _layout(names, str(path))
    classes = sorted({c for items in splits.values() for _, c in items})
    if len(classes) < 2:
        raise UserError(f"imagefolder '{path}': expected at least 2 class folders, got {len(classes)} ({', '.join(classes)})")
    index = {c: i for i, c in enumerate(classes)}
    empty = _empty_class_folders(dirs, classes, names)
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes), "layout": np.array(layout),
                                     "empty_classes": np.array(empty, dtype=str)}
    decoded = {s: _decode_all(items, read, str(path)) for s, items in splits.items()}
    shapes = {s: d.shape[1:] for s, d in decoded.items() if len(d)}
    if len(set(shapes.values())) > 1:
        raise UserError(f"imagefolder '{path}': expected one image size and channel count in every split, got {shapes}")
    for s, items in splits.items():
        arrays[f"{s}_x"] = decoded[s]
        arrays[f"{s}_y"] = np.array([index[c] for _, c in items], dtype=np.int64)
    if "all" in splits:
        perm = np.random.default_rng(0).permutation(len(arrays["all_y"]))
        n_test = max(1, len(perm) // 5)
        te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        for s, idx in (("train", tr), ("test", te)):
            arrays[f"{s}_x"], arrays[f"{s}_y"] = arrays["all_x"][idx], arrays["all_y"][idx]
        del arrays["all_x"], arrays["all_y"]
    try:
        _write_cache(cache, arrays)
    except OSError:
        pass  # a read-only cache dir only costs the next run a decode
    raw = _raw_from_arrays(arrays, path, str(cache))
    _MEMORY[str(cache)] = raw
    return raw


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    """All arrays into a temporary folder, then one rename: a reader sees the whole cache or none."""
    import shutil

    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for k in ARRAYS:
            with open(tmp / f"{k}.npy", "wb") as f:
                np.save(f, arrays[k], allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        if cache.exists():  # a damaged cache being replaced
            shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _raw_from_arrays(a: dict, path: Path, cache: str) -> RawData:
    classes = [str(c) for c in a["classes"]]
    test = Split(torch.from_numpy(np.ascontiguousarray(a["test_x"])), torch.from_numpy(a["test_y"]))
    train = Split(torch.from_numpy(np.ascontiguousarray(a["train_x"])), torch.from_numpy(a["train_y"])) if "train_x" in a \
        else Split(test.x[:0].clone(), test.y[:0].clone())  # not read: only the test split is needed
    if len(test) == 0:
        raise UserError(f"imagefolder '{path}': expected images in the test split, found none")
    empty = [str(c) for c in a["empty_classes"]]
    if empty:  # said on every load, and recorded in the checkpoint's data metadata
        import warnings

        warnings.warn(f"imagefolder '{path}': class folder(s) {', '.join(empty)} hold no image and are not classes "
                      f"(the data set has {len(classes)}: {', '.join(classes)})", stacklevel=4)
    return RawData(classes=classes, train=train, test=test, flip=True,
                   source={"source": "imagefolder", "path": str(path), "layout": str(a["layout"]), "cache": cache,
                           **({"empty_class_folders": empty} if empty else {})})
