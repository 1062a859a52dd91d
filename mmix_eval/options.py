"""Typed options, one parser for all of them: the run configuration's sections, a method's settings and an
evaluator's options are dataclasses (or signatures) whose annotations say what a value may be. Imports no torch.

- ``check_type(value, hint)``: is a parsed value (YAML, Python) of that type? Converted where lossless (an int
  for a float). Closed sets are ``Literal[...]``.
- ``coerce(value, hint)``: the same for command-line text too ("1,2" for a list, "true", "8").
- ``type_name`` / ``short_type``: the type in an error message ("a list of numbers" / "list[float]").
- ``OptionError``: a bad value, naming the parameter; only the command line maps it to a flag.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from mmix_eval.errors import ParamError

_UNIONS = (typing.Union, types.UnionType)


class OptionError(ParamError):
    """A bad option value. The message starts with the option's name (``interpolation: ...``); the CLI
    shows it under the flag's name (``--interpolation: ...``)."""

    def __init__(self, param: str, message: str):
        super().__init__(param, message)


# Upper bounds of the count-like options, checked before anything is allocated and stated in each help.
MAX_IMAGES = 1_000_000_000  # --limit, --calibration-split
MAX_BATCH = 65_536  # --batch-size (evaluation and training)
MAX_STEPS = 10_000  # --pgd-steps
MAX_DIM = 65_536  # spectra's --max-dim
MAX_SEED = 2**32 - 1  # seeds (numpy's SeedSequence and every library's generator take it)


def check_count(param: str, value: Any, low: int, high: int, none_ok: bool = False) -> None:
    """An integer option within [low, high], or an OptionError naming it (bools are not integers here)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OptionError(param, f"expected an integer from {low:,} to {high:,}, got {str(value)[:40]}")


def choices(hint) -> tuple | None:
    """The values of a ``Literal[...]`` closed set (None for any other type)."""
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def check_type(value: Any, hint: Any) -> tuple[bool, Any]:
    """Is ``value`` of the annotated type? Returns (ok, value converted where lossless)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:
        for a in args:
            ok, v = check_type(value, a)
            if ok:
                return True, v
        return False, value
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if origin is list or hint is list:
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, v = check_type(item, args[0]) if args else (True, item)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    return True, value


def coerce(value, hint) -> tuple[bool, Any]:
    """(ok, value) for ``value`` read as ``hint``; comma-separated text for a list (the CLI's form)."""
    origin = typing.get_origin(hint)
    if origin is list and isinstance(value, str):
        (inner,) = typing.get_args(hint) or (str,)
        if value.strip()[:1] == "[" and value.strip()[-1:] == "]":  # --set fgsm.eps=[1,2]: YAML's list form too
            value = value.strip()[1:-1]
        converted = []
        for s in (s.strip() for s in value.split(",")):
            if not s:
                continue
            ok, v = coerce(s, inner)
            if not ok:
                return False, value
            converted.append(v)
        return True, converted
    if isinstance(value, str) and hint in (int, float, bool):
        if hint is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                return False, value
            return True, value.lower() in ("true", "1", "yes")
        try:
            return True, hint(value)
        except ValueError:
            return False, value
    if isinstance(value, str) and origin in _UNIONS:
        for a in typing.get_args(hint):
            if a is not str and a is not type(None):
                ok, v = coerce(value, a)
                if ok:
                    return True, v
    return check_type(value, hint)


def type_name(hint) -> str:
    """The type in words, for an option's error: "a list of numbers", "an integer or none", "one of a, b"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(args[0], type_name(args[0]))}" if args else "a list"
    if origin in _UNIONS:
        return " or ".join(type_name(a) for a in args)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "none"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def short_type(hint) -> str:
    """The type as written, for a configuration key's or a method argument's error: "float", "list[int]"."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "null")


def option_fields(options_cls) -> list[tuple[str, Any, Any, str]]:
    """(name, type hint, default, help) for each field of an options dataclass."""
    hints = typing.get_type_hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        out.append((f.name, hints[f.name], default, f.metadata.get("help", "")))
    return out
