"""Read a tree (or a .tar / .tar.gz archive) of class folders into uint8 tensors, once.

Layouts understood, with or without one wrapping folder:
    train/<class>/<image>, test/<class>/<image>      (``val/`` stands in for a missing ``test/``)
    <class>/<image>                                   (a seeded 20 % becomes the test split)

Decoding (``data.decode``) streams into a cache folder of .npy arrays in bounded memory; images of different
sizes need a decode policy (``imagefolder:PATH?image_size=S``, ``--image-size S``). The cache is loaded with
``allow_pickle=False``, its large image arrays memory-mapped, and kept for the rest of the process (a bench
decodes once). The cache key is cheap to compute: an archive's resolved path, size and mtime; a folder's path
and the names and mtimes of its sub-folders (a file added, removed or renamed changes its folder's mtime; a file
rewritten in place under the same name does not: touch the folder, or delete the cache, after editing images in
place); and the decode policy.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mmix_eval.data.core import RawData, Split, default_cache_dir
from mmix_eval.data.decode import AS_STORED, Decode, Files, decode_splits
from mmix_eval.data.decode_cache import cache_complete, read_cache, write_cache
from mmix_eval.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SPLIT_NAMES = ("train", "test", "val")
CACHE_VERSION = 4  # 4: streamed, with a manifest and a decode policy (3: a folder of .npy files, 2: one .npz)
ARRAYS = ("classes", "layout", "empty_classes", "train_x", "train_y", "test_x", "test_y")
_MEMORY: dict[str, RawData] = {}  # cache file -> decoded data, for the life of the process


def _is_image(name: str) -> bool:
    p = PurePosixPath(name)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.parts)


def _list_archive(path: Path) -> tuple[list[str], list[str]]:
    """Image names and the archive's folders (to find class folders with no image); no image is read."""
    try:
        with tarfile.open(path, "r:*") as tar:
            names, dirs = [], []
            for m in tar:
                if m.isfile() and _is_image(m.name):
                    names.append(m.name)
                elif m.isdir():
                    dirs.append(m.name.rstrip("/"))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(
            f"imagefolder '{path}': expected a readable .tar or .tar.gz archive, got an unreadable file ({e})"
        ) from None
    return sorted(names), sorted(dirs)


def _list_folder(path: Path) -> tuple[list[str], list[str]]:
    names, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirs += [Path(dirpath, d).relative_to(path).as_posix() for d in dirnames]
        for fn in filenames:
            rel = Path(dirpath, fn).relative_to(path).as_posix()
            if _is_image(rel):
                names.append(rel)
    for rel in (*dirs, *names):  # a name in another encoding reaches Python as surrogates, then a traceback later
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UserError(
                f"imagefolder '{path}': expected UTF-8 file and folder names, got '{shown}' (a name "
                f"in another encoding: rename it)"
            ) from None
    return sorted(names), sorted(dirs)


def _empty_class_folders(dirs: list[str], classes: list[str], names: list[str]) -> list[str]:
    """Class folders (at the depth the images' class folders have) that hold no image: their class is
    dropped from the data set, which changes the class count and every later class's label."""
    depth = {len(PurePosixPath(n).parts) - 1 for n in names}  # a class folder's depth, in parts
    parents = {PurePosixPath(n).parent.parent for n in names}  # the folders the class folders sit in
    return sorted(
        {
            PurePosixPath(d).name
            for d in dirs
            if len(PurePosixPath(d).parts) in depth and PurePosixPath(d).parent in parents
        }
        - set(classes)
    )


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


def _source_key(path: Path, decode: Decode = AS_STORED) -> str:
    """From metadata only (no listing of every file, no hashing of the archive's bytes), and the decode policy."""
    h = hashlib.sha256(f"v{CACHE_VERSION}\0{path.resolve()}\0{decode.key()}".encode())
    if path.is_dir():
        for dirpath, dirnames, _ in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            st = os.stat(dirpath)
            h.update(
                f"{Path(dirpath).relative_to(path).as_posix()}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape")
            )
    else:
        st = path.stat()
        h.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def read_imagefolder(
    path: Path, cache_dir: Path | None = None, need_train: bool = True, decode: Decode = AS_STORED
) -> RawData:
    """The decoded data set. ``need_train=False`` (an evaluation without a validation split) reads only
    the test arrays of a cached decode."""
    if not path.exists():
        raise UserError(
            f"imagefolder '{path}': expected a folder or .tar(.gz) archive of class folders, got a path that does not exist"
        )
    is_archive = path.is_file()
    if is_archive and not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise UserError(
            f"imagefolder '{path}': expected a folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive, got '{path.suffix}' file"
        )
    cache = (cache_dir or default_cache_dir()) / f"imagefolder-{_source_key(path, decode)}"
    if str(cache) in _MEMORY and cache.is_dir():
        return _MEMORY[str(cache)]
    if cache_complete(cache):
        keys = ARRAYS if need_train else ("classes", "layout", "empty_classes", "test_x", "test_y")
        raw = _raw_from_arrays(read_cache(cache, keys), path, str(cache), decode)
        if need_train:  # a test-only load is not kept: a later load that needs the training images reads them
            _MEMORY[str(cache)] = raw
        return raw

    _decode_into(cache, path, is_archive, decode)
    raw = _raw_from_arrays(read_cache(cache, ARRAYS), path, str(cache), decode)
    _MEMORY[str(cache)] = raw
    return raw


def _decode_into(cache: Path, path: Path, is_archive: bool, decode: Decode) -> None:
    """Every image listed, split (train/ and test/, or a seeded 80/20) and decoded into the cache once, with the
    labels, the class names, the layout and the empty class folders."""
    splits, classes, layout, empty = _plan(path, is_archive)
    index = {c: i for i, c in enumerate(classes)}

    def fill(tmp: Path) -> dict[str, np.ndarray]:
        decode_splits(
            Files(path, is_archive),
            {s: [n for n, _ in items] for s, items in splits.items()},
            decode,
            tmp,
            f"imagefolder '{path}'",
        )
        small = {"classes": np.array(classes), "layout": np.array(layout), "empty_classes": np.array(empty, dtype=str)}
        for s, items in splits.items():
            small[f"{s}_y"] = np.array([index[c] for _, c in items], dtype=np.int64)
        return small

    try:
        write_cache(cache, fill)
    except OSError as e:
        raise UserError(
            f"imagefolder '{path}': expected a writable decode cache at '{cache.parent}' "
            f"(MMIX_EVAL_CACHE), got {type(e).__name__}: {e}"
        ) from None


def _plan(path: Path, is_archive: bool) -> tuple[dict, list[str], str, list[str]]:
    """(splits: split -> [(file, class)], sorted classes, the layout, empty class folders), checked."""
    names, dirs = _list_archive(path) if is_archive else _list_folder(path)
    if not names:
        raise UserError(
            f"imagefolder '{path}': expected class folders of images ({', '.join(sorted(IMAGE_EXTENSIONS))}), "
            f"e.g. train/cat/001.jpg, found no images"
        )
    splits, layout = _layout(names, str(path))
    classes = sorted({c for items in splits.values() for _, c in items})
    if len(classes) < 2:
        raise UserError(
            f"imagefolder '{path}': expected at least 2 class folders, got {len(classes)} ({', '.join(classes)})"
        )
    empty = _empty_class_folders(dirs, classes, names)
    if "all" in splits:  # a seeded 80/20 split, fixed before decoding so each image is written once
        items = splits.pop("all")
        perm = np.random.default_rng(0).permutation(len(items))
        n_test = max(1, len(perm) // 5)
        splits = {
            "train": [items[i] for i in np.sort(perm[n_test:])],
            "test": [items[i] for i in np.sort(perm[:n_test])],
        }
    splits.setdefault("train", [])
    return splits, classes, layout, empty


def _raw_from_arrays(a: dict, path: Path, cache: str, decode: Decode = AS_STORED) -> RawData:
    classes = [str(c) for c in a["classes"]]
    test = Split(a["test_x"], torch.from_numpy(a["test_y"]))
    train = (
        Split(a["train_x"], torch.from_numpy(a["train_y"]))
        if "train_x" in a
        else Split(test.x[:0].clone(), test.y[:0].clone())
    )  # not read: only the test split is needed
    if len(test) == 0:
        raise UserError(f"imagefolder '{path}': expected images in the test split, found none")
    empty = [str(c) for c in a["empty_classes"]]
    if empty:  # said on every load, and recorded in the checkpoint's data metadata
        import warnings

        warnings.warn(
            f"imagefolder '{path}': class folder(s) {', '.join(empty)} hold no image and are not classes "
            f"(the data set has {len(classes)}: {', '.join(classes)})",
            stacklevel=4,
        )
    return RawData(
        classes=classes,
        train=train,
        test=test,
        flip=True,
        source={
            "source": "imagefolder",
            "path": str(path),
            "layout": str(a["layout"]),
            "cache": cache,
            "decode": decode.describe(),
            **({"empty_class_folders": empty} if empty else {}),
        },
    )
