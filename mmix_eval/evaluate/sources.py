"""Data sources an evaluator reads besides the evaluated test images (OOD sources, natural-shift sets): refused
when they are the evaluation data itself, by resolved path before anything loads and by content once loaded.
Imports no torch at module level."""

from __future__ import annotations

import hashlib
import os

from mmix_eval.errors import UserError


def resolved(spec: str) -> str:
    """A data spec with its path resolved (realpath: './odd', 'odd/', an absolute path and a symlink are one) and
    its decode policy dropped (``PATH?image_size=32`` is the same files as ``PATH``, cropped)."""
    name, sep, arg = spec.partition(":")
    path, q, query = arg.rpartition("?")
    if not q or "=" not in query:
        path = arg
    if sep and path and not name.startswith("noise") and os.path.exists(path):
        return f"{name}:{os.path.realpath(path)}"
    return spec


def same_source(spec: str, data: str) -> bool:
    return spec == data or resolved(spec) == resolved(data)


def refuse_same(spec: str, data: str, what: str, other: str) -> None:
    """A data source that is the evaluation data itself (by resolved path) is refused: ``what`` names the option
    ("ood: source"), ``other`` what it must differ from."""
    if data and same_source(spec, data):
        raise UserError(f"{what} '{spec}' expected data other than {other}, got the evaluation data itself ({data})")


def preflight_sources(specs, ctx, what: str, other: str) -> None:
    """Before a bench trains: each data source loads (two test images) and is not the bench's own data."""
    from mmix_eval.data import load_data

    for spec in specs:
        refuse_same(spec, ctx.data, what, other)
        load_data(spec, ctx.common.data_root or ctx.data_root, False, test_limit=2, need_train=False)


def image_digests(x) -> set[bytes]:
    """One 16-byte BLAKE2b digest per image of a uint8 (N, C, H, W) tensor: images compared by content, a chunk
    at a time (a memory-mapped test set keeps only the chunk's pages)."""
    from mmix_eval.data.mapped import release_pages

    out = set()
    for chunk in x.split(4096):
        out.update(hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in chunk.cpu().numpy())
        release_pages(x, chunk.nbytes)
    return out


def shared_images(seen: set[bytes], b) -> int:
    """How many images of ``b`` are byte for byte among the images whose ``image_digests`` are ``seen``."""
    return sum(hashlib.blake2b(r.tobytes(), digest_size=16).digest() in seen for r in b.cpu().numpy())


class TestImages:
    """The evaluated test images' digests, computed on first use and once per run (not once per source)."""

    def __init__(self, x):
        self.x = x
        self._seen: set[bytes] | None = None

    def shared(self, b) -> int:
        """How many images of ``b`` are byte for byte among the evaluated test images (same shape assumed)."""
        if self._seen is None:
            self._seen = image_digests(self.x)
        return shared_images(self._seen, b)
