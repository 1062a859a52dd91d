"""A checkpoint's metadata checked field by field before anything is built: every leaf bounded (length, depth), and
the fields the evaluators and the report read, each with its type and range. Imports no torch."""

from __future__ import annotations

import math

from mmix_eval.catalog import METHODS
from mmix_eval.errors import UserError
from mmix_eval.upgrade import method_record

MAX_META_STRING = 10_000  # characters; class names, specs and paths are far shorter
MAX_META_DEPTH = 12


def check_leaves(path, value, where: str, depth: int) -> None:
    """Every value in the metadata: finite numbers, bounded strings, bounded nesting (so a hostile header
    cannot smuggle NaN into a report, flood a terminal or exhaust the recursion limit)."""
    if depth > MAX_META_DEPTH:
        raise UserError(
            f"checkpoint '{path}': metadata '{where}' expected at most {MAX_META_DEPTH} levels of nesting, got more"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"checkpoint '{path}': metadata '{where}' expected a finite number, got {value}")
    if isinstance(value, str) and len(value) > MAX_META_STRING:
        raise UserError(
            f"checkpoint '{path}': metadata '{where}' expected a string of at most {MAX_META_STRING} "
            f"characters, got {len(value)}"
        )
    if isinstance(value, dict):
        for k, v in value.items():
            check_leaves(path, k, f"{where}.{k[:40]}" if where else k[:40], depth + 1)
            check_leaves(path, v, f"{where}.{k[:40]}" if where else k[:40], depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_leaves(path, v, f"{where}[{i}]", depth + 1)


def _expect(path, ok: bool, field: str, expected: str, got) -> None:
    if not ok:
        raise UserError(f"checkpoint '{path}': metadata '{field}' expected {expected}, got {got!r:.120}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_fields(path, meta: dict) -> None:
    """The fields the evaluators and the report read, each with its type and range."""
    kw = meta["model"]["kwargs"]
    for key in ("num_classes", "in_channels"):
        _expect(
            path,
            _is_int(kw.get(key)) and kw[key] >= (2 if key == "num_classes" else 1) and kw[key] <= 100_000,
            f"model.kwargs.{key}",
            "an integer >= 2" if key == "num_classes" else "an integer >= 1",
            kw.get(key),
        )
    points = meta["model"].get("num_mix_points")
    _expect(
        path,
        points is None or (_is_int(points) and points >= 1),
        "model.num_mix_points",
        "an integer >= 1 or null",
        points,
    )
    _check_data(path, meta)
    _check_method(path, meta, points)


def _check_data(path, meta: dict) -> None:
    data = meta.get("data", {})
    _expect(path, isinstance(data, dict), "data", "an object", data)
    classes = data.get("classes")
    _expect(
        path,
        classes is None or (isinstance(classes, list) and all(isinstance(c, str) for c in classes)),
        "data.classes",
        "a list of strings",
        classes,
    )
    _expect(
        path, data.get("spec") is None or isinstance(data.get("spec"), str), "data.spec", "a string", data.get("spec")
    )


def _check_method(path, meta: dict, points) -> None:
    """The method's name and the settings a report reads (α, the eligible layers, the loss), and its spec."""
    method = meta.get("method", {})
    _expect(path, isinstance(method, dict), "method", "an object", method)
    if not method:
        return
    name = method.get("name")
    _expect(
        path,
        isinstance(name, str) and 0 < len(name) <= 200 and name.isprintable(),
        "method.name",
        "a printable name of at most 200 characters",
        name,
    )
    settings = method_record(method).get("settings")
    _expect(path, isinstance(settings, dict), "method.settings", "an object of the method's settings", settings)
    alpha = settings.get("alpha")
    _expect(
        path,
        alpha is None or (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0),
        "method.settings.alpha",
        "a finite number > 0 or null",
        alpha,
    )
    eligible = settings.get("eligible")
    if eligible is not None:
        _expect(
            path,
            isinstance(eligible, list) and all(isinstance(k, str) or (_is_int(k) and k >= 0) for k in eligible),
            "method.settings.eligible",
            "a list of layer indices >= 0 or module names",
            eligible,
        )
        bad = [k for k in eligible if _is_int(k) and _is_int(points) and k >= points]
        _expect(
            path,
            not bad,
            "method.settings.eligible",
            f"layer indices in 0..{(points or 1) - 1} for this model",
            eligible,
        )
    _expect(
        path,
        settings.get("loss") is None or isinstance(settings.get("loss"), str),
        "method.settings.loss",
        "a string",
        settings.get("loss"),
    )
    spec = (meta.get("config") or {}).get("method", {}).get("name") if isinstance(meta.get("config"), dict) else None
    if spec is not None:
        known = isinstance(spec, str) and (":" in spec or spec in METHODS.names())
        _expect(
            path,
            known,
            "config.method.name",
            f"a registered method ({', '.join(METHODS.names())}) or a plugin's module:attr",
            spec,
        )
