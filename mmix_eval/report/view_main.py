"""The report's main table: its columns, its rows (the paper's conditions and one per other evaluator, or the report's own main: spec), bold, daggers and its caption. Imports no torch."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import scaled_condition
from mmix_eval.report.claims import ALPHA, PRIMARY_EVALUATORS, Comparison, Primary, best_holds, lookup
from mmix_eval.report.compare import ACC_GAP, accuracy_gated, is_ensemble
from mmix_eval.report.table import Table
from mmix_eval.report.view_text import (
    _family_text,
    short_text,
)
from mmix_eval.report.view_types import MainCell, MainTable


@dataclass
class MainSpec:
    """What the main table shows (``report: {main: {columns: [...], rows: [...]}}``): column patterns (a label or a
    method name, fnmatch) and row patterns 'CONDITION[:METRIC[@CALIBRATOR]]' (METRIC acc and CALIBRATOR none by
    default, as in checks). None: the default (see ``main_rows`` and ``main_columns``)."""

    columns: list[str] | None = None
    rows: list[str] | None = None

    def __post_init__(self):
        for what in ("columns", "rows"):
            v = getattr(self, what)
            if v is not None and (not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v)):
                raise UserError(f"main.{what}: expected a non-empty list of patterns, got {v!r:.80}")


def _row_matches(r, pattern: str) -> bool:
    condition, _, rest = pattern.partition(":")
    metric, _, calibrator = (rest or "acc").partition("@")
    return (
        fnmatch.fnmatchcase(r.condition, condition)
        and fnmatch.fnmatchcase(r.metric, metric)
        and fnmatch.fnmatchcase(r.calibrator, calibrator or "none")
    )


def main_columns(table: Table, spec: MainSpec | None = None) -> tuple[list[str], list[str]]:
    """(the main table's columns, the deep-ensemble table's). Default: the single models in the main table and the
    ensembles in a table of their own (paired with the baseline's ensemble); with ``spec.columns``, those columns in
    one table."""
    if spec is not None and spec.columns:
        chosen = [
            m
            for m in table.methods
            if any(
                fnmatch.fnmatchcase(m, p)
                or (  # a method's name: its single models
                    fnmatch.fnmatchcase(str(table.info[m][0]), p) and not is_ensemble(table, m)
                )
                for p in spec.columns
            )
        ]
        if not chosen:
            raise UserError(
                f"main.columns: {spec.columns} name none of the report's columns ({', '.join(table.methods)})"
            )
        return chosen, []
    single = [m for m in table.methods if not is_ensemble(table, m)]
    ensembles = [m for m in table.methods if is_ensemble(table, m)]
    return (single, ensembles) if single else (ensembles, [])


def main_rows(table: Table, spec: MainSpec | None = None) -> list[int]:
    """The main table's rows: with ``spec.rows``, the rows they match (any section, each once, in table order);
    by default the comparison's rows of the paper's evaluators (clean, deformations, FGSM) and the first headline row
    of every other evaluator (one line each: the main table stays a page at any number of evaluators; all are in
    the Comparison table), each clean likelihood or calibration score followed by the same score after post-hoc
    calibration: a calibration claim is read from both side by side."""
    if spec is not None and spec.rows:
        seen, out = set(), []
        for i, r in enumerate(table.rows):
            key = (r.evaluator, r.condition, r.metric, r.calibrator)
            if key not in seen and any(_row_matches(r, p) for p in spec.rows):
                seen.add(key)
                out.append(i)
        if not out:
            raise UserError(
                f"main.rows: {spec.rows} match none of the report's rows (conditions: "
                f"{', '.join(dict.fromkeys(r.condition for r in table.rows))})"
            )
        return out
    idx = next((idx for key, _, idx in table.sections if key == "comparison"), [])
    firsts: dict = {}
    for i in idx:
        ev = table.rows[i].evaluator
        if ev not in PRIMARY_EVALUATORS and table.rows[i].calibrator == "none":
            firsts.setdefault(ev, i)
    idx = [i for i in idx if table.rows[i].evaluator in PRIMARY_EVALUATORS or i in firsts.values()]
    out = []
    for i in idx:
        if i in out:
            continue
        out.append(i)
        r = table.rows[i]
        if r.condition == "clean" and r.calibrator == "none" and r.direction is not None and r.metric != "acc":
            after = [
                k
                for k in idx
                if table.rows[k].condition == "clean"
                and table.rows[k].metric == r.metric
                and table.rows[k].calibrator != "none"
            ]
            if not after:  # records without calibrated shift rows: the calibration evaluator's scaled condition
                after = [
                    k
                    for k, c in enumerate(table.rows)
                    if c.calibrator != "none"
                    and c.condition == scaled_condition(c.calibrator)
                    and c.metric == r.metric
                    and c.section != "comparison"
                ][:1]
            out += [k for k in after if k not in out]
    return out


def main_table(
    table: Table,
    outcomes: dict,
    baseline: str | None,
    found: list[Comparison],
    primary: Primary,
    detail: dict | None = None,
    spec: MainSpec | None = None,
    columns: list[str] | None = None,
) -> MainTable | None:
    """One row per headline condition (``main_rows``), one column per method of ``columns`` (default: every
    column): mean ± std, bold only where the best holds against the runner-up, † where a primary method claim holds
    against the baseline, * where an exploratory one does."""
    idx = main_rows(table, spec)
    columns = columns or list(table.methods)
    if not idx or not columns:
        return None
    rows, gated_any, kinds = [], False, set()
    for i in idx:
        best, kind = best_holds(table, i, outcomes, detail, columns) if table.rows[i].direction else (set(), None)
        kinds |= {kind} if kind else set()
        gated = table.best(i) & accuracy_gated(table, i) & set(columns)  # the best of a column far below in accuracy
        gated_any = gated_any or bool(gated)
        cells = [_main_cell(table, found, i, m, m in best, m in gated) for m in columns]
        rows.append({"label": table.rows[i].label, "direction": table.rows[i].direction, "cells": cells})
    caption = _bold_caption(table, idx, columns, kinds, gated_any) + _claim_caption(
        table, columns, found, baseline, primary
    )
    if any(cell["mark"] == " *" for row in rows for cell in row["cells"]):
        caption += (
            " *: an exploratory method claim holds (corrected within its evaluator's section, not a primary claim)."
        )
    return {"columns": columns, "rows": rows, "caption": caption}


def _main_cell(table: Table, found: list[Comparison], i: int, m: str, best: bool, gated: bool) -> MainCell:
    c = lookup(table, found, i, m)
    return {
        "text": short_text(table, i, m) + (" ‡" if gated else ""),
        "best": best,
        "dagger": c is not None and c.primary and c.holds,
        "mark": (" †" if c.primary else " *") if c is not None and c.holds else "",
    }


def _bold_caption(table: Table, idx: list[int], columns: list[str], kinds: set, gated_any: bool) -> str:
    """What the cells are, what bold means (a method or a network claim), and ‡."""
    ns = sorted({table.cells[i, m].n for i in idx for m in columns if (i, m) in table.cells})
    n_text = "no cells" if not ns else f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]}"
    caption = (
        f"Mean ± sample std over training seeds ({n_text} per cell). Bold: the best in its row, only where "
        f"the 95 % interval of its difference from the runner-up excludes 0 ("
        + ("a method claim, over seeds and images" if "method" in kinds or not kinds else "")
        + ("; " if len(kinds) == 2 else "")
        + ("a network claim over images where a column has one seed or is an ensemble" if "network" in kinds else "")
        + "); never for a calibration error (ECE and its kin are descriptive)."
    )
    if gated_any:
        caption += (
            f" ‡: the best value of its row, not bolded: that column's accuracy under the same condition is "
            f"more than {ACC_GAP:g} points below the best column's (a weak classifier can be well calibrated)."
        )
    return caption


def _claim_caption(table: Table, columns: list[str], found: list[Comparison], baseline, primary: Primary) -> str:
    """What † means: the primary method claims (or, for deep ensembles, that only network claims are made)."""
    caption = ""
    prim = [c for c in found if c.primary and c.method is not None]
    if all(is_ensemble(table, m) or m == baseline for m in columns):
        prim = []
        if any(is_ensemble(table, m) for m in columns):
            caption += (
                " Deep ensembles: each method's seeds as one model, compared with the baseline's ensemble by "
                "network claims only (an ensemble has no training seeds; the differences give them)."
            )
    if prim:
        pairs = sorted({c.method.pairs for c in prim})
        images = sorted({c.method.images for c in prim if c.method.images})
        caption += (
            f" †: a method claim against {baseline} holds (the training run as the unit: "
            f"{'/'.join(map(str, pairs))} seed pairs"
            + (f", {'/'.join(f'{n:,}' for n in images)} test images" if images else "")
            + f"; two-way t interval and test; {_family_text(primary, len(prim))}, α = {ALPHA:g})."
        )
    return caption
