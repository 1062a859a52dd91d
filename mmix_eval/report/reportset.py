"""A report's files as one set: written whole into a staging folder, then swapped in, with a manifest that lets a
reader tell a whole set from a mixed one. Imports no torch.

Every report file was written atomically, but the set was not: a kill after the first file, or a full disk,
left a new ``report.html`` beside the old ``records.jsonl``. Now:

1. Every file is written into ``OUT/.report-staging-<id>-<pid>/`` (the same file system as ``OUT``). A full disk
   or any other failure there removes the staging folder and is one line; the previous report is untouched.
2. A marker ``OUT/.report-writing`` is written, the staged files are renamed into place (renames only: no data is
   written in this window), ``OUT/report-manifest.json`` (each file's SHA-256, and a hash of them as the build's id) replaces the
   old one, and the marker is removed.
3. A reader of a report's own records (``report OUT/records.jsonl``, ``bench --verify OUT``) refuses the set
   while the marker is there (a build killed mid-swap) and when a file it reads differs from the manifest (a
   file from another build); a report without a manifest (written before this) is read as before.

Staging folders left by a killed build are removed by the next build into the same folder (their process is
gone).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from mmix_eval.errors import ParamError, UserError
from mmix_eval.io import _fsync_dir, atomic_write_text, remove_dead_folders

STAGE_PREFIX = ".report-staging-"
MARKER = ".report-writing"
MANIFEST = "report-manifest.json"
CHECKED = ("records.jsonl", "records.jsonl.gz", "outcomes.npz", "cost.json")  # what a rebuild reads


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def new_stage(out: Path) -> Path:
    remove_dead_folders(out, f"{STAGE_PREFIX}*")  # of builds killed mid-build
    stage = out / f"{STAGE_PREFIX}{uuid.uuid4().hex[:8]}-{os.getpid()}"
    stage.mkdir(parents=True)
    return stage


def discard(stage: Path) -> None:
    shutil.rmtree(stage, ignore_errors=True)


def swap_in(stage: Path, out: Path, drop: tuple[str, ...] = ()) -> str:
    """Move every file of ``stage`` into ``out`` (sub-folders kept), under the marker, then write the manifest.
    ``drop``: files of an older report that this build no longer has (removed). Returns the build's id."""
    staged = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    digests = {rel: _sha256(stage / rel) for rel in staged}
    generation = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:32]  # of the contents:
    # the same report rebuilt is the same set, byte for byte
    atomic_write_text(out / MARKER, json.dumps({"pid": os.getpid(), "generation": generation}) + "\n")
    for rel in staged:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, target)
    for rel in drop:
        if rel not in digests:
            (out / rel).unlink(missing_ok=True)
    _fsync_dir(out)
    atomic_write_text(
        out / MANIFEST, json.dumps({"generation": generation, "files": digests}, indent=1, sort_keys=True) + "\n"
    )
    (out / MARKER).unlink(missing_ok=True)
    _fsync_dir(out)
    discard(stage)
    return generation


def set_problem(folder: Path, names=CHECKED) -> str | None:
    """Why the report files ``names`` in ``folder`` are not one build's set, or None (also None for a report
    written before manifests)."""
    if (folder / MARKER).exists():
        return (
            f"a report interrupted while its files were swapped in ({folder / MARKER} is there): its files may "
            f"come from two builds; build the report again"
        )
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        return f"an unreadable report manifest ({manifest})"
    for name in names:
        p = folder / name
        if name in files and p.is_file() and _sha256(p) != files[name]:
            return (
                f"'{name}' is not the file of the build its manifest describes ({manifest}): a report of mixed builds"
            )
    return None


def staging_error(out: Path, e: OSError) -> UserError:
    return ParamError(
        "out",
        f"expected room to write the report, got {type(e).__name__}: {e.strerror or e}; "
        f"nothing was replaced (the previous report, if any, is as it was)",
        out,
    )
