"""The report's view model: everything a renderer shows, computed once (cell texts, bold and daggers,
generated sentences, differences, sweeps, cost), so HTML, Markdown and LaTeX each only lay it out.
Imports no torch."""

from __future__ import annotations

import json
import statistics

from mmix_eval.evaluate.boot import BOOT_RESAMPLES
from mmix_eval.evaluate.records import scaled_condition
from mmix_eval.report.calibration_verdicts import calibration_verdicts
from mmix_eval.report.compare import ACC_GAP, ALPHA, Claim, accuracy_gated, best_holds, claims, is_ensemble, reference
from mmix_eval.report.labels import quote_label
from mmix_eval.report.paper import published
from mmix_eval.report.stats import t_quantile
from mmix_eval.report.sweep import cell, key_of, sweep_views
from mmix_eval.report.table import Table, signed_text as _num

NA = "n/a"


def cell_text(table: Table, i: int, m: str) -> str:
    c = table.cells.get((i, m))
    if c is None:
        return NA
    if c.nonfinite:
        return c.na_text
    mean = table.fmt(i, c.mean)
    return f"{mean} ± {table.fmt(i, c.std)} (n={c.n})" if c.std is not None else f"{mean} (n={c.n})"


def diff_rows(table: Table) -> list[int]:
    """Rows worth a paired difference: scores, each (evaluator, condition, metric) once."""
    seen, out = set(), []
    for i, r in enumerate(table.rows):
        key = (r.evaluator, r.condition, r.metric, r.calibrator)
        if r.direction is not None and key not in seen:
            seen.add(key)
            out.append(i)
    return out


def diff_text(diffs: dict, table: Table, i: int, m: str) -> str:
    d = diffs.get((i, m))
    if d is None:
        return NA
    mean, half, n = d
    return f"{'+' if mean >= 0 else ''}{table.fmt(i, mean)} ± {table.fmt(i, half) if half is not None else NA} (n={n})"


def image_text(image_diffs: dict, table: Table, i: int, m: str) -> str:
    d = image_diffs.get((i, m))
    if d is None:
        return NA
    diff, lo, hi, p, n_images, pairs, test = d
    f = lambda v: table.fmt(i, v)
    shown = f"p = {p:.3g}" if p is None or p > 0 else "p < 1e-300"  # a z past 37 underflows to 0
    interval = f"[{f(lo)}, {f(hi)}], {'McNemar' if test == 'McNemar' else 'bootstrap z-test'} {shown}" if p is not None else "no spread: no interval"
    return (f"{'+' if diff >= 0 else ''}{f(diff)} {interval} "
            f"({n_images} images × {pairs} seed pair{'s' if pairs != 1 else ''})")


DIFF_LEGEND = ("Over seeds: mean of the per-seed differences ± half-width of the two-sided 95 % t interval (n seed "
               "pairs; n/a with one pair; pairs share the seed and the evaluated images). Over images: the accuracy "
               "difference with a 95 % paired bootstrap interval over test images (10,000 resamples; each image "
               "brings all its seed pairs) and McNemar's exact test on the discordant images summed over seed pairs; "
               "computed from the per-image outcomes, so one seed per method still gets an interval. NLL, Brier and ECE "
               f"over images: the paired bootstrap over the same {BOOT_RESAMPLES} resamples of the test images for every "
               "run (each score, ECE included, recomputed on each resample and stored with the evaluation), a normal "
               "95 % interval and z-test with the replicates' standard deviation as the standard error. The over-images "
               "interval holds the trained networks fixed (test-image noise only); only the over-seeds interval "
               "covers how much another training seed would move the difference.")


def paper_values(table: Table, i: int) -> dict:
    """Published number per method column, for rows whose setting matches the paper's."""
    row, out = table.rows[i], {}
    if len(table.context["data"]) != 1 or len(table.context["model"]) != 1 or row.calibrator != "none":
        return out  # the paper's numbers are of the models' own softmax
    if row.evaluator not in (None, "deformations", "fgsm") or (
            row.evaluator == "fgsm" and row.settings.get("attack") not in ("fgsm", "fgsm_official")):
        return out
    for m in table.methods:
        method, settings = table.info[m]
        alpha = settings.get("alpha", {"input_mixup": 1.0, "manifold_mixup": 2.0}.get(method))
        v = published(table.context["data"][0], table.context["model"][0], method, alpha, row.condition, row.metric)
        if v is not None:
            out[m] = v
    return out


def header_text(table: Table) -> str:
    c = table.context
    losses = {str(settings.get("loss")) for _, settings in table.info.values() if settings.get("loss")}
    loss = f"; loss: {losses.pop()}" if len(losses) == 1 else ""  # several: the column labels name each
    parts = [f"Data: {', '.join(c['data'])}; model: {', '.join(c['model'])}{loss}; test images: "
             f"{', '.join(map(str, c['n_images']))}; evaluation seed {', '.join(map(str, c['eval_seed'])) or NA}."]
    for e, settings in c["settings"].items():
        shown = "; ".join(f"{k} {', '.join(v)}" for k, v in sorted(settings.items()))
        if shown:
            parts.append(f"{e}: {shown}.")
    return " ".join(parts)


LEGEND = ("Cells: mean ± sample standard deviation over training seeds (n seeds). Bold: the best mean in its row, "
          "by the direction each metric declares (higher accuracy, lower NLL / ECE / MCE / Brier; none for values "
          "that are not scores). Relative accuracy: accuracy under the shift as a percentage of the same model's "
          "clean accuracy. Values are final-epoch checkpoints.")


PAPER_LEGEND = (" Italic grey paper columns: the published number, shown only where data set and architecture are the "
                "paper's. Table 7 (FGSM) does not state ε: it is shown beside the row of the reading that was run, "
                "8/255 in pixels or the official code's FGSM at ε = 0.03 normalised, and only there.")


SWEEP_LEGEND = ("One row per metric and method, one column per swept value: mean ± std over training seeds (n). "
                "Bold: the best value of the row, by the metric's direction. Methods that do not take the key, "
                "trained once, are a reference in the table below it. Italic grey rows: the paper's Table 5, shown only where the "
                "setting is the paper's (CIFAR-10/100, PreActResNet18, manifold mixup α=2, clean accuracy).")


def provenance_summary(table: Table, prov: dict) -> list[tuple[str, str]]:
    """The few lines a reader checks first (data, model, budget, seeds, versions, commit); the full record
    stays below them, collapsed."""
    runs = prov.get("runs") or {}
    train = [r["training"] for r in runs.values() if isinstance(r.get("training"), dict)]
    evals = [e for r in runs.values() for e in (r.get("evaluations") or {}).values() if isinstance(e, dict)]

    def distinct(values) -> str:
        vals = sorted({json.dumps(v, sort_keys=True) if not isinstance(v, str) else v for v in values if v is not None})
        return ", ".join(vals) if vals else NA

    configs = [t.get("config") or {} for t in train]
    sizes = [t.get("data_sizes") or {} for t in train]
    seeds = sorted({s for per in table.runs.values() for s in per}, key=str)
    versions = [t.get("versions") or {} for t in train] + [e.get("versions") or {} for e in evals]
    out = [("data", f"{', '.join(table.context['data'])}; {distinct(z.get('train_size') for z in sizes)} training images, "
                    f"{', '.join(map(str, table.context['n_images'])) or NA} evaluated"),
           ("model", ", ".join(table.context["model"])),
           ("budget", f"{distinct((c.get('train') or {}).get('epochs') for c in configs)} epochs, batch "
                      f"{distinct((c.get('train') or {}).get('batch_size') for c in configs)}, schedule "
                      f"{distinct((c.get('train') or {}).get('schedule') for c in configs)}" if configs else NA),
           ("seeds", f"{', '.join(map(str, seeds))} ({len(table.runs)} methods, {sum(map(len, table.runs.values()))} runs)"),
           ("versions", "; ".join(f"{k} {distinct(v.get(k) for v in versions)}" for k in ("mmix-eval", "torch", "python")
                                  if any(v.get(k) for v in versions)) or NA),
           ("git commit", distinct([t.get("git_commit") for t in train] + [e.get("git_commit") for e in evals]))]
    return out


def seed_note(table: Table, image_diffs: dict) -> str | None:
    """With 2 or 3 training seeds a t interval over seeds is wide; say so in words beside the tables."""
    counts = [len(v) for v in table.runs.values()]
    if not counts or max(counts) > 3:
        return None
    n = max(counts)
    text = (f"Only {n} training seed{'s' if n != 1 else ''} per method: " +
            ("a standard deviation and an interval over seeds need at least 2; " if n == 1 else
             f"the 95 % t interval over seeds uses t with {n - 1} degree{'s' if n > 2 else ''} of freedom "
             f"({t_quantile(n - 1):.3g} × the standard error), so it is wide and a difference can be real "
             f"and still not exclude 0; "))
    text += ("the per-image intervals and McNemar tests below hold the trained networks fixed and are narrower."
             if image_diffs else "more seeds narrow it.")
    return text


def short_text(table: Table, i: int, m: str) -> str:
    """A main-table cell: mean ± std, n stated once in the caption."""
    c = table.cells.get((i, m))
    if c is None:
        return NA
    if c.nonfinite:
        return c.na_text
    return f"{table.fmt(i, c.mean)} ± {table.fmt(i, c.std)}" if c.std is not None else table.fmt(i, c.mean)


def main_rows(table: Table) -> list[int]:
    """The comparison's rows, each clean calibration score (NLL, ECE, ...) followed by the same score after
    post-hoc calibration (temperature scaling) where the records have it: a calibration claim is read from
    both side by side."""
    idx = next((idx for key, _, idx in table.sections if key == "comparison"), [])
    out = []
    for i in idx:
        if i in out:
            continue
        out.append(i)
        r = table.rows[i]
        if r.condition == "clean" and r.calibrator == "none" and r.direction is not None and r.metric != "acc":
            after = [k for k in idx if table.rows[k].condition == "clean" and table.rows[k].metric == r.metric
                     and table.rows[k].calibrator != "none"]
            if not after:  # records without calibrated shift rows: the calibration evaluator's scaled condition
                after = [k for k, c in enumerate(table.rows) if c.calibrator != "none"
                         and c.condition == scaled_condition(c.calibrator) and c.metric == r.metric
                         and c.section != "comparison"][:1]
            out += [k for k in after if k not in out]
    return out


def main_table(table: Table, outcomes: dict, baseline: str | None, image_diffs: dict | None = None,
               detail: dict | None = None) -> dict | None:
    """One row per headline condition (the comparison), one column per method: mean ± std, bold only where
    the paired interval against the runner-up excludes 0, a dagger where the difference against the
    baseline holds after Holm correction across the table's comparisons."""
    idx = main_rows(table)
    if not idx:
        return None
    found = claims(table, idx, outcomes, baseline, image_diffs, detail) if baseline in table.methods else []
    holds = {(c.row, c.method) for c in found if c.holds}
    rows, gated_any = [], False
    for i in idx:
        best = best_holds(table, i, outcomes, detail) if table.rows[i].direction else set()
        gated = table.best(i) & accuracy_gated(table, i)  # the best score of a column far below in accuracy
        gated_any = gated_any or bool(gated)
        rows.append({"label": table.rows[i].label, "direction": table.rows[i].direction,
                     "cells": [{"text": short_text(table, i, m) + (" ‡" if m in gated else ""), "best": m in best,
                                "dagger": (i, m) in holds} for m in table.methods]})
    ns = sorted({table.cells[i, m].n for i in idx for m in table.methods if (i, m) in table.cells})
    n_text = "no cells" if not ns else f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]}"
    tests = sorted({c.test for c in found})
    replicates = " and for NLL, Brier and ECE with stored bootstrap replicates" if any(
        v[1] is not None for v in (detail or {}).values()) else ""
    caption = (f"Mean ± sample std over training seeds ({n_text} per cell). Bold: the best in its row by the metric's "
               f"direction, only where its paired 95 % interval against the runner-up excludes 0 (per-image bootstrap "
               f"for accuracy with per-image outcomes{replicates}, else t over seeds).")
    if gated_any:
        caption += (f" ‡: the best value of its row, not bolded: that column's accuracy under the same condition is "
                    f"more than {ACC_GAP:g} points below the best column's (a weak classifier can be well calibrated).")
    if found:
        against = f"{baseline} (an ensemble: from {baseline}'s ensemble)" if any(c.against != baseline for c in found) else baseline
        caption += (f" †: differs from {against} after Holm correction across the table's {len(found)} comparisons at "
                    f"α = {ALPHA:g} ({' and '.join(TEST_TEXT[t] for t in tests)}).")
    return {"columns": table.methods, "rows": rows, "caption": caption, "claims": found}


TEST_TEXT = {"McNemar": "per-image paired: McNemar's exact test, bootstrap interval over images",
             "bootstrap": "NLL, Brier, ECE paired over images: bootstrap z-test and normal interval",
             "paired t": "over seeds: paired t-test, t interval"}


def _p(p: float | None) -> str:
    if p is None:
        return "no test"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def claim_sentence(table: Table, c: Claim, baseline: str) -> str:
    """'manifold_mixup: +6.20 points under Zoom in (60 % rescale) against vanilla (per-image 95 % CI [4.10,
    8.30], McNemar p < 0.001, Holm-adjusted p = 0.002: holds; over 3 seeds +6.20 ± 3.10, the interval
    includes 0).'"""
    row = table.rows[c.row]
    condition, _, metric = row.label.rpartition(": ")
    unit = " points" if row.metric == "acc" else ""
    what = f"{_num(table, c.row, c.diff)}{unit}" if row.metric == "acc" else f"{metric} {_num(table, c.row, c.diff)}"
    if c.test == "McNemar":
        kind = f"per-image 95 % CI [{_num(table, c.row, c.low, False)}, {_num(table, c.row, c.high, False)}], McNemar"
    elif c.test == "bootstrap":
        kind = (f"paired bootstrap over images 95 % CI [{_num(table, c.row, c.low, False)}, "
                f"{_num(table, c.row, c.high, False)}], z-test")
    elif c.low is not None:
        kind = f"over seeds 95 % CI [{_num(table, c.row, c.low, False)}, {_num(table, c.row, c.high, False)}], paired t-test"
    else:
        kind = "over seeds, one pair: no interval, no test"
    test = f"{kind} {_p(c.p)}" if c.p is not None else kind
    if c.p_holm is None:
        verdict = "untested"
    else:
        verdict = (f"Holm-adjusted {_p(c.p_holm)}: " + (f"holds ({'better' if c.better else 'worse'})" if c.holds
                                                          else "does not hold"))
    text = f"{c.method}: {what} under {condition or row.label} against {c.against or baseline} ({test}, {verdict}"
    if c.test in ("McNemar", "bootstrap") and c.seeds is not None:
        mean, half, n = c.seeds
        if half is None:
            text += f"; over {n} seed: {_num(table, c.row, mean)}, no interval"
        else:
            inc = "includes 0" if mean - half <= 0 <= mean + half else "excludes 0"
            text += f"; over {n} seeds {_num(table, c.row, mean)} ± {table.fmt(c.row, half)}, the interval {inc}"
    return text + ")."


def verdicts(table: Table, main: dict | None, baseline: str | None) -> dict:
    """What holds, in words: per condition, one sentence per method (``by_condition``, for summary.md); per
    method, the sentences that hold and the conditions where nothing holds (``by_method``, the report's top)."""
    if not main or not main["claims"]:
        return {"by_condition": [], "by_method": [], "short": [], "count": 0}
    by_condition, by_method = {}, {}
    for c in main["claims"]:
        sentence = claim_sentence(table, c, baseline)
        row = table.rows[c.row]
        by_condition.setdefault(row.label, []).append(sentence)
        slot = by_method.setdefault(c.method, {"method": c.method, "holds": [], "not": [], "better": [], "worse": [],
                                               "against": c.against or baseline})
        (slot["holds"] if c.holds else slot["not"]).append(sentence if c.holds else row.label)
        if c.holds:
            name = row.label.rpartition(": ")[0] or row.label if row.metric == "acc" else row.label  # accuracy: points
            slot["better" if c.better else "worse"].append(f"{name} {_num(table, c.row, c.diff)}")
    short = []
    for m in by_method.values():
        total = len(m["holds"]) + len(m["not"])
        parts = [f"better than {m['against']} under {len(m['better'])} of {total}: " + "; ".join(m["better"]) if m["better"]
                 else f"better than {m['against']} under none of {total}",
                 f"worse under {len(m['worse'])}: " + "; ".join(m["worse"]) if m["worse"] else "worse under none",
                 f"no difference holds under the other {len(m['not'])}" if m["not"] else ""]
        short.append(f"{m['method']}: " + "; ".join(p for p in parts if p) + ".")
    return {"by_condition": list(by_condition.items()), "by_method": list(by_method.values()), "short": short,
            "count": len(main["claims"])}


def cost_table(table: Table, costs: dict) -> dict | None:
    """Training cost per column (mean over its seeds): forward passes per step, images/s, wall time."""
    keys = [("forward_passes_per_step", "forward passes per step", "{:g}"), ("train_images_per_s", "training images/s", "{:,.0f}"),
            ("train_wall_time_s", "training wall time (s)", "{:,.1f}")]
    rows, any_value = [], False
    for m in table.methods:
        vals = []
        for k, _, f in keys:
            got = [costs[r][k] for r in table.runs.get(m, {}).values() if (costs.get(r) or {}).get(k) is not None]
            vals.append(f.format(statistics.fmean(got)) if got else NA)
            any_value |= bool(got)
        rows.append({"label": m, "cells": vals})
    if not any_value:
        return None
    return {"head": [h for _, h, _ in keys], "rows": rows,
            "caption": "Training cost per method (mean over its seeds, from each run's training metadata; n/a where a run "
                       "predates the record). Images/s counts training images through the method's steps, so a method "
                       "with two forward passes per step shows it twice: in the passes and in the rate."
                       + (" A deep ensemble trains nothing of its own: n/a, its members' cost is in their method's row."
                          if any(is_ensemble(table, m) for m in table.methods) else "")}


def differences(table: Table, diffs: dict | None, image_diffs: dict, baseline: str | None) -> dict | None:
    """One row per method x condition (readable at ten methods): the over-seeds and over-images differences."""
    if not diffs:
        return None
    rows = []
    for m in [m for m in table.methods if m != reference(table, m, baseline)]:
        for i in diff_rows(table):
            if (i, m) not in diffs and (i, m) not in image_diffs:
                continue
            rows.append({"method": f"{m} − {reference(table, m, baseline)}", "label": table.rows[i].label, "seeds": diff_text(diffs, table, i, m),
                         "images": image_text(image_diffs, table, i, m) if image_diffs else None})
    return {"rows": rows, "images": bool(image_diffs), "legend": DIFF_LEGEND}


def sections(table: Table) -> list[dict]:
    out = []
    for key, title, idx in table.sections:
        paper = {i: paper_values(table, i) for i in idx}
        paper_methods = [m for m in table.methods if any(m in p for p in paper.values())]
        rows = []
        for i in idx:
            best = table.best(i)
            cells = []
            for m in table.methods:
                text = cell_text(table, i, m)
                cells.append({"text": text, "cls": "best" if m in best else ("na" if text == NA else ""), "best": m in best})
            rows.append({"label": table.rows[i].label, "cells": cells,
                         "paper": [table.fmt(i, paper[i].get(m)) for m in paper_methods]})
        out.append({"key": key, "title": title, "rows": rows, "paper_methods": paper_methods})
    return out


def sweeps(table: Table) -> list[dict]:
    """Each swept key as a table (metric, method, one column per swept value), and the methods that do not take
    the key apart, in a table of their own (no empty cells)."""
    out = []
    for view in sweep_views(table):
        head = [view.value_text(v) for v in view.values]
        rows, fixed = [], []
        for i in view.rows:
            row = table.rows[i]
            for s in view.series:
                columns = [s.columns.get(key_of(v)) for v in view.values]
                cs = [cell(table, i, m) for m in columns]
                means = [c[0] for c in cs if c is not None]
                best = None
                if row.direction is not None and len(means) > 1:
                    best = (max if row.direction == "higher" else min)(means)
                cells = [{"text": cell_text(table, i, m) if c is not None else NA,
                          "cls": "best" if c is not None and c[0] == best else ("na" if c is None else "")}
                         for m, c in zip(columns, cs)]
                rows.append({"metric": row.label, "method": s.name, "cells": cells, "paper": False})
                got = view.paper.get((i, s.name))
                if got:
                    rows.append({"metric": row.label, "method": f"paper (Table 5): {s.name}", "paper": True,
                                 "cells": [{"text": table.fmt(i, got[key_of(v)]) if key_of(v) in got else NA, "cls": "paper"}
                                           for v in view.values]})
            for m in view.fixed:
                fixed.append({"metric": row.label, "method": m, "text": cell_text(table, i, m)})
        out.append({"title": f"Sweep over {view.key}", "key": view.key, "head": head, "rows": rows, "fixed": fixed})
    return out


MAX_SKIPPED_SHOWN = 50


def skipped(bad: list) -> dict | None:
    """The files the report could not read, each with its reason (at most ``MAX_SKIPPED_SHOWN`` listed)."""
    if not bad:
        return None
    more = f" ({len(bad) - MAX_SKIPPED_SHOWN} more not listed here; all are printed on stderr)" if len(bad) > MAX_SKIPPED_SHOWN else ""
    return {"text": f"Skipped {len(bad)} unreadable file(s); this report is built from the rest{more}:",
            "shown": [(str(p), str(w)) for p, w in bad[:MAX_SKIPPED_SHOWN]]}


def build_view(table: Table, diffs, image_diffs, baseline, outcomes: dict, costs: dict, prov: dict, checks: list,
               bad: list, title: str, notes: list[str], detail: dict | None = None) -> dict:
    main = main_table(table, outcomes, baseline, image_diffs, detail)
    secs = sections(table)
    has_paper = any(s["paper_methods"] for s in secs)
    return {"title": title, "notes": notes, "header": header_text(table), "seed_note": seed_note(table, image_diffs),
            "legend": LEGEND + (PAPER_LEGEND if has_paper else ""), "methods": table.methods, "baseline": baseline,
            "main": main, "verdicts": verdicts(table, main, baseline),
            "calibration": calibration_verdicts(table, baseline, detail), "cost": cost_table(table, costs),
            "sections": secs, "sweeps": sweeps(table), "sweep_legend": SWEEP_LEGEND,
            "diffs": differences(table, diffs, image_diffs, baseline), "checks": checks, "bad": bad, "skipped": skipped(bad),
            "summary": provenance_summary(table, prov), "baseline_choice": quote_label(baseline) if baseline else None,
            "provenance": json.dumps(prov, indent=2, sort_keys=True, default=str),
            "sources": [f"{e} images: {', '.join(v['source'])}." for e, v in table.context["settings"].items() if v.get("source")]}
