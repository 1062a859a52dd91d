"""Tiny-ImageNet (200 classes, 64×64) in the layout it is distributed in, as a folder or an archive.

    tiny-imagenet-200/wnids.txt                     the 200 class ids (WordNet ids)
    tiny-imagenet-200/words.txt                     id <tab> names, for every WordNet id
    tiny-imagenet-200/train/<wnid>/images/*.JPEG    500 per class
    tiny-imagenet-200/val/images/*.JPEG             10,000, labelled by
    tiny-imagenet-200/val/val_annotations.txt       file <tab> wnid <tab> box
    tiny-imagenet-200/test/images/*.JPEG            unlabelled: not read

The test split has no labels, so the validation split is the test split (as in the paper's Table 3 and the
official code). Labels are the class ids in sorted order (torchvision's ImageFolder order over train/, the
official code's); class names are the first name of each id in ``words.txt`` (with the id added where two
classes share a first name). Every validation image is checked against ``val_annotations.txt``: an image it
does not list, or a listed image that is missing, is refused naming it. Download:
http://cs231n.stanford.edu/tiny-imagenet-200.zip (the .zip is read as it is, or extracted).
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mmix_eval.data.core import RawData, Split, default_cache_dir
from mmix_eval.data.decode import Decode, Files, decode_splits, split_query
from mmix_eval.data.decode_cache import cache_complete, read_cache, write_cache
from mmix_eval.data.imagefolder import _is_image, _source_key
from mmix_eval.errors import UserError, mention
from mmix_eval.io import TEXT_CAP, read_bounded, read_member

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TEXTS = ("wnids.txt", "words.txt", "val_annotations.txt")
ARRAYS = ("classes", "wnids", "train_x", "train_y", "test_x", "test_y", "test_names")
TEST_ARRAYS = ("classes", "wnids", "test_x", "test_y", "test_names")
SPLIT_NOTE = "the official validation split as the test split (the test split has no labels)"
_MEMORY: dict[str, RawData] = {}


def _listing(path: Path) -> tuple[list[str], dict[str, bytes]]:
    """Image names (relative to ``path`` or inside the archive) and the text files' contents."""
    names, texts = [], {}
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "test")
            for fn in filenames:
                rel = Path(dirpath, fn).relative_to(path).as_posix()
                if fn in TEXTS:
                    texts[rel] = read_bounded(path / rel, "tinyimagenet file")
                elif _is_image(rel):
                    names.append(rel)
        return sorted(names), texts
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    base = PurePosixPath(info.filename).name
                    if base in TEXTS and not info.is_dir():
                        texts[info.filename] = read_member(zf, info, f"tinyimagenet file in '{path}'", TEXT_CAP)
                    elif not info.is_dir() and _is_image(info.filename):
                        names.append(info.filename)
        else:
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    if m.isfile() and PurePosixPath(m.name).name in TEXTS:
                        texts[m.name] = read_member(tar, m, f"tinyimagenet file in '{path}'", TEXT_CAP)
                    elif m.isfile() and _is_image(m.name):
                        names.append(m.name)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise UserError(
            f"tinyimagenet '{path}': expected a readable .zip, .tar or .tar.gz archive, got an unreadable file ({e})"
        ) from None
    return sorted(names), texts


def _text(texts: dict[str, bytes], rel: str) -> str | None:
    data = texts.get(rel)
    return None if data is None else data.decode("utf-8", errors="replace")


def _plan(path: Path, names: list[str], texts: dict[str, bytes]):
    """(train [(name, wnid)], test [(name, wnid)], sorted wnids, class names)."""
    ann_rel = _annotations(path, names, texts)
    prefix = ann_rel[: -len("val/val_annotations.txt")]  # '' or 'tiny-imagenet-200/'
    train, val = [], []
    for n in names:
        if not n.startswith(prefix):
            continue
        parts = PurePosixPath(n[len(prefix) :]).parts
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
            train.append((n, parts[1]))
        elif len(parts) == 3 and parts[:2] == ("val", "images"):
            val.append(n)
    wnids = sorted({w for _, w in train})
    if len(wnids) < 2:
        raise UserError(
            f"tinyimagenet '{path}': expected train/<wnid>/images/*.JPEG for every class, got "
            f"{len(wnids)} class folder(s)"
        )
    listed = _text(texts, prefix + "wnids.txt")
    if listed is not None:
        want = sorted({w.strip() for w in listed.split() if w.strip()})
        if want != wnids:
            miss = sorted(set(want) - set(wnids))[:3] or sorted(set(wnids) - set(want))[:3]
            raise UserError(
                f"tinyimagenet '{path}': expected train/ to hold the {len(want)} classes of wnids.txt, got "
                f"{len(wnids)} (differing: {', '.join(miss)})"
            )
    ann_file = f"{path}/{ann_rel}" if not path.is_dir() else str(path / ann_rel)
    test = _test_images(val, _val_labels(_text(texts, ann_rel), set(wnids), ann_file), ann_file)
    return train, test, wnids, _class_names(_text(texts, prefix + "words.txt"), wnids)


def _annotations(path: Path, names: list[str], texts: dict[str, bytes]) -> str:
    """The validation labels' file (the shortest path ending in val/val_annotations.txt), or a one-line error."""
    ann_paths = [k for k in texts if k.endswith("val/val_annotations.txt")]
    if ann_paths:
        return min(ann_paths, key=len)
    top = sorted({PurePosixPath(n).parts[0] for n in names}) if names else []
    has_val = any("/val/images/" in f"/{n}" for n in names)
    raise UserError(
        f"tinyimagenet '{path}': expected val/val_annotations.txt (the validation labels) "
        f"{'beside val/images/' if has_val else 'in the distributed layout (' + FOLDER + '/train, val)'}, "
        f"got none{' (top-level: ' + ', '.join(top[:3]) + ')' if top and not has_val else ''}"
    )


def _val_labels(text: str, index: set[str], ann_file: str) -> dict[str, str]:
    """image file name -> wnid from val_annotations.txt, each a class of train/, one class per image."""
    labels: dict[str, str] = {}
    for k, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2 or cols[1] not in index:
            raise UserError(
                f"tinyimagenet annotations '{ann_file}': expected 'file<TAB>wnid<TAB>box' with a wnid of "
                f"train/ on line {k}, got '{line[:80]}'"
            )
        if labels.get(cols[0], cols[1]) != cols[1]:
            raise UserError(
                f"tinyimagenet annotations '{ann_file}': expected one class per image, got '{cols[0]}' "
                f"labelled {labels[cols[0]]} and, on line {k}, {cols[1]}"
            )
        labels[cols[0]] = cols[1]
    return labels


def _test_images(val: list[str], labels: dict[str, str], ann_file: str) -> list[tuple[str, str]]:
    """[(name, wnid)] of val/images/, every image listed and every listed image there."""
    test = []
    for n in val:
        base = PurePosixPath(n).name
        if base not in labels:
            raise UserError(
                f"tinyimagenet image '{n}': expected an image listed in '{ann_file}', got one it does not list"
            )
        test.append((n, labels.pop(base)))
    if labels:
        gone = sorted(labels)
        raise UserError(
            f"tinyimagenet annotations '{ann_file}': expected every listed image in val/images/, got "
            f"{len(gone)} missing ({', '.join(gone[:3])}{' …' if len(gone) > 3 else ''})"
        )
    return test


def _class_names(words: str | None, wnids: list[str]) -> list[str]:
    """Each wnid's first name in words.txt (the wnid where it has none), the wnid added where two names coincide."""
    index, first = set(wnids), {}
    for line in (words or "").splitlines():
        wnid, _, names_ = line.partition("\t")
        if wnid in index:
            first[wnid] = names_.split(",")[0].strip() or wnid
    shown = [first.get(w, w) for w in wnids]
    dup = {c for c in shown if shown.count(c) > 1}
    return [f"{c} ({w})" if c in dup else c for c, w in zip(shown, wnids)]


def tinyimagenet(arg, root, download, need_train: bool = True) -> RawData:
    if download:
        raise UserError(
            f"tinyimagenet: expected the files already on disk (no download here), got {mention('download')}; get "
            f"{URL} and give tinyimagenet:PATH (the .zip or the extracted folder)"
        )
    raw_path, decode = split_query(arg, "tinyimagenet") if arg else (str(Path(root) / FOLDER), Decode())
    path = Path(raw_path).expanduser()
    if not path.exists():
        raise UserError(
            f"tinyimagenet '{path}': expected the Tiny-ImageNet folder or archive ({URL}), got a path that "
            f"does not exist"
        )
    if path.is_file() and not path.name.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz")):
        raise UserError(
            f"tinyimagenet '{path}': expected a folder or a .zip/.tar/.tar.gz archive, got '{path.suffix}' file"
        )
    cache = default_cache_dir() / f"tinyimagenet-{_source_key(path, decode)}"
    if str(cache) in _MEMORY and cache.is_dir():
        return _MEMORY[str(cache)]
    if not cache_complete(cache):
        _decode_into(cache, path, decode)
        need_train = True
    a = read_cache(cache, ARRAYS if need_train else TEST_ARRAYS)
    test = Split(a["test_x"], torch.from_numpy(a["test_y"]))
    train = (
        Split(a["train_x"], torch.from_numpy(a["train_y"]))
        if "train_x" in a
        else Split(test.x[:0].clone(), test.y[:0].clone())
    )
    source = {"source": "tinyimagenet", "path": str(path), "split": SPLIT_NOTE, "cache": str(cache)}
    raw = RawData(
        classes=[str(c) for c in a["classes"]],
        train=train,
        test=test,
        flip=True,
        source={**source, "decode": decode.describe()},
        extra={"test_names": [str(n) for n in a["test_names"]], "wnids": [str(w) for w in a["wnids"]]},
    )
    if need_train:
        _MEMORY[str(cache)] = raw
    return raw


def _decode_into(cache: Path, path: Path, decode: Decode) -> None:
    """Every image of the set decoded into the cache once, with the labels, class names and test file names."""
    names, texts = _listing(path)
    train, test, wnids, classes = _plan(path, names, texts)
    lab = {w: i for i, w in enumerate(wnids)}

    def fill(tmp: Path) -> dict[str, np.ndarray]:
        splits = {"train": [n for n, _ in train], "test": [n for n, _ in test]}
        decode_splits(Files(path, path.is_file()), splits, decode, tmp, f"tinyimagenet '{path}'")
        return {
            "classes": np.array(classes),
            "wnids": np.array(wnids),
            "train_y": np.array([lab[w] for _, w in train], dtype=np.int64),
            "test_y": np.array([lab[w] for _, w in test], dtype=np.int64),
            "test_names": np.array([PurePosixPath(n).name for n, _ in test]),
        }

    try:
        write_cache(cache, fill)
    except OSError as e:
        raise UserError(
            f"tinyimagenet '{path}': expected a writable decode cache at '{cache.parent}' "
            f"(MMIX_EVAL_CACHE), got {type(e).__name__}: {e}"
        ) from None
