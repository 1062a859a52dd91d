"""Sweep views: each swept key of a bench (a method setting like α or the eligible set, or a configuration key
like train.epochs) as a table of metric × method against the swept value, like the paper's Table 5 (eligible
sets) and Table 6 (α). Built from the aggregated Table's cells (mean ± std over seeds); torch-free.

The paper's Table 5 numbers stand beside ours where the setting is the paper's (CIFAR-10/100, PreActResNet18,
manifold mixup α = 2, clean test accuracy). Table 6 (α) is not in the protocol file, so no α number is shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from mmix_eval.report.labels import setting_text
from mmix_eval.report.paper import published_eligible
from mmix_eval.report.table import Table

MAX_PLOTTED = 9  # metrics per sweep plot


@dataclass
class Series:
    name: str  # the method (its label without the swept values), plus the other swept keys' values
    columns: dict  # swept value (JSON text) -> method label of the column with that value


@dataclass
class SweepView:
    key: str
    values: list  # the swept values, in order
    series: list[Series]
    fixed: list[str]  # method labels that do not take the key (a reference: the same model at every value)
    rows: list[int]  # table row indices shown (the comparison section)
    paper: dict = field(default_factory=dict)  # (row, series name) -> {value text: published number}

    def value_text(self, v) -> str:
        return setting_text(self.key, v)


def key_of(v) -> str:
    return json.dumps(v, sort_keys=True)


def _order(values: list) -> list:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    if all(isinstance(v, list) for v in values):
        return sorted(values, key=lambda v: (len(v), json.dumps(v)))
    return values


def sweep_views(table: Table) -> list[SweepView]:
    if not table.sweeps:
        return []
    keys = list(dict.fromkeys(k for _, point in table.sweeps.values() for k in point))
    comparison = next((idx for key, _, idx in table.sections if key == "comparison"), [])
    if not comparison:  # no headline metrics (a calibration-only bench): every scored row, once
        seen: set = set()
        for _, _, idx in table.sections:
            for i in idx:
                key = (table.rows[i].evaluator, table.rows[i].condition, table.rows[i].metric)
                if table.rows[i].direction is not None and key not in seen:
                    seen.add(key)
                    comparison.append(i)
    views = []
    for key in keys:
        values, series, fixed = [], {}, []
        for m in table.methods:
            base, point = table.sweeps.get(m, (m, {}))
            if key not in point:
                fixed.append(m)
                continue
            others = " ".join(setting_text(k, v) for k, v in point.items() if k != key)
            name = f"{base} {others}".strip()
            series.setdefault(name, {})[key_of(point[key])] = m
            if key_of(point[key]) not in map(key_of, values):
                values.append(point[key])
        if not series:
            continue
        view = SweepView(key, _order(values), [Series(n, c) for n, c in series.items()], fixed, list(comparison))
        view.paper = _paper(table, view)
        views.append(view)
    return views


def _paper(table: Table, view: SweepView) -> dict:
    """Table 5's numbers for an eligible-set sweep of manifold mixup, where data, model and α are the paper's."""
    out = {}
    if view.key != "eligible" or len(table.context["data"]) != 1 or len(table.context["model"]) != 1:
        return out
    data, model = table.context["data"][0], table.context["model"][0]
    for i in view.rows:
        row = table.rows[i]
        for s in view.series:
            method, settings = table.info[next(iter(s.columns.values()))]
            got = {
                key_of(v): published_eligible(
                    data, model, method, v, settings.get("alpha", 2.0), row.condition, row.metric
                )
                for v in view.values
            }
            got = {k: v for k, v in got.items() if v is not None}
            if got:
                out[i, s.name] = got
    return out


def cell(table: Table, i: int, label: str | None):
    """(mean, std, n) of a column's cell, or None."""
    c = table.cells.get((i, label)) if label is not None else None
    if c is None or math.isnan(c.mean):
        return None
    return c.mean, c.std, c.n


def plotted_rows(table: Table, view: SweepView) -> list[int]:
    """The metrics a sweep plot shows: the clean ones (accuracy, NLL, ECE, …), then per evaluator its mean
    condition if it has one, else its first and last condition."""
    if not any(table.rows[i].section == "comparison" for i in view.rows):
        return [i for i in view.rows if table.rows[i].direction is not None][:MAX_PLOTTED]
    clean = [i for i in view.rows if table.rows[i].evaluator is None and table.rows[i].direction is not None]
    by_eval: dict = {}
    for i in view.rows:
        if table.rows[i].evaluator is not None:
            by_eval.setdefault(table.rows[i].evaluator, []).append(i)
    picked = []
    for idx in by_eval.values():
        mean = [i for i in idx if table.rows[i].condition == "mean"]
        picked += mean[:1] or list(dict.fromkeys([idx[0], idx[-1]]))
    return (clean + picked)[:MAX_PLOTTED]


def sweep_choices(table: Table, costs: dict) -> tuple[dict[str, str], list[str]]:
    """For each swept method (the columns sharing a label but for the swept values; ensembles aside): the column
    whose runs have the lowest mean NLL on their own held-out validation split (the split training kept out, never a
    test image), and the notes that say so. A sweep whose runs did not all record a validation NLL is not chosen:
    its note says that picking the best column would be a choice on the test set. Returns ({base label: chosen
    column}, notes)."""
    groups: dict[str, list[str]] = {}
    for col, (base, _) in table.sweeps.items():
        if "ensemble_members" not in (table.info.get(col, (None, {}))[1] or {}):
            groups.setdefault(base, []).append(col)
    chosen, notes = {}, []
    for base, cols in groups.items():
        if len(cols) < 2:
            continue
        scores = {}
        for c in cols:
            vals = [(costs.get(r) or {}).get("val_nll") for r in table.runs.get(c, {}).values()]
            if vals and all(v is not None and math.isfinite(v) for v in vals):
                scores[c] = sum(vals) / len(vals)
        if len(scores) < len(cols):
            notes.append(
                f"{base}: the swept values were not chosen on held-out data (a run without a validation split, "
                f"train with data.val_size N): naming the best of {', '.join(cols)} from this report would be a "
                f"choice on the test set."
            )
            continue
        best = min(cols, key=lambda c: (scores[c], cols.index(c)))
        chosen[base] = best
        notes.append(
            f"{base}: {best} chosen on the held-out validation NLL (lowest mean over seeds: "
            + ", ".join(f"{c} {scores[c]:.4f}" for c in cols)
            + "); the other values' comparisons are "
            "exploratory (their test numbers were not used to choose)."
        )
    return chosen, notes
