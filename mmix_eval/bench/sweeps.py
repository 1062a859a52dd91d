"""A bench's sweep: the swept keys and their values (a configuration section.key or a method's setting), expanded
into the points each method runs, and the tags that name the runs. Imports no torch."""

from __future__ import annotations

import copy
import itertools
import json

from mmix_eval.catalog import METHODS
from mmix_eval.config import Config, merge
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.upgrade import V1_METHOD_KEYS

SWEEP_SECTIONS = ("data", "model", "train")


def is_config_axis(key: str) -> bool:
    return key.split(".", 1)[0] in SWEEP_SECTIONS


def sweep_axes(sweep, where: str) -> dict[str, list]:
    """The bench's ``sweep:``: key -> the values it takes. A key is a method setting (alpha, eligible, a
    plugin's prob; swept for every method that takes it) or a section.key of the configuration (train.epochs,
    model.kwargs.width; swept for every method). Several keys: every combination."""
    if sweep is None:
        return {}
    if not isinstance(sweep, dict) or not sweep:
        raise UserError(
            f"{where}: 'sweep' expected a mapping of key: [values], e.g. {{alpha: [0.5, 1.0, 2.0]}}, got {sweep!r:.100}"
        )
    axes = {}
    for key, values in sweep.items():
        key = str(key)
        if not isinstance(values, list) or not values:
            raise UserError(f"{where} sweep '{key}': expected a non-empty list of values, got {values!r:.100}")
        if key.startswith("method."):
            rest = key.removeprefix("method.")
            key = rest.removeprefix("kwargs.")
            if rest == "name" or not key:
                raise UserError(
                    f"{where} sweep '{key}': expected a method setting or section.key; list methods under 'methods'"
                )
        if key == "train.seed":
            raise UserError(f"{where} sweep 'train.seed': expected seeds under 'seeds', not swept")
        section = key.split(".", 1)[0]
        if "." in key and section not in SWEEP_SECTIONS:
            raise UserError(
                f"{where} sweep '{key}': expected a method setting or a key of "
                f"{', '.join(SWEEP_SECTIONS)}{did_you_mean(section, list(SWEEP_SECTIONS))}"
            )
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise UserError(f"{where} sweep '{key}': expected distinct values, got {values!r:.100}")
        if is_config_axis(key):  # a key that does not exist fails here, naming the sweep
            merge(Config(), apply_point({"method": {}}, {key: values[0]}), f"{where} sweep '{key}'")
        axes[key] = values
    return axes


def sweep_points(axes: dict[str, list], m: dict, where: str, j: int) -> list[dict]:
    """Every combination of the swept values that apply to method entry ``m`` ([{}] when none apply)."""
    from mmix_eval.methods.base import method_signature  # torch: loaded only when a bench is read

    params, takes_any, _ = method_signature(METHODS.get(str(m.get("name"))))
    own = {**(m.get("kwargs") or {}), **{k: v for k, v in m.items() if k in V1_METHOD_KEYS}}
    keys = []
    for k in axes:
        if is_config_axis(k):
            keys.append(k)
        elif k in params or takes_any:
            if k in own:
                raise UserError(f"{where} methods[{j}]: sets '{k}', which the sweep sweeps; give it in one place")
            keys.append(k)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def apply_point(updates: dict, point: dict) -> dict:
    """The run's configuration updates with one combination of swept values set."""
    out = copy.deepcopy(updates)
    for key, value in point.items():
        if not is_config_axis(key):
            method = dict(out["method"])
            method["kwargs"] = {**(method.get("kwargs") or {}), key: value}
            out["method"] = method
            continue
        section, _, rest = key.partition(".")
        target = out[section] = out.get(section) or {}  # a deep copy already: updated in place
        parts = rest.split(".")
        for p in parts[:-1]:
            nxt = target.get(p)
            if nxt is None:
                nxt = target[p] = {}
            elif not isinstance(nxt, dict):
                raise UserError(f"sweep '{key}': '{section}.{p}' is not a mapping")
            target = nxt
        target[parts[-1]] = value
    return out


def short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def value_tag(v) -> str:
    if isinstance(v, list):
        return "_".join(value_tag(x) for x in v) or "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v) if v != "" else "input"
