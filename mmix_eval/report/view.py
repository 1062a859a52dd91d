"""The report's view model: everything a renderer shows, computed once (cell texts, bold and daggers,
generated sentences, differences, sweeps, cost), so HTML, Markdown and LaTeX each only lay it out.
Imports no torch."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass

from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import scaled_condition
from mmix_eval.report.calibration_verdicts import calibration_verdicts
from mmix_eval.report.claims import ALPHA, POWER, PRIMARY_EVALUATORS, Comparison, Primary, best_holds, lookup
from mmix_eval.report.compare import ACC_GAP, accuracy_gated, is_ensemble
from mmix_eval.report.labels import quote_label
from mmix_eval.report.sections.base import note_level
from mmix_eval.report.sweep import cell, key_of, sweep_views
from mmix_eval.report.table import Table
from mmix_eval.report.table import signed_text as _num
from mmix_eval.report.view_cost import cost_table
from mmix_eval.report.view_text import (
    ADJUSTED,
    LEGEND,
    NA,
    PAPER_LEGEND,
    SWEEP_LEGEND,
    _family_text,
    cell_text,
    claim_sentence,
    diff_legend,
    header_text,
    method_text,
    network_text,
    paper_values,
    provenance_summary,
    seed_note,
    short_text,
)
from mmix_eval.report.view_types import (
    Differences,
    MainTable,
    MethodVerdicts,
    Note,
    SectionView,
    Skipped,
    SweepView,
    Verdicts,
    View,
)


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
        gated = (
            table.best(i) & accuracy_gated(table, i) & set(columns)
        )  # the best score of a column far below in accuracy
        gated_any = gated_any or bool(gated)
        cells = []
        for m in columns:
            c = lookup(table, found, i, m)
            mark = (" †" if c.primary else " *") if c is not None and c.holds else ""
            cells.append(
                {
                    "text": short_text(table, i, m) + (" ‡" if m in gated else ""),
                    "best": m in best,
                    "dagger": c is not None and c.primary and c.holds,
                    "mark": mark,
                }
            )
        rows.append({"label": table.rows[i].label, "direction": table.rows[i].direction, "cells": cells})
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
    if any(cell["mark"] == " *" for row in rows for cell in row["cells"]):
        caption += (
            " *: an exploratory method claim holds (corrected within its evaluator's section, not a primary claim)."
        )
    return {"columns": columns, "rows": rows, "caption": caption}


def verdicts(table: Table, found: list[Comparison], baseline: str | None, primary: Primary) -> Verdicts:
    """What holds, in words, over the primary comparisons: per condition, one sentence per column
    (``by_condition``, for summary.md); per column, the method claims that hold, the network claims beside them,
    and the conditions where nothing holds (``by_method``, the report's top)."""
    prim = [c for c in found if c.primary or (is_ensemble(table, c.column) and _primary_row(table, found, c))]
    if not prim:
        return {"by_condition": [], "by_method": [], "short": [], "count": 0, "family": ""}
    by_condition: dict[str, list[str]] = {}
    by_method: dict[str, MethodVerdicts] = {}
    for c in prim:
        sentence = claim_sentence(table, c, primary)
        row = table.rows[c.row]
        by_condition.setdefault(row.label, []).append(sentence)
        slot = by_method.setdefault(
            c.column,
            {
                "method": c.column,
                "holds": [],
                "not": [],
                "better": [],
                "worse": [],
                "net_better": [],
                "net_worse": [],
                "more_seeds": [],
                "against": c.against,
                "ensemble": is_ensemble(table, c.column),
                "pairs": set(),
                "images": set(),
            },
        )
        name = (row.label.rpartition(": ")[0] or row.label) if row.metric == "acc" else row.label  # accuracy: points
        if c.method is not None:
            slot["pairs"].add(c.method.pairs)
            slot["images"] |= {c.method.images} if c.method.images else set()
        (slot["holds"] if c.holds else slot["not"]).append(sentence if c.holds else row.label)
        if c.holds:
            slot["better" if c.better else "worse"].append(f"{name} {_num(table, c.row, c.diff)}")
        if c.network_holds:
            slot["net_better" if c.better else "net_worse"].append(name)
        if c.power_checked:
            slot["more_seeds"].append((name, c.seeds_needed))
    n_primary = sum(1 for c in prim if c.primary and c.method is not None)
    return {
        "by_condition": list(by_condition.items()),
        "by_method": list(by_method.values()),
        "short": [_column_paragraph(m) for m in by_method.values()],
        "count": n_primary,
        "family": _family_text(primary, n_primary),
    }


def _listed(items: list[str]) -> str:
    """At most 5 named, the rest counted (every one is in claims.md)."""
    return "; ".join(items[:5]) + (f"; and {len(items) - 5} more" if len(items) > 5 else "")


def _column_paragraph(m: MethodVerdicts) -> str:
    """One column's verdicts in a paragraph: what holds better and worse, what does not, and how many seeds the
    network-only claims would need (an ensemble: its network claims only)."""
    total = len(m["holds"]) + len(m["not"])
    if m["ensemble"]:
        parts = [
            f"network claims only (a deep ensemble has no training seeds): better than {m['against']} under "
            f"{len(m['net_better'])} of {total}" + (": " + _listed(m["net_better"]) if m["net_better"] else ""),
            f"worse under {len(m['net_worse'])}" + (": " + _listed(m["net_worse"]) if m["net_worse"] else ""),
        ]
        return f"{m['method']}: " + "; ".join(parts) + "."
    basis = f"method claims, {'/'.join(map(str, sorted(m['pairs'])))} seed pairs" + (
        f" × {'/'.join(f'{n:,}' for n in sorted(m['images']))} test images" if m["images"] else ""
    )
    parts = [
        f"better than {m['against']} under {len(m['better'])} of {total}: " + _listed(m["better"])
        if m["better"]
        else f"better than {m['against']} under none of {total}",
        f"worse under {len(m['worse'])}: " + _listed(m["worse"]) if m["worse"] else "worse under none",
        f"no difference holds under the other {len(m['not'])}" if m["not"] else "",
    ]
    text = f"{m['method']} ({basis}): " + "; ".join(p for p in parts if p) + "."
    if m["net_better"] or m["net_worse"]:
        text += (
            f" Network claims (these trained networks, per image): better under {len(m['net_better'])}, worse "
            f"under {len(m['net_worse'])}."
        )
    if m["more_seeds"]:
        needed = [n for _, n in m["more_seeds"] if n]
        shown = (
            (f"{min(needed)}" if min(needed) == max(needed) else f"{min(needed)} to {max(needed)}") if needed else ""
        )
        over = len(needed) < len(m["more_seeds"])
        text += (
            f" Where only the network claim holds ({len(m['more_seeds'])}), {POWER * 100:.0f} % power for the "
            f"method claim at the observed effect and the family's level would need "
            + (f"{shown} seeds per method" if needed else "")
            + (" (more than 1,000 for some)" if over and needed else "more than 1,000 seeds" if over else "")
            + " (each condition's number in claims.md)."
        )
    return text


def _primary_row(table: Table, found: list[Comparison], c: Comparison) -> bool:
    """An ensemble's comparison is shown with the primary ones where its row is a primary row of a single model."""
    return any(o.primary and o.row == c.row for o in found)


def differences(table: Table, found: list[Comparison], primary: Primary) -> Differences | None:
    """One row per column x condition (readable at ten methods): the method claim and the network claim."""
    if not found:
        return None
    adj = ADJUSTED[primary.multiplicity]
    rows = [
        {
            "method": f"{c.column} − {c.against}",
            "label": table.rows[c.row].label,
            "family": "primary" if c.primary else c.family.removeprefix("exploratory: ") + " (exploratory)",
            "seeds": method_text(table, c, adj) + (" holds" if c.holds else ""),
            "images": network_text(table, c, adj) + (" holds" if c.network_holds and not c.descriptive else ""),
        }
        for c in found
    ]
    return {"rows": rows, "images": any(c.network is not None for c in found), "legend": diff_legend(primary)}


def sections(table: Table, outcomes: dict | None = None, detail: dict | None = None) -> list[SectionView]:
    """Each evaluator's table: every metric per condition; bold only where the best holds against the runner-up
    (``best_holds``: a method claim, or a network claim where a column has one seed), as in the main table."""
    out, memo = [], {}
    for key, title, idx in table.sections:
        paper = {i: paper_values(table, i) for i in idx}
        paper_methods = [m for m in table.methods if any(m in p for p in paper.values())]
        rows = []
        for i in idx:
            row = table.rows[i]
            k = (row.evaluator, row.condition, row.metric, row.calibrator)
            if k not in memo:  # the clean rows recur in every evaluator's section: tested once
                memo[k] = best_holds(table, i, outcomes or {}, detail)[0] if row.direction else set()
            best = memo[k]
            cells = []
            for m in table.methods:
                text = cell_text(table, i, m)
                cells.append(
                    {"text": text, "cls": "best" if m in best else ("na" if text == NA else ""), "best": m in best}
                )
            rows.append(
                {
                    "label": table.rows[i].label,
                    "cells": cells,
                    "paper": [table.fmt(i, paper[i].get(m)) for m in paper_methods],
                }
            )
        out.append({"key": key, "title": title, "rows": rows, "paper_methods": paper_methods})
    return out


def sweeps(table: Table, outcomes: dict | None = None, detail: dict | None = None) -> list[SweepView]:
    """Each swept key as a table (metric, method, one column per swept value), and the methods that do not take
    the key apart, in a table of their own (no empty cells). Bold: the best value of a row only where it holds
    against the runner-up value (``best_holds`` among the row's columns)."""
    out = []
    for view in sweep_views(table):
        head = [view.value_text(v) for v in view.values]
        rows, fixed = [], []
        for i in view.rows:
            row = table.rows[i]
            for s in view.series:
                columns = [s.columns.get(key_of(v)) for v in view.values]
                cs = [cell(table, i, m) for m in columns]
                best = best_holds(table, i, outcomes or {}, detail, [m for m in columns if m])[0]
                cells = [
                    {
                        "text": (cell_text(table, i, m) + (" [chosen on validation]" if m in table.chosen else ""))
                        if c is not None
                        else NA,
                        "cls": "best" if c is not None and m in best else ("na" if c is None else ""),
                    }
                    for m, c in zip(columns, cs)
                ]
                rows.append({"metric": row.label, "method": s.name, "cells": cells, "paper": False})
                got = view.paper.get((i, s.name))
                if got:
                    rows.append(
                        {
                            "metric": row.label,
                            "method": f"paper (Table 5): {s.name}",
                            "paper": True,
                            "cells": [
                                {"text": table.fmt(i, got[key_of(v)]) if key_of(v) in got else NA, "cls": "paper"}
                                for v in view.values
                            ],
                        }
                    )
            for m in view.fixed:
                fixed.append({"metric": row.label, "method": m, "text": cell_text(table, i, m)})
        out.append({"title": f"Sweep over {view.key}", "key": view.key, "head": head, "rows": rows, "fixed": fixed})
    return out


MAX_SKIPPED_SHOWN = 50


def skipped(bad: list) -> Skipped | None:
    """The files the report could not read, each with its reason (at most ``MAX_SKIPPED_SHOWN`` listed)."""
    if not bad:
        return None
    more = (
        f" ({len(bad) - MAX_SKIPPED_SHOWN} more not listed here; all are printed on stderr)"
        if len(bad) > MAX_SKIPPED_SHOWN
        else ""
    )
    return {
        "text": f"Skipped {len(bad)} unreadable file(s); this report is built from the rest{more}:",
        "shown": [(str(p), str(w)) for p, w in bad[:MAX_SKIPPED_SHOWN]],
    }


@dataclass(frozen=True)
class ViewInputs:
    """Everything a report shows, as the build computed it: the table and its comparisons (``found``, under the
    ``primary`` family), the per-image outcomes and detail, training costs, provenance, the ``--check`` results, the
    unreadable files, the title and notes, and what the main table shows (``spec``)."""

    table: Table
    found: list[Comparison]
    primary: Primary
    baseline: str | None
    outcomes: dict
    costs: dict
    prov: dict
    checks: list
    bad: list
    title: str
    notes: list[str]
    detail: dict | None = None
    spec: MainSpec | None = None


def build_view(v: ViewInputs) -> View:
    """The view model every renderer lays out (``view_types.View``)."""
    table = v.table
    single, ensembles = main_columns(table, v.spec)
    main = main_table(table, v.outcomes, v.baseline, v.found, v.primary, v.detail, v.spec, single)
    if ensembles and main is not None:
        main["ensembles"] = main_table(table, v.outcomes, v.baseline, v.found, v.primary, v.detail, v.spec, ensembles)
    secs = sections(table, v.outcomes, v.detail)
    has_paper = any(s["paper_methods"] for s in secs)
    shown: list[Note] = [{"text": str(n), "cls": "note" if note_level(n) == "info" else "fail"} for n in v.notes]
    return {
        "title": v.title,
        "notes": shown,
        "header": header_text(table),
        "seed_note": seed_note(table),
        "legend": LEGEND + (PAPER_LEGEND if has_paper else ""),
        "methods": table.methods,
        "baseline": v.baseline,
        "main": main,
        "verdicts": verdicts(table, v.found, v.baseline, v.primary),
        "calibration": calibration_verdicts(table, v.baseline, v.found, v.detail, v.primary),
        "cost": cost_table(table, v.costs),
        "sections": secs,
        "sweeps": sweeps(table, v.outcomes, v.detail),
        "sweep_legend": SWEEP_LEGEND,
        "diffs": differences(table, v.found, v.primary),
        "checks": v.checks,
        "bad": v.bad,
        "skipped": skipped(v.bad),
        "summary": provenance_summary(table, v.prov),
        "baseline_choice": quote_label(v.baseline) if v.baseline else None,
        "provenance": json.dumps(v.prov, indent=2, sort_keys=True, default=str),
        "sources": [
            f"{e} images: {', '.join(s['source'])}." for e, s in table.context["settings"].items() if s.get("source")
        ],
    }
