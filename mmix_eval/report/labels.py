"""Column labels and their order: a run's method, its settings where runs of that method differ, its swept
values; the baseline a user names, resolved to exactly one column. Imports no torch."""

from __future__ import annotations

import json

from mmix_eval.errors import UserError

METHOD_ORDER = ("vanilla", "input_mixup", "manifold_mixup")


# Method settings shown in a column label where one method's runs differ in them (display only).
_SETTING_LABEL = {
    "alpha": lambda v: f"α={v:g}" if isinstance(v, (int, float)) else f"α={v}",
    "eligible": lambda v: f"S={json.dumps(v)}",
    "loss": lambda v: str(v),
}


def setting_text(key: str, value) -> str:
    """A method setting or swept key as a column label shows it: α=0.5, S=[0,1], epochs=10, prob=0.5."""
    short = key.rsplit(".", 1)[-1]
    if short in _SETTING_LABEL and "." not in key:
        return _SETTING_LABEL[short](value)
    text = (
        json.dumps(value, separators=(",", ":"))
        if isinstance(value, (list, dict))
        else (f"{value:g}" if isinstance(value, float) else str(value))
    )
    return f"{short}={text}"


def sweep_label(point: dict | None) -> str:
    """A run's swept values as they follow its method's name in a column label ('α=0.5 epochs=10')."""
    return " ".join(setting_text(k, v) for k, v in (point or {}).items())


def method_labels(rows: list[dict]) -> dict[str, str]:
    """run -> column label: the run's own label where it has one (a bench method's ``label:``), else the
    method name plus the settings (α, eligible layers, loss, …) in which the runs of that method differ; a
    bench sweep's values follow ('manifold_mixup α=0.5', 'MM epochs=10'). One label naming two different
    methods (or settings) is an error, never one merged column."""
    given = {r["run"]: r.get("method_label") for r in rows if r.get("method_label")}
    per_run = {r["run"]: (r["method"], r["method_settings"] or {}, r.get("sweep") or {}) for r in rows}
    by_method: dict[str, list[dict]] = {}
    for method, settings, _ in per_run.values():
        by_method.setdefault(method, []).append(settings)
    labels = {}
    for run, (method, settings, sweep) in per_run.items():
        variants = by_method[method]
        present = {k for v in variants for k in v} - set(sweep)
        keys = [k for k in _SETTING_LABEL if k in present] + sorted(present - set(_SETTING_LABEL))
        parts = [str(method)]
        for k in keys:
            if len({json.dumps(v.get(k), sort_keys=True) for v in variants}) > 1 and settings.get(k) is not None:
                parts.append(_SETTING_LABEL.get(k, lambda v, k=k: f"{k}={v}")(settings[k]))
        base = given.get(run) or " ".join(parts)
        labels[run] = f"{base} {sweep_label(sweep)}" if sweep else base
    owner: dict[str, tuple] = {}
    for run, label in labels.items():
        method, settings, sweep = per_run[run]
        what = (method, json.dumps([settings, sweep], sort_keys=True, default=str))
        if owner.setdefault(label, (what, run))[0] != what:
            raise UserError(
                f"results: label '{label}' names two different methods, run '{owner[label][1]}' and run "
                f"'{run}' ({method} {json.dumps(settings, sort_keys=True, default=str)}); expected one "
                f"label per method and settings"
            )
    return labels


def resolve_baseline(rows: list[dict], labels: dict[str, str], baseline: str | None) -> str | None:
    """The one column a baseline names: a column label, else the only column of that method (by name or
    label without its swept values). A name that fits several columns (a swept method, or one method with
    different settings) is an error listing them; a name that fits none is an error when there is anything
    to compare (two columns or more)."""
    columns = order_methods(labels, rows, None)
    if baseline is None or baseline in columns:
        return baseline
    bases = sweep_bases(rows, labels)
    method = {labels[r["run"]]: r["method"] for r in rows}
    fits = [m for m in columns if bases.get(m, (None,))[0] == baseline or method[m] == baseline]
    if len(fits) > 1:
        raise UserError(
            f"baseline '{baseline}': expected one column, got {len(fits)} that it names; choose one of "
            + ", ".join(quote_label(m) for m in fits)
        )
    if not fits and len(columns) > 1:
        raise UserError(
            f"baseline '{baseline}': expected one of the columns ({', '.join(quote_label(m) for m in columns)}), "
            f"got a name none of them has"
        )
    return fits[0] if fits else baseline


def quote_label(label: str) -> str:
    """A column label as a user types it back: quoted when it holds a space."""
    return f'"{label}"' if " " in label else label


def sweep_bases(rows: list[dict], labels: dict[str, str]) -> dict[str, tuple[str, dict]]:
    """column label -> (its label without the swept values, its swept values) for the columns of a sweep."""
    out = {}
    for r in rows:
        sweep = r.get("sweep") or {}
        if sweep:
            text = sweep_label(sweep)
            out.setdefault(labels[r["run"]], (labels[r["run"]].removesuffix(" " + text), dict(sweep)))
    return out


def order_methods(
    labels: dict[str, str], rows: list[dict], baseline: str | None, order: list[str] | None = None
) -> list[str]:
    """Columns in ``order`` (a bench's methods as its YAML lists them: labels or method names) where given,
    else the baseline first, then vanilla / input mixup / manifold mixup, then the rest by name; a swept
    method's columns stay together, in the order of the swept values."""
    methods = {labels[r["run"]]: r["method"] for r in rows}
    sweeps = sweep_bases(rows, labels)
    given = {name: k for k, name in reversed(list(enumerate(order or [])))}

    def value_key(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, float(v), "")
        if isinstance(v, list):
            return (1, float(len(v)), json.dumps(v))
        return (2, 0.0, json.dumps(v, default=str))

    def rank(lab):
        base, point = sweeps.get(lab, (lab, {}))
        if given:
            place = given.get(base, given.get(methods[lab], len(given)))
            return (place, 0, base, [value_key(v) for v in point.values()], lab)
        group = next((i for i, k in enumerate(METHOD_ORDER) if methods[lab] == k), 99)
        first = lab == baseline or base == sweeps.get(baseline, (baseline,))[0]  # the baseline's sweep group
        return (not first, group, base, [value_key(v) for v in point.values()], lab)

    return sorted(set(labels.values()), key=rank)
