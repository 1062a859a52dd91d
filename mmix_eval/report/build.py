"""Build a report: read the records, aggregate them into the table, let each evaluator's section add its rows,
notes and figures, compare against the baseline, and write every output from one view model. Orchestration
only: loading is ``load.py``, the table ``table.py`` (cells through the tidy frame, ``frame.py``), labels and
column order ``labels.py``, statistics ``compare.py`` / ``stats.py``, the CI gate ``checks.py``, sections
``sections/``, figures ``plots.py``, the view ``view.py``, the formats ``render.py``. Imports no torch.

Outputs: report.html (self-contained), report.md, summary.md (the main table and what holds, in words),
report.tex (booktabs tables, compiling standalone), table.csv, sweep.csv, records.jsonl/.csv, outcomes.npz,
cost.json, and plots/ (PNG and PDF).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmix_eval.errors import ParamError, UserError, mention
from mmix_eval.evaluate.outcomes import write_many
from mmix_eval.evaluate.records import V1_RENDERER, write_records
from mmix_eval.io import atomic_write_bytes, atomic_write_text, safe_name
from mmix_eval.report.checks import check_columns, parse_check, run_checks
from mmix_eval.report.claims import Primary, comparisons
from mmix_eval.report.compare import used_detail
from mmix_eval.report.labels import method_labels, order_methods, resolve_baseline
from mmix_eval.report.load import Results, load_results
from mmix_eval.report.plots import COLORS, Renderer, sweep_figures, training_curves
from mmix_eval.report.provenance import evaluation_warnings, nonfinite_notes, provenance, thread_notes
from mmix_eval.report.render import render_claims, render_html, render_markdown, render_summary
from mmix_eval.report.render_csv import write_csv_table, write_sweep_csv
from mmix_eval.report.render_latex import render_latex
from mmix_eval.report.reportset import discard, new_stage, staging_error, swap_in
from mmix_eval.report.sections import Note, SectionContext, section_for
from mmix_eval.report.sections.call import call_section
from mmix_eval.report.sweep import sweep_choices
from mmix_eval.report.table import (
    Table,
    aggregate,
    caveats,
    check_duplicates,
    comparable_groups,
    describe_group,
    evaluator_order,
)
from mmix_eval.report.view import ViewInputs, build_view
from mmix_eval.report.view_cost import STILL_FALLING, not_converged
from mmix_eval.report.view_main import MainSpec

__all__ = ["build_report", "load_results"]


def build_report(
    results_paths: list,
    out: str | Path,
    baseline: str | None = "vanilla",
    checks: list[str] | None = None,
    title: str | None = None,
    extra_provenance: dict | None = None,
    notes: list[str] | None = None,
    split_by: bool = False,
    order: list[str] | None = None,
    sections: dict[str, str] | None = None,
    strict_checks: bool = True,
    plots: bool = True,
    primary: list[str] | None = None,
    multiplicity: str = "holm",
    plot_columns: list[str] | None = None,
    evaluators: list[str] | None = None,
    main: dict | None = None,
    pdf_plots: bool = False,
    pool=None,
) -> dict:
    """Read records, aggregate, and write report.html, report.md, table.csv, records.csv/.jsonl and plots/.
    ``notes``: warnings shown at the top of the report (e.g. runs of a bench not finished yet). Records that
    cannot be compared (other data, test subset, evaluation seed or evaluator settings) are refused, naming
    two groups; with ``split_by`` each group gets its own report, in ``out/<group>/``. ``order``: the columns'
    order (a bench's methods as its YAML lists them); ``sections``: evaluator -> "module:Class" of a report
    section of the user's own (see ``sections/``). ``strict_checks``: a check naming no column is bad input
    (a bench, which checked its checks against its methods before training, passes False: a method whose
    runs all failed then fails its check in a report that is still written). ``primary``: the comparisons claimed,
    as 'COLUMN.CONDITION[:METRIC[@CALIBRATOR]]' patterns (``claims.Primary``; None: the default family);
    ``multiplicity``: holm, bonferroni, bh or none, applied within the primary family and within each evaluator's
    exploratory one. ``plot_columns``: the columns a figure that cannot draw them all shows (default: the baseline,
    the user's own columns, then the first others). ``evaluators``: the evaluators whose records are current (a
    bench's plan); records of any other are left out, and the report says so at its top. ``main``: {"columns":
    [...], "rows": [...]}, what the main table shows (``view.MainSpec``; default: the paper's rows and one row per
    other evaluator, the single models, the ensembles in a table of their own). ``pdf_plots``: every figure as PDF
    too (for a paper), beside the PNG. ``pool``: a process pool (``concurrent.futures``) to draw the figures in while
    this process builds the rest (a bench passes its workers); the files are the same."""
    for check in checks or []:  # a syntax error is bad input: refused before anything is read or written
        parse_check(check)
    if main is not None and (not isinstance(main, dict) or set(main) - {"columns", "rows"}):
        raise UserError(f"main: expected a mapping with 'columns' and/or 'rows', got {main!r:.80}")
    how = How(
        baseline,
        checks or [],
        title,
        extra_provenance,
        order,
        sections,
        strict_checks,
        plots,
        Primary(primary, multiplicity),
        plot_columns,
        MainSpec(**main) if main else None,
        pdf_plots,
        pool,
    )
    results = load_results(results_paths)
    notes = list(notes or []) + _keep_current(results, evaluators)
    groups = comparable_groups(results.rows)
    if len(groups) > 1 and not split_by:
        raise UserError(
            f"results: expected records that can be compared in one report, got {len(groups)} groups that "
            f"cannot, e.g. {describe_group(groups[0])}; and {describe_group(groups[1])} (report them apart, "
            f"or pass {mention('split_by')} for one report per group)"
        )
    if len(groups) == 1:
        return _build_one(results, out, notes, how)
    parts = [
        _build_one(
            _group_results(results, g), Path(out) / safe_name(f"group{k}-{g[0]['data']}-n{g[0]['n']}"), notes, how
        )
        for k, g in enumerate(groups, 1)
    ]
    return {
        **parts[0],
        "checks": [c for p in parts for c in p["checks"]],
        "out": Path(out),
        "groups": [p["out"] for p in parts],
    }


@dataclass
class How:
    """How a report is built, as ``build_report`` was asked (see its docstring); ``family`` the primary family,
    ``spec`` what the main table shows, ``given`` the user's own sections."""

    baseline: str | None
    checks: list[str]
    title: str | None
    extra_provenance: dict | None
    order: list[str] | None
    given: dict[str, str] | None
    strict_checks: bool
    plots: bool
    family: Primary
    plot_columns: list[str] | None
    spec: MainSpec | None
    pdf_plots: bool
    pool: Any


def _keep_current(results: Results, evaluators: list[str] | None) -> list[str]:
    """Records of an evaluator not in ``evaluators`` (a bench's plan) left out of ``results``, and the note saying so."""
    if evaluators is None:
        return []
    stale = sorted({str(r["evaluator"]) for r in results.rows} - set(evaluators))
    if not stale:
        return []
    runs = {str(r["run"]) for r in results.rows if str(r["evaluator"]) in stale}
    keep = set(evaluators)
    results.rows = [r for r in results.rows if str(r["evaluator"]) in keep]
    results.outcomes = {k: v for k, v in results.outcomes.items() if k[1] in keep}
    results.detail = {k: v for k, v in results.detail.items() if k[1] in keep}
    return [
        f"Left out: the stored records of {', '.join(stale)} ({len(runs)} runs), an evaluator no longer in "
        f"this bench (delete their files under results/ to drop them for good)."
    ]


def _group_results(results: Results, g: list[dict]) -> Results:
    """One comparable group's records, outcomes, detail and costs."""
    runs = {r["run"] for r in g}
    sources = sorted({r.get("_source") for r in g}, key=str)
    outcomes = {k: v for f in sources for k, v in results.outcome_files.get(f, {}).items() if k[0] in runs}
    detail = {k: v for f in sources for k, v in results.detail_files.get(f, {}).items() if k[0] in runs}
    return Results(
        g,
        [m for m in results.metas if m.get("run") in runs],
        results.bad,
        results.sources,
        outcomes,
        costs={r: c for r, c in results.costs.items() if r in runs},
        detail=detail,
    )


def _table(results: Results, notes: list, how: How) -> tuple[list[dict], dict, str | None, Table]:
    """The rows in a stable order, their column labels, the baseline resolved ('auto': vanilla when present, else
    the first column; stated in a note) and the aggregated table, its checks' and figures' columns checked."""
    # Stable: each record file keeps its own order (the evaluator's condition order: Table 4's, the ε grid's).
    rows = sorted(results.rows, key=lambda r: (str(r["run"]), str(r["evaluator"])))
    labels = method_labels(rows)
    check_duplicates(rows, labels)
    baseline = how.baseline
    if baseline == "auto":
        auto = (
            "vanilla"
            if any(r["method"] == "vanilla" for r in rows)
            else order_methods(labels, rows, None, how.order)[0]
        )
        why = "vanilla is in the results" if auto == "vanilla" else "no vanilla run in the results, so the first method"
        notes.append(Note(f"Baseline for the differences: {auto} ({why}).", "info"))
        baseline = auto
    baseline = resolve_baseline(rows, labels, baseline)
    table = aggregate(rows, baseline, how.order)
    if how.strict_checks:  # the columns a check names, before the sections, claims and figures (the slow part)
        check_columns(table, how.checks)
    unknown = [c for c in how.plot_columns or [] if c not in table.methods]
    if unknown:
        raise UserError(
            f"plot_columns: '{unknown[0]}' expected one of the report's columns ({', '.join(table.methods)})"
        )
    return rows, labels, baseline, table


def _add_sections(table: Table, ctx: SectionContext, results: Results, notes: list, how: How) -> list:
    """Each evaluator's section: its title, rows and notes; then the caveats and the swept values chosen on
    validation (a default primary family leaves the other swept values exploratory)."""
    sections = [section_for(e, how.given) for e in evaluator_order(ctx.records)]
    titles = {str(s.evaluator): s.title for s in sections}  # a section's own title heads its table
    table.sections = [(k, titles.get(k, t) if k != "comparison" else t, idx) for k, t, idx in table.sections]
    for s in sections:
        notes += call_section(s, "add_rows", ctx, list)
    table.caveats = caveats(table, ctx.records, ctx.labels)  # after the sections' rows: indices are final
    # one check may serve two evaluators
    notes += list(dict.fromkeys(n for s in sections for n in call_section(s, "notes", ctx, list)))
    chosen, sweep_notes = sweep_choices(table, results.costs)
    table.chosen = set(chosen.values())
    notes += [Note(n, "info") for n in sweep_notes]
    if how.family.default:
        how.family.exploratory_columns = frozenset(
            c for c, (base, _) in table.sweeps.items() if base in chosen and c != chosen[base]
        )
    return sections


def _draw(sections: list, ctx: SectionContext, table: Table, results: Results, how: How) -> Renderer:
    """The figures, queued before the claims so that a pool draws them while this process computes the claims.
    Each batch drawn to files (and closed) before the next is made: 20 columns x 7 evaluators held dozens of open
    figures at once. Without plots: text only."""
    draw = Renderer(how.pdf_plots, how.pool)
    if not how.plots:
        return draw
    for s in sections:
        draw.add_section(s, ctx)
    for name, fig in sweep_figures(table, COLORS).items():
        draw.add(name, fig)
    curves = training_curves(table, results.costs)
    if curves is not None:
        draw.add("training-curves", curves)
    return draw


def _late_notes(table: Table, results: Results, prov: dict) -> list[str]:
    """Notes about the records and runs themselves: an old rendering, busy threads, runs that had not converged."""
    notes = []
    if any(V1_RENDERER in v for s in table.context["settings"].values() for v in s.get("renderer", [])):
        notes.append(
            "Deformation rows in these records were rendered by mmix-eval 0.1 (grid_sample's nearest mode, "
            "which keeps the border pixel for sources up to half a pixel outside the image, where the official "
            "rendering is black); re-evaluate the checkpoints for the official rendering."
        )
    notes += thread_notes(prov)
    for m, runs in not_converged(table, results.costs).items():
        notes.append(
            f"{m}: the training loss of {', '.join(runs)} was still falling at the end (its last tenth of "
            f"epochs more than {100 * STILL_FALLING:.0f} % below the tenth before): numbers of a run that had not "
            f"converged (plots/training-curves.png)."
        )
    return notes


def _build_one(results: Results, out, notes: list, how: How) -> dict:
    notes = list(notes) + evaluation_warnings(results.rows) + nonfinite_notes(results.rows)
    rows, labels, baseline, table = _table(results, notes, how)
    ctx = SectionContext(table, rows, labels, baseline, results.detail, how.plot_columns)
    sections = _add_sections(table, ctx, results, notes, how)
    draw = _draw(sections, ctx, table, results, how)
    pair_notes: list[str] = []
    found = (
        comparisons(table, baseline, results.outcomes, results.detail, how.family, pair_notes)
        if baseline is not None and len(table.methods) > 1
        else []
    )
    check_results = run_checks(table, how.checks)
    title = how.title or f"mmix-eval report: {', '.join(table.context['data'])}, {', '.join(table.context['model'])}"
    out = Path(out)
    prov = provenance(results, how.extra_provenance)
    notes += _late_notes(table, results, prov)
    view = build_view(
        ViewInputs(
            table,
            found,
            how.family,
            baseline,
            results.outcomes,
            results.costs,
            prov,
            check_results,
            results.bad,
            title,
            notes + sorted(set(pair_notes)),
            results.detail,
            how.spec,
        )
    )
    _check_writable(out)
    _write(out, view, draw.files(), table, rows, results)
    return {"table": table, "checks": check_results, "bad": results.bad, "out": out, "comparisons": found, "view": view}


def _write(out: Path, view, images: dict, table: Table, rows: list[dict], results: Results) -> None:
    """Every file into a staging folder first, then swapped in as one set (reportset.py)."""
    stage = new_stage(out)
    try:
        atomic_write_text(stage / "report.html", render_html(view, images))
        atomic_write_text(stage / "report.md", render_markdown(view))
        atomic_write_text(stage / "summary.md", render_summary(view))
        atomic_write_text(stage / "claims.md", render_claims(view))
        atomic_write_text(stage / "report.tex", render_latex(view))
        write_csv_table(table, stage / "table.csv")
        write_sweep_csv(table, stage / "sweep.csv")
        write_records(rows, stage / "records")
        if results.outcomes or results.detail:
            write_many(stage / "outcomes.npz", results.outcomes, used_detail(table, results.detail))
        if results.costs:
            atomic_write_text(stage / "cost.json", json.dumps(results.costs, indent=1, sort_keys=True) + "\n")
        for name, data in images.items():
            atomic_write_bytes(stage / "plots" / name, data)
    except OSError as e:
        discard(stage)
        raise staging_error(out, e) from None
    except BaseException:
        discard(stage)
        raise
    swap_in(stage, out, drop=("sweep.csv",))  # a report rebuilt without a sweep keeps no stale one


def _check_writable(out: Path) -> None:
    """An output folder that cannot be written is one line, before the first file (nothing half-written)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".mmix-eval-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ParamError(
            "out", f"expected a folder the report can be written to, got {type(e).__name__}: {e.strerror or e}", out
        ) from None
