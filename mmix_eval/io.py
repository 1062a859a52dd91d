"""Atomic file writes (a run killed at any moment leaves the old file or the new one, never half of one) and
bounded reads (a file named by a user or found in a data set is checked for its type and size before a byte of it
is held: a FIFO, a device, a symlink to ``/dev/zero`` or a multi-GB text file is a one-line error, never a hang or
an exhausted memory)."""

from __future__ import annotations

import glob
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from mmix_eval.errors import UserError, mention


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_partial_writes(folder: str | os.PathLike, names) -> int:
    """Delete the temporary files that ``atomic_write_bytes`` leaves for ``names`` in ``folder`` when its
    process is killed mid-write (``.NAME.*.tmp``). Returns how many were removed."""
    removed = 0
    for name in names:
        for tmp in Path(folder).glob(f".{glob.escape(name)}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read a MiB at a time (OSError propagates: the caller names the file)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MiB = 1 << 20
# Caps on what one read may hold (docs/reliability.md lists them). Far above any real file of the kind.
TEXT_CAP = 64 * MiB  # a YAML config, bench, grid or class map; annotations, words.txt, wnids.txt; log.jsonl
IMAGE_CAP = 64 * MiB  # one encoded image file (an ImageNet JPEG is ~110 kB; a 4096x4096 PNG ~50 MB)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def read_bounded(path: str | os.PathLike, what: str, cap: int = TEXT_CAP, kind: str = "file") -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes, else a one-line UserError naming ``what`` and the
    path. Opened without blocking and checked on the open descriptor (so a FIFO swapped in after a check cannot
    hang the read), and read up to its size + 1 bytes (so a file growing while read is refused, not held)."""

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise UserError(f"{what} '{path}': expected a readable {kind}, got {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UserError(f"{what} '{path}': expected a regular file, got {_kind(st.st_mode)}")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > cap:
            raise UserError(f"{what} '{path}': expected a file of at most {cap:,} bytes, got {st.st_size:,} bytes")
        try:
            data = f.read(st.st_size + 1)  # (not cap + 1: a read of n bytes allocates n first)
        except OSError as e:
            raise UserError(f"{what} '{path}': expected a readable file, got {e.strerror or e}") from None
    if len(data) > st.st_size:
        raise UserError(
            f"{what} '{path}': expected a file of {st.st_size:,} bytes as it was opened, got one that grew while read"
        )
    return data


def read_bounded_text(path: str | os.PathLike, what: str, cap: int = TEXT_CAP, kind: str = "file") -> str:
    """``read_bounded`` decoded as UTF-8 (an undecodable byte is a one-line error)."""

    data = read_bounded(path, what, cap, kind)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{what} '{path}': expected UTF-8 text, got a byte that is not ({e.reason} at byte {e.start})"
        ) from None


def check_regular(path: str | os.PathLike, what: str, cap: int | None = None) -> int:
    """A regular file's size (following a symlink to what it names), else a one-line UserError: for files read
    by a library (``np.load``, a memory map) that must not be handed a FIFO or a device."""

    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"{what} '{path}': expected a readable file, got {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} '{path}': expected a regular file, got {_kind(st.st_mode)}")
    if cap is not None and st.st_size > cap:
        raise UserError(f"{what} '{path}': expected a file of at most {cap:,} bytes, got {st.st_size:,} bytes")
    return st.st_size


def read_member(archive, member, what: str, cap: int) -> bytes:
    """One member of an open ``zipfile.ZipFile`` (a ``ZipInfo``) or ``tarfile.TarFile`` (a ``TarInfo``), its
    stated size checked against ``cap`` before a byte is decompressed and the decompressed stream cut at
    its stated size + 1 bytes (a member whose header under-states its size is refused too)."""
    import zipfile

    name = member.filename if isinstance(archive, zipfile.ZipFile) else member.name
    size = member.file_size if isinstance(archive, zipfile.ZipFile) else member.size
    if size > cap:
        raise UserError(
            f"{what} '{name}': expected an archive member of at most {cap:,} bytes, got one of {size:,} bytes"
        )
    f = archive.open(member) if isinstance(archive, zipfile.ZipFile) else archive.extractfile(member)
    if f is None:
        return b""
    with f:
        data = f.read(size + 1)  # (not cap + 1: a read of n bytes allocates n first)
    if len(data) > size:
        raise UserError(
            f"{what} '{name}': expected an archive member of the {size:,} bytes its header states, got "
            f"more once decompressed"
        )
    return data


def check_npz(path: str | os.PathLike, what: str, cap: int) -> None:
    """An ``.npz`` file's members checked before ``np.load`` reads any: a regular file, and no member larger
    than ``cap`` once decompressed (a 7 MB file can hold 7 GiB of zeros)."""
    import zipfile

    check_regular(path, what)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UserError(f"{what} '{path}': expected an .npz archive, got an unreadable file ({e})") from None
    for info in infos:
        if info.file_size > cap:
            raise UserError(
                f"{what} '{path}': expected arrays of at most {cap:,} bytes each, got member "
                f"'{info.filename}' of {info.file_size:,} bytes"
            )


def remove_dead_folders(parent: str | os.PathLike, pattern: str) -> int:
    """Remove the folders in ``parent`` matching ``pattern`` whose name ends in ``-<pid>`` of a process that is
    gone (a decode's or a report's temporary folder left by a kill). Returns how many were removed."""
    import shutil

    removed = 0
    for d in Path(parent).glob(pattern):
        pid = d.name.rpartition("-")[2]
        if d.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk too (POSIX only).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


MAX_YAML_DEPTH = 64  # a bench or a config is a few levels deep
MAX_YAML_NODES = 100_000  # after expanding aliases: a bench of hundreds of runs is a few thousand


class YamlLimit(ValueError):
    """A YAML document past the depth or the (alias-expanded) size any configuration needs."""


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with a budget for the whole document: nesting at most ``MAX_YAML_DEPTH`` levels
    (checked while composing, so a 100k-deep document never reaches Python's recursion limit) and at most
    ``MAX_YAML_NODES`` nodes once every alias is expanded (counted on the composed graph before anything is
    constructed, so a billion laughs is refused anywhere in the document, at a few kB of memory). Raises
    ``YamlLimit`` or ``yaml.YAMLError``."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            self.depth += 1
            if self.depth > MAX_YAML_DEPTH:
                raise YamlLimit(f"nested more than {MAX_YAML_DEPTH} levels deep")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root) -> int:
    """Nodes of the document with aliases expanded, each shared node's size computed once (memo by identity)."""
    import yaml

    memo: dict[int, int] = {}

    def size(node) -> int:
        got = memo.get(id(node))
        if got is not None:
            return got
        if isinstance(node, yaml.MappingNode):
            children = [x for pair in node.value for x in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        total = 1 + sum(size(c) for c in children)  # depth <= MAX_YAML_DEPTH: the recursion is bounded
        if total > MAX_YAML_NODES:
            raise YamlLimit(f"more than {MAX_YAML_NODES:,} values once its aliases are expanded (an alias bomb?)")
        memo[id(node)] = total
        return total

    return size(root)


def load_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file (``parse_yaml``: safe, bounded); an unreadable file, a syntax error, a tag that is not
    plain YAML or a document past the budget is a one-line UserError."""

    path = Path(path)
    text = read_bounded_text(path, what, kind="YAML file")
    try:
        return parse_yaml(text)
    except Exception as e:  # noqa: BLE001  (only YAML's errors and YamlLimit come from parse_yaml)
        raise UserError(f"{what} '{path}': {yaml_problem(e)}") from None


def yaml_problem(e: Exception) -> str:
    """What was wrong with a YAML text, in words (for a one-line error)."""
    import yaml

    if isinstance(e, YamlLimit):
        return f"expected a YAML document of a configuration's size, got one {e}"
    if isinstance(e, yaml.constructor.ConstructorError):
        tag = str(getattr(e, "problem", "") or "").rpartition("tag ")[2][:60]
        return f"expected plain YAML (no language-specific tags), got the tag {tag}".rstrip()
    if isinstance(e, RecursionError):
        return f"expected a YAML document at most {MAX_YAML_DEPTH} levels deep, got a deeper one"
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}" if mark is not None else ""
    return f"expected valid YAML, got a syntax error{at}"


LOCK_NAME = ".bench.lock"


class FolderLock:
    """An exclusive lock on an output folder: a file created with O_EXCL holding {pid, host, started}.

    Stale-safe: a lock left by a process that no longer runs on this host (killed, crashed, or a lock file
    half-written) is taken over with a warning. A live holder, or one on another host (whose liveness cannot be
    checked), is a one-line error naming its pid."""

    def __init__(self, folder: str | os.PathLike, what: str = mention("out")):
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self.held = False

    def __enter__(self) -> FolderLock:
        import socket
        import warnings
        from datetime import datetime, timezone

        from mmix_eval.errors import UserError

        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and (holder.get("host") != me["host"] or _alive(holder.get("pid"))):
                    raise UserError(
                        f"{self.what} '{self.path.parent}': expected a folder no other bench is writing to, got one locked "
                        f"by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} (lock file "
                        f"{self.path}); wait for it to finish, or delete the lock file if that process is gone"
                    ) from None
                why = "an unreadable lock file" if holder is None else f"pid {holder.get('pid')}, no longer running"
                warnings.warn(f"{self.what} '{self.path.parent}': taking over a stale lock ({why})", stacklevel=2)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise UserError(
            f"{self.what} '{self.path.parent}': expected to take the lock {self.path}, got another "
            f"process taking it at the same time"
        )

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def safe_name(name: str) -> str:
    """A run name usable as one folder name: letters, digits, '.', '_', '-' only, never '.' or '..'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    return cleaned[:100]
