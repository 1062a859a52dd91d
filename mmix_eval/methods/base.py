"""The method interface: what a regularizer receives per batch and what it returns."""

from __future__ import annotations

import hashlib
import inspect
import math
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmix_eval.catalog import LOSSES, METHODS
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.options import check_type, short_type


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, differentiable
    logits: torch.Tensor  # (B, C) the logits the loss was computed on


class Method:
    """Base class. Subclasses implement ``step`` and list their settings in ``describe``.

    ``step(model, x, y, rng)``: x float images in [0, 1] (B, C, H, W) already augmented, y int64
    labels (B,), rng the run's mixing ``numpy.random.Generator`` (checkpointed, so a resumed run
    replays it). Return the loss and logits; the loop does backward and the optimizer step.
    """

    name: str = "method"
    forward_passes: int = 1  # network forward passes per training step (the report's cost table shows it)

    def __init__(self, loss: str = "bce_softmax"):
        self.loss_name = loss
        self.loss_fn = LOSSES.get(loss)

    def validate(self, model) -> None:
        """Raise UserError if this method cannot run on ``model``."""

    def step(self, model, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> StepOutput:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.loss_name}


def source_sha256(method: Method) -> str | None:
    """A short hash of the source of a method defined outside mmix-eval (a plugin): its file and every module
    of the user's own it imports, transitively (helpers beside it, not installed packages), so that editing the
    plugin or a helper makes its old checkpoints stale; None for mmix-eval's own methods (their version is the
    package's). A plugin without such helpers hashes as before: its file alone."""
    module = type(method).__module__
    if module == "mmix_eval" or module.startswith("mmix_eval."):
        return None
    try:
        own = inspect.getsourcefile(type(method))
        h = hashlib.sha256(Path(own).read_bytes())
    except (TypeError, OSError):  # defined interactively, or no source on disk
        return None
    for name, path in _user_helpers(own):
        try:
            h.update(b"\0" + name.encode() + b"\0" + Path(path).read_bytes())
        except OSError:
            continue
    return h.hexdigest()[:16]


def _user_helpers(own: str) -> list[tuple[str, str]]:
    """(name, file) of the user's modules the plugin's source imports (``import x``, ``from x import y``, read
    from the source with ``ast``), transitively: Python files outside the interpreter's prefixes (stdlib,
    site-packages) and outside mmix-eval."""
    import ast
    import importlib.util
    import os

    skip = tuple(
        os.path.realpath(p)
        for p in {
            sys.prefix,
            sys.base_prefix,
            sys.exec_prefix,
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        }
    )
    found: dict[str, str] = {}
    todo, seen = [own], {os.path.realpath(own)}
    while todo:
        try:
            tree = ast.parse(Path(todo.pop()).read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        for name in sorted(names):
            mod = sys.modules.get(name)
            path = getattr(mod, "__file__", None)
            if (
                path is None and "." not in name
            ):  # not imported yet: found, not run (a dotted name would import its parent)
                try:
                    path = getattr(importlib.util.find_spec(name), "origin", None)
                except (ImportError, ValueError, AttributeError):
                    path = None
            if not path or not str(path).endswith(".py"):
                continue
            real = os.path.realpath(path)
            if real.startswith(skip) or real in seen:
                continue
            seen.add(real)
            found[name] = path
            todo.append(path)
    return sorted(found.items())


def fingerprint(method: Method) -> dict[str, Any]:
    """What a checkpoint records of its method: its name, its settings (every keyword argument it was built
    with, defaults filled in, as ``describe`` states them) and, for a plugin, its source hash."""
    h = source_sha256(method)
    described = {k: v for k, v in method.describe().items() if k != "name"}
    settings = _jsonable({**getattr(method, "_settings", {}), **described}, f"method '{method.name}'")
    return {"name": method.name, "settings": settings, **({"source_sha256": h} if h else {})}


def _jsonable(v: Any, where: str) -> Any:
    """Settings as JSON values (tuples as lists), so they can be written into a checkpoint's metadata."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x, where) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, where) for x in v]
    if v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v)):
        return v
    raise UserError(
        f"{where}: expected settings that are finite numbers, strings, booleans or lists of them, got "
        f"{type(v).__name__} {v!r:.80}"
    )


def check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise UserError(f"alpha: expected a finite number > 0, got {alpha!r}")
    return float(alpha)


def method_signature(factory) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    """A method factory's keyword parameters, whether it takes **kwargs, and their type hints."""
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        params = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return {}, True, {}
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that cannot be resolved: values are not type-checked
        hints = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {
        k: p
        for k, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return named, takes_any, hints


def method_arguments(name: str) -> list[str]:
    """The keyword arguments method ``name`` accepts (for help texts and error messages)."""
    return list(method_signature(METHODS.get(name))[0])


def create_method(name: str, kwargs: dict[str, Any] | None = None, **settings: Any) -> Method:
    """Build a method by registry name, ``module:attr`` import path or installed entry point, with its own
    keyword arguments (``kwargs``; a setting not given takes the method's default). Every key is checked
    against the factory's signature and every value against its annotation before the method is built.
    A plugin must be a Method subclass (or a factory returning a Method); a plugin that sets no ``name`` is
    reported under its spec. ``create_method('cutmix', prob=0.5)`` is ``create_method('cutmix', {'prob': 0.5})``;
    a setting given as None takes the method's default."""

    factory = METHODS.get(name)
    if not callable(factory):
        raise UserError(
            f"method '{name}': expected a Method subclass or a factory returning one, got {type(factory).__name__}"
        )
    kwargs = {k: v for k, v in {**(kwargs or {}), **settings}.items() if v is not None}
    params, takes_any, hints = method_signature(factory)
    accepted = ", ".join(params) or "none"
    for key in list(kwargs):
        if key not in params and not takes_any:
            raise UserError(
                f"method '{name}': unknown argument '{key}'{did_you_mean(key, list(params))}; its arguments: {accepted}"
            )
        hint = hints.get(key)
        if hint is not None and key in params:
            ok, converted = check_type(kwargs[key], hint)
            if not ok:
                raise UserError(
                    f"method '{name}': argument '{key}' expected {short_type(hint)}, got {kwargs[key]!r:.100}"
                )
            kwargs[key] = converted
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise UserError(f"method '{name}': argument '{missing[0]}' has no default; give it (its arguments: {accepted})")
    try:
        method = factory(**kwargs)
    except UserError as e:
        raise UserError(f"method '{name}': {e}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"method '{name}': could not be built with {kwargs} ({e})") from None
    if not isinstance(method, Method):
        raise UserError(
            f"method '{name}': expected a mmix_eval.methods.Method (step(model, x, y, rng) -> StepOutput), "
            f"got {type(method).__name__}"
        )
    if type(method).name == Method.name and method.name == Method.name:
        method.name = name
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    method._settings = _jsonable({**defaults, **kwargs}, f"method '{name}'")
    return method
