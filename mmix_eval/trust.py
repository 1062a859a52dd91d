"""The trust boundary: which names may import code. Imports no torch.

Code is imported only from names the user gives: the command line, the bench YAML being run, and installed
entry points. A ``module:attr`` name read from a file (a checkpoint's metadata, a run folder's config.yaml, a
record, a results folder) is never imported: it is refused with one line saying which flag would name it.
docs/reliability.md lists every place a name is read from a file.
"""

from __future__ import annotations

from collections.abc import Collection

from mmix_eval.catalog import DATASETS, LOSSES, METHODS, MODELS
from mmix_eval.errors import UserError

# Model names whose part after the colon is an architecture name looked up in a library, never a module path.
LIBRARY_MODELS = ("torchvision:", "timm:")


def data_imports_code(spec: object) -> bool:
    """A data spec NAME[:ARG] whose NAME is neither a built-in nor an installed entry point: ``data_source``
    would import ``NAME`` as a module and call an attribute of it."""
    if not isinstance(spec, str):
        return False
    name, sep, _ = spec.partition(":")
    return bool(sep) and not DATASETS.known(name)


def model_imports_code(name: object) -> bool:
    return isinstance(name, str) and not name.startswith(LIBRARY_MODELS) and MODELS.imports_code(name)


def method_imports_code(name: object) -> bool:
    return METHODS.imports_code(name) if isinstance(name, str) else False


def loss_imports_code(name: object) -> bool:
    return LOSSES.imports_code(name) if isinstance(name, str) else False


NOUNS = {"data": "data source", "model": "model", "method": "method", "loss": "loss"}
CHECKS = {
    "data": data_imports_code,
    "model": model_imports_code,
    "method": method_imports_code,
    "loss": loss_imports_code,
}


def refusal(kind: str, name: object, source: str, how: str, trusted: Collection[str] = ()) -> str | None:
    """Why ``name`` (a ``kind`` read from ``source``, a file) may not be resolved, or None when it may: it would
    import code and the user did not name it themselves (``trusted``: the names the command line or the bench
    YAML gave). ``how``: how the user names it ("give it yourself with --data")."""
    if not CHECKS[kind](name) or name in trusted:
        return None
    noun = NOUNS[kind]
    return (
        f"{source} names {noun} '{str(name)[:200]}', a module:attr path; importing a module named by a file would "
        f"run its code, so only built-in and installed {noun}s are taken from a file; {how} if you trust it"
    )


def refuse_code(kind: str, name: object, source: str, how: str, trusted: Collection[str] = ()) -> None:
    """``refusal`` as a UserError."""
    why = refusal(kind, name, source, how, trusted)
    if why is not None:
        raise UserError(why)
