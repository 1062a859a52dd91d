"""The report's view model: everything a renderer shows, computed once (cell texts, bold and daggers,
generated sentences, differences, sweeps, cost), so HTML, Markdown and LaTeX each only lay it out.
Imports no torch."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mmix_eval.report.calibration_verdicts import calibration_verdicts
from mmix_eval.report.calibrator_means import calibrator_means, conformal_means
from mmix_eval.report.claims import POWER, Comparison, Primary, best_holds
from mmix_eval.report.compare import is_ensemble
from mmix_eval.report.labels import quote_label
from mmix_eval.report.sections.base import note_level
from mmix_eval.report.sweep import cell, key_of, sweep_views
from mmix_eval.report.table import Table
from mmix_eval.report.table import signed_text as _num
from mmix_eval.report.view_cost import cost_table
from mmix_eval.report.view_main import MainSpec, main_columns, main_table
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
)
from mmix_eval.report.view_types import (
    Differences,
    MethodVerdicts,
    Note,
    SectionView,
    Skipped,
    SweepView,
    Verdicts,
    View,
)


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
        "calibrators": calibrator_means(table),
        "conformal": conformal_means(table),
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
