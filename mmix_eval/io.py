"""Atomic file writes: a run killed at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


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
    from mmix_eval.errors import UserError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{what} '{path}': expected a readable YAML file, got {getattr(e, 'strerror', None) or e}") from None
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

    def __init__(self, folder: str | os.PathLike, what: str = "--out"):
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self.held = False

    def __enter__(self) -> "FolderLock":
        import socket
        import warnings
        from datetime import datetime, timezone

        from mmix_eval.errors import UserError

        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and (holder.get("host") != me["host"] or _alive(holder.get("pid"))):
                    raise UserError(
                        f"{self.what} '{self.path.parent}': expected a folder no other bench is writing to, got one locked "
                        f"by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} (lock file "
                        f"{self.path}); wait for it to finish, or delete the lock file if that process is gone") from None
                why = "an unreadable lock file" if holder is None else f"pid {holder.get('pid')}, no longer running"
                warnings.warn(f"{self.what} '{self.path.parent}': taking over a stale lock ({why})", stacklevel=2)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise UserError(f"{self.what} '{self.path.parent}': expected to take the lock {self.path}, got another "
                        f"process taking it at the same time")

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
