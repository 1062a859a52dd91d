"""Checkpoints on the Hugging Face Hub: ``hf://ORG/REPO[@REVISION][/FILE]`` resolved to a local file, and a run
pushed as safetensors + ``model.json`` + a model card.

Only safetensors and ``model.json`` are fetched: the file named (default ``model.safetensors``) is checked against
the repo's file list before anything is downloaded, and a pickle (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``)
is refused, whatever it is called. The revision (a branch, tag or commit; default ``main``) is resolved to its commit
hash, which the records keep (``checkpoint_origin``), so a result names the exact weights even after the branch moves.
The downloaded file then goes through every check a local checkpoint does (header, metadata, tensor hash).
``HF_HUB_OFFLINE=1`` resolves from the local cache only (no network; the cache's snapshot is the file list)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mmix_eval.errors import ParamError, UserError

PREFIX = "hf://"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class HubRef:
    repo: str
    revision: str
    file: str

    @property
    def uri(self) -> str:
        return f"{PREFIX}{self.repo}@{self.revision}/{self.file}"


def is_hub(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse(spec: str) -> HubRef:
    """``hf://ORG/REPO[@REVISION][/FILE]`` -> HubRef (FILE default model.safetensors, REVISION default main)."""
    body = spec[len(PREFIX) :]
    parts = body.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ParamError("ckpt", f"expected hf://ORG/REPO[@REVISION][/FILE], got '{spec}'")
    name, _, revision = parts[1].partition("@")
    repo, file = f"{parts[0]}/{name}", "/".join(parts[2:]) or "model.safetensors"
    if not _REPO.match(repo) or ".." in repo or (revision == "" and "@" in parts[1]):
        raise ParamError("ckpt", f"expected hf://ORG/REPO[@REVISION][/FILE] with a repo id like org/name, got '{spec}'")
    if file.startswith("/") or ".." in file.split("/"):
        raise ParamError("ckpt", f"expected a file inside the repo, got '{file}' in '{spec}'")
    return HubRef(repo, revision or "main", file)


def _refuse(ref: HubRef, files: list[str]) -> None:
    """The file named must be a safetensors file the repo has; a pickle is refused before it is downloaded."""
    if ref.file.lower().endswith(PICKLE_SUFFIXES) or not ref.file.endswith(".safetensors"):
        raise ParamError(
            "ckpt",
            f"expected a .safetensors file in {PREFIX}{ref.repo}, got '{ref.file}' (mmix-eval never "
            f"unpickles a downloaded file; ask the author for safetensors, or convert a file you trust)",
        )
    if ref.file not in files:
        pickles = [f for f in files if f.lower().endswith(PICKLE_SUFFIXES)]
        found = f"only pickle files ({', '.join(pickles[:3])}), which mmix-eval never loads" if pickles else None
        raise ParamError(
            "ckpt",
            f"expected '{ref.file}' in {PREFIX}{ref.repo} at {ref.revision}, got "
            f"{found or 'a repo without it (files: ' + (', '.join(sorted(files)[:8]) or 'none') + ')'}",
        )


def resolve(spec: str) -> tuple[Path, str]:
    """The local path of the checkpoint ``spec`` names (downloaded to the Hugging Face cache, or found there when
    offline) and its origin ``hf://ORG/REPO@COMMIT/FILE``."""
    try:
        import huggingface_hub as hub
        from huggingface_hub import errors as hub_errors
    except ImportError:
        raise ParamError("ckpt", "hf:// needs the huggingface_hub package; pip install 'mmix-eval[hub]'") from None
    ref = parse(spec)
    try:
        if hub.is_offline_mode():
            commit, files = _cached(hub, ref)
        else:
            info = hub.HfApi().model_info(ref.repo, revision=ref.revision)
            commit, files = info.sha, [s.rfilename for s in info.siblings or []]
        _refuse(ref, files)
        sidecar = str(Path(ref.file).with_suffix(".json"))
        path = hub.hf_hub_download(ref.repo, ref.file, revision=commit)
        if sidecar in files:  # the readable copy of the metadata, kept beside the weights
            hub.hf_hub_download(ref.repo, sidecar, revision=commit)
    except UserError:
        raise
    except (hub_errors.HfHubHTTPError, hub_errors.LocalEntryNotFoundError, OSError, ValueError) as e:
        offline = " (HF_HUB_OFFLINE is set: only the local cache is read)" if hub.is_offline_mode() else ""
        raise ParamError(
            "ckpt", f"could not fetch {spec}{offline}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from None
    return Path(path), HubRef(ref.repo, commit, ref.file).uri


def _cached(hub, ref: HubRef) -> tuple[str, list[str]]:
    """Offline: the commit a revision points to in the local cache, and the files of that cached snapshot."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"models--{ref.repo.replace('/', '--')}"
    commit = ref.revision
    refs = folder / "refs" / ref.revision
    if refs.is_file():
        commit = refs.read_text(encoding="utf-8").strip()
    snapshot = folder / "snapshots" / commit
    if not re.fullmatch(r"[0-9a-f]{40}", commit) or not snapshot.is_dir():
        raise ParamError(
            "ckpt",
            f"{PREFIX}{ref.repo}@{ref.revision} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
            f" and HF_HUB_OFFLINE is set; expected a cached revision, got none",
        )
    files = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file() or p.is_symlink()]
    return commit, files
