"""The report's view model: everything a renderer shows, computed once (cell texts, bold and daggers,
generated sentences, differences, sweeps, cost), so HTML, Markdown and LaTeX each only lay it out.
Imports no torch."""

from __future__ import annotations

import fnmatch
import json
import math
import statistics
from dataclasses import dataclass

from mmix_eval.evaluate.boot import BOOT_RESAMPLES
from mmix_eval.evaluate.records import scaled_condition
from mmix_eval.report.calibration_verdicts import calibration_verdicts
from mmix_eval.errors import UserError
from mmix_eval.report.claims import ALPHA, POWER, PRIMARY_EVALUATORS, Comparison, Primary, best_holds, lookup
from mmix_eval.report.compare import ACC_GAP, accuracy_gated, is_ensemble
from mmix_eval.report.labels import quote_label
from mmix_eval.report.paper import published
from mmix_eval.report.sections.base import note_level
from mmix_eval.report.stats import t_quantile
from mmix_eval.report.sweep import cell, key_of, sweep_views
from mmix_eval.report.table import Table, signed_text as _num

NA = "n/a"


def caveat_text(table: Table, i: int, m: str) -> str:
    notes = table.caveats.get((i, m))
    return f" [{'; '.join(notes)}]" if notes else ""


def cell_text(table: Table, i: int, m: str) -> str:
    c = table.cells.get((i, m))
    if c is None:
        return NA
    if c.nonfinite:
        return c.na_text
    mean = table.fmt(i, c.mean)
    text = f"{mean} ± {table.fmt(i, c.std)} (n={c.n})" if c.std is not None else f"{mean} (n={c.n})"
    return text + caveat_text(table, i, m)


def interval_text(table: Table, i: int, diff: float, low, high) -> str:
    return f"{_num(table, i, diff)} [{_num(table, i, low)}, {_num(table, i, high)}]"


def _p(p: float | None) -> str:
    if p is None:
        return "no test"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def method_text(table: Table, c: Comparison, adjusted: str) -> str:
    """'+1.20 [+0.31, +2.09], p = 0.012, Holm-adjusted p = 0.04 (5 seed pairs × 1,500 images)'."""
    t = c.method
    if t is None:
        if is_ensemble(table, c.column):
            return "n/a (an ensemble has no training seeds)"
        if c.descriptive:
            return "descriptive (a calibration error: no test)"
        if c.seeds is not None and c.seeds[2] < 2:
            return f"n/a ({c.seeds[2]} seed pair; a method claim needs 2 or more)"
        return "n/a (a difference that is not finite)"
    over = f"{t.pairs} seed pairs × {t.images:,} images" if t.images else f"{t.pairs} seed pairs, no per-image data"
    return (f"{interval_text(table, c.row, t.diff, t.low, t.high)}, {_p(t.p)}, {adjusted}-adjusted {_p(c.p_method)} "
            f"({over})")


def network_text(table: Table, c: Comparison, adjusted: str) -> str:
    d = c.network
    if d is None:
        return NA
    diff, lo, hi, p, n_images, pairs, test = d
    over = f"{n_images:,} images × {pairs} seed pair{'s' if pairs != 1 else ''}"
    if lo is None:
        return f"{_num(table, c.row, diff)}, no spread: no interval ({over})"
    if c.descriptive:
        return f"{interval_text(table, c.row, diff, lo, hi)} ({over}; descriptive)"
    shown = f"p = {p:.3g}" if p > 0 else "p < 1e-300"  # a z past 37 underflows to 0
    return (f"{interval_text(table, c.row, diff, lo, hi)}, {TEST_NAME[test]} {shown}, {adjusted}-adjusted {_p(c.p_network)} "
            f"({over})")


TEST_NAME = {"sign-flip": "sign-flip test", "bootstrap": "bootstrap z-test"}
ADJUSTED = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "BH", "none": "un"}


def diff_legend(primary: Primary) -> str:
    return ("Method claim: the difference of the means over seed pairs, with a 95 % interval and test that take the "
            "training run as the unit and the test images as a sample too (seed pairs and images as crossed random "
            "effects, t with pairs − 1 degrees of freedom; docs/statistics.md); it is about the method, and needs 2 "
            "seed pairs or more. Network claim: the same difference with the trained networks held fixed, over test "
            "images only, an image (not an image × seed pair) as the unit: accuracy by the exact sign-flip test on "
            "each image's summed discordance and a paired bootstrap interval (10,000 resamples); NLL and Brier by the "
            f"paired bootstrap over the same {BOOT_RESAMPLES} resamples of the test images for every run (a z-test and "
            "normal interval). Calibration errors (ECE, MCE, debiased CE, SmoothECE) are descriptive: their interval "
            "covers the difference of the two models' expected finite-sample estimates, each biased by its own "
            "amount, not the difference of their true calibration errors; no test. "
            f"Adjusted p: {ADJUSTED[primary.multiplicity].lower() if primary.multiplicity != 'none' else 'not'} "
            f"adjusted within the family (primary: {primary.describe()}; exploratory: each evaluator's section).")


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


LEGEND = ("Cells: mean ± sample standard deviation over training seeds (n seeds); in brackets, a caveat the cell carries "
          "(a calibrator fitted at its bound in some runs, an AUROC below 0.5). Bold: the best in its row only where the "
          "95 % interval of its difference from the runner-up excludes 0 (as in the main table), "
          "by the direction each metric declares (higher accuracy, lower NLL / Brier; never a calibration error, which "
          "is descriptive; none for values that are not scores). Relative accuracy: accuracy under the shift as a percentage of the same model's "
          "clean accuracy. Values are final-epoch checkpoints.")


PAPER_LEGEND = (" Italic grey paper columns: the published number, shown only where data set and architecture are the "
                "paper's. Table 7 (FGSM) does not state ε: it is shown beside the row of the reading that was run, "
                "8/255 in pixels or the official code's FGSM at ε = 0.03 normalised, and only there.")


SWEEP_LEGEND = ("One row per metric and method, one column per swept value: mean ± std over training seeds (n). "
                "Bold: the best value of the row, only where its 95 % interval against the runner-up value excludes 0 (a "
                "method claim where both have 2 seeds or more). [chosen on validation]: the value with the lowest mean NLL "
                "on the runs' held-out validation split, the one the main claims are about. Methods that do not take the key, "
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


def seed_note(table: Table) -> str | None:
    """With 2 or 3 training seeds a method claim is weak; say so in words beside the tables."""
    counts = [len(v) for v in table.runs.values()]
    if not counts or max(counts) > 3:
        return None
    n = max(counts)
    if n == 1:
        return ("One training seed per method: no method claim can be made (it needs 2 seed pairs or more); every "
                "interval shown is a network claim, about these trained networks only.")
    return (f"Only {n} training seeds per method: a method claim uses t with {n - 1} degree{'s' if n > 2 else ''} of "
            f"freedom ({t_quantile(n - 1):.3g} × its standard error), so few hold, and that is the result. Network "
            f"claims (these {n} trained networks per method, per image) are narrower and say nothing of another seed; "
            f"where one holds and the method claim does not, the differences say how many seeds would give "
            f"{POWER * 100:.0f} % power.")


def short_text(table: Table, i: int, m: str) -> str:
    """A main-table cell: mean ± std, n stated once in the caption."""
    c = table.cells.get((i, m))
    if c is None:
        return NA
    if c.nonfinite:
        return c.na_text
    text = f"{table.fmt(i, c.mean)} ± {table.fmt(i, c.std)}" if c.std is not None else table.fmt(i, c.mean)
    return text + caveat_text(table, i, m)


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
    return (fnmatch.fnmatchcase(r.condition, condition) and fnmatch.fnmatchcase(r.metric, metric)
            and fnmatch.fnmatchcase(r.calibrator, calibrator or "none"))


def main_columns(table: Table, spec: MainSpec | None = None) -> tuple[list[str], list[str]]:
    """(the main table's columns, the deep-ensemble table's). Default: the single models in the main table and the
    ensembles in a table of their own (paired with the baseline's ensemble); with ``spec.columns``, those columns in
    one table."""
    if spec is not None and spec.columns:
        chosen = [m for m in table.methods if any(fnmatch.fnmatchcase(m, p) or (  # a method's name: its single models
            fnmatch.fnmatchcase(str(table.info[m][0]), p) and not is_ensemble(table, m)) for p in spec.columns)]
        if not chosen:
            raise UserError(f"main.columns: {spec.columns} name none of the report's columns ({', '.join(table.methods)})")
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
            raise UserError(f"main.rows: {spec.rows} match none of the report's rows (conditions: "
                            f"{', '.join(dict.fromkeys(r.condition for r in table.rows))})")
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
            after = [k for k in idx if table.rows[k].condition == "clean" and table.rows[k].metric == r.metric
                     and table.rows[k].calibrator != "none"]
            if not after:  # records without calibrated shift rows: the calibration evaluator's scaled condition
                after = [k for k, c in enumerate(table.rows) if c.calibrator != "none"
                         and c.condition == scaled_condition(c.calibrator) and c.metric == r.metric
                         and c.section != "comparison"][:1]
            out += [k for k in after if k not in out]
    return out


def main_table(table: Table, outcomes: dict, baseline: str | None, found: list[Comparison], primary: Primary,
               detail: dict | None = None, spec: MainSpec | None = None, columns: list[str] | None = None) -> dict | None:
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
        gated = table.best(i) & accuracy_gated(table, i) & set(columns)  # the best score of a column far below in accuracy
        gated_any = gated_any or bool(gated)
        cells = []
        for m in columns:
            c = lookup(table, found, i, m)
            mark = (" †" if c.primary else " *") if c is not None and c.holds else ""
            cells.append({"text": short_text(table, i, m) + (" ‡" if m in gated else ""), "best": m in best,
                          "dagger": c is not None and c.primary and c.holds, "mark": mark})
        rows.append({"label": table.rows[i].label, "direction": table.rows[i].direction, "cells": cells})
    ns = sorted({table.cells[i, m].n for i in idx for m in columns if (i, m) in table.cells})
    n_text = "no cells" if not ns else f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]}"
    caption = (f"Mean ± sample std over training seeds ({n_text} per cell). Bold: the best in its row, only where "
               f"the 95 % interval of its difference from the runner-up excludes 0 ("
               + ("a method claim, over seeds and images" if "method" in kinds or not kinds else "")
               + ("; " if len(kinds) == 2 else "")
               + ("a network claim over images where a column has one seed or is an ensemble" if "network" in kinds else "")
               + "); never for a calibration error (ECE and its kin are descriptive).")
    if gated_any:
        caption += (f" ‡: the best value of its row, not bolded: that column's accuracy under the same condition is "
                    f"more than {ACC_GAP:g} points below the best column's (a weak classifier can be well calibrated).")
    prim = [c for c in found if c.primary and c.method is not None]
    if all(is_ensemble(table, m) or m == baseline for m in columns):
        prim = []
        if any(is_ensemble(table, m) for m in columns):
            caption += (" Deep ensembles: each method's seeds as one model, compared with the baseline's ensemble by "
                        "network claims only (an ensemble has no training seeds; the differences give them).")
    if prim:
        pairs = sorted({c.method.pairs for c in prim})
        images = sorted({c.method.images for c in prim if c.method.images})
        caption += (f" †: a method claim against {baseline} holds (the training run as the unit: "
                    f"{'/'.join(map(str, pairs))} seed pairs"
                    + (f", {'/'.join(f'{n:,}' for n in images)} test images" if images else "")
                    + f"; two-way t interval and test; {_family_text(primary, len(prim))}, α = {ALPHA:g}).")
    if any(cell["mark"] == " *" for row in rows for cell in row["cells"]):
        caption += " *: an exploratory method claim holds (corrected within its evaluator's section, not a primary claim)."
    return {"columns": columns, "rows": rows, "caption": caption}


def _family_text(primary: Primary, n: int) -> str:
    how = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg", "none": "no"}[primary.multiplicity]
    what = "default primary family" if primary.default else "primary family named in the report's settings"
    return f"{how} correction across the {n} comparisons of the {what}"


def claim_sentence(table: Table, c: Comparison, primary: Primary) -> str:
    """'manifold_mixup − vanilla, Zoom in (60 % rescale): +6.20 points. Method claim (...): [...], p, adjusted p:
    holds (better). Network claim (these trained networks, per image): [...]: holds. [How many seeds.]'"""
    row = table.rows[c.row]
    condition, _, metric = row.label.rpartition(": ")
    unit = " points" if row.metric == "acc" else ""
    what = f"{_num(table, c.row, c.diff)}{unit}" if row.metric == "acc" else f"{metric} {_num(table, c.row, c.diff)}"
    adj = ADJUSTED[primary.multiplicity]
    text = f"{c.column} − {c.against}, {condition or row.label}: {what}."
    if c.method is not None:
        verdict = f"holds ({'better' if c.better else 'worse'})" if c.holds else "does not hold"
        text += (f" Method claim ({'primary' if c.primary else c.family}; the training run as the unit): "
                 f"{method_text(table, c, adj)}: {verdict}.")
    else:
        text += f" Method claim: {method_text(table, c, adj)}."
    if c.network is not None and c.network[1] is not None:
        verdict = "" if c.descriptive else (": holds" if c.network_holds else ": does not hold")
        text += f" Network claim (these trained networks, per image): {network_text(table, c, adj)}{verdict}."
    if c.power_checked:
        text += (f" {POWER * 100:.0f} % power for the method claim at this effect and seed spread, at the family's "
                 f"level α = {c.power_alpha:.2g}, needs "
                 + (f"{c.seeds_needed} seeds per method" if c.seeds_needed else "more than 1,000 seeds per method (the "
                    "test images' own variance dominates: more test images)") + " (noncentral t; docs/statistics.md).")
    return text


def verdicts(table: Table, found: list[Comparison], baseline: str | None, primary: Primary) -> dict:
    """What holds, in words, over the primary comparisons: per condition, one sentence per column
    (``by_condition``, for summary.md); per column, the method claims that hold, the network claims beside them,
    and the conditions where nothing holds (``by_method``, the report's top)."""
    prim = [c for c in found if c.primary or (is_ensemble(table, c.column) and _primary_row(table, found, c))]
    if not prim:
        return {"by_condition": [], "by_method": [], "short": [], "count": 0, "family": ""}
    by_condition, by_method = {}, {}
    for c in prim:
        sentence = claim_sentence(table, c, primary)
        row = table.rows[c.row]
        by_condition.setdefault(row.label, []).append(sentence)
        slot = by_method.setdefault(c.column, {"method": c.column, "holds": [], "not": [], "better": [], "worse": [],
                                               "net_better": [], "net_worse": [], "more_seeds": [], "against": c.against,
                                               "ensemble": is_ensemble(table, c.column), "pairs": set(), "images": set()})
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
    short = []

    def listed(items: list[str]) -> str:  # at most 5 named, the rest counted (every one in claims.md)
        return "; ".join(items[:5]) + (f"; and {len(items) - 5} more" if len(items) > 5 else "")

    for m in by_method.values():
        total = len(m["holds"]) + len(m["not"])
        if m["ensemble"]:
            parts = [f"network claims only (a deep ensemble has no training seeds): better than {m['against']} under "
                     f"{len(m['net_better'])} of {total}" + (": " + listed(m["net_better"]) if m["net_better"] else ""),
                     f"worse under {len(m['net_worse'])}" + (": " + listed(m["net_worse"]) if m["net_worse"] else "")]
            short.append(f"{m['method']}: " + "; ".join(parts) + ".")
            continue
        basis = (f"method claims, {'/'.join(map(str, sorted(m['pairs'])))} seed pairs"
                 + (f" × {'/'.join(f'{n:,}' for n in sorted(m['images']))} test images" if m["images"] else ""))
        parts = [f"better than {m['against']} under {len(m['better'])} of {total}: " + listed(m["better"]) if m["better"]
                 else f"better than {m['against']} under none of {total}",
                 f"worse under {len(m['worse'])}: " + listed(m["worse"]) if m["worse"] else "worse under none",
                 f"no difference holds under the other {len(m['not'])}" if m["not"] else ""]
        text = f"{m['method']} ({basis}): " + "; ".join(p for p in parts if p) + "."
        if m["net_better"] or m["net_worse"]:
            text += (f" Network claims (these trained networks, per image): better under {len(m['net_better'])}, worse "
                     f"under {len(m['net_worse'])}.")
        if m["more_seeds"]:
            needed = [n for _, n in m["more_seeds"] if n]
            shown = (f"{min(needed)}" if min(needed) == max(needed) else f"{min(needed)} to {max(needed)}") if needed else ""
            over = len(needed) < len(m["more_seeds"])
            text += (f" Where only the network claim holds ({len(m['more_seeds'])}), {POWER * 100:.0f} % power for the "
                     f"method claim at the observed effect and the family's level would need "
                     + (f"{shown} seeds per method" if needed else "") + (" (more than 1,000 for some)" if over and needed
                                                                          else "more than 1,000 seeds" if over else "")
                     + " (each condition's number in claims.md).")
        short.append(text)
    n_primary = sum(1 for c in prim if c.primary and c.method is not None)
    return {"by_condition": list(by_condition.items()), "by_method": list(by_method.values()), "short": short,
            "count": n_primary, "family": _family_text(primary, n_primary)}


def _primary_row(table: Table, found: list[Comparison], c: Comparison) -> bool:
    """An ensemble's comparison is shown with the primary ones where its row is a primary row of a single model."""
    return any(o.primary and o.row == c.row for o in found)


STILL_FALLING = 0.10  # a run whose last tenth of epochs has a mean training loss this much below the tenth before


def still_falling(curve: list[float] | None) -> float | None:
    """The relative fall of the mean training loss from the second-to-last tenth of the epochs to the last tenth (at
    least 3 epochs each: one epoch's noise is not a trend), when it is more than ``STILL_FALLING``: the run had not
    converged. None otherwise, or without a curve of 6 epochs or more."""
    k = max(3, len(curve or []) // 10)
    if not curve or len(curve) < 2 * k:
        return None
    start, end = statistics.fmean(curve[-2 * k:-k]), statistics.fmean(curve[-k:])
    if not (math.isfinite(start) and math.isfinite(end)) or start <= 0:
        return None
    fall = (start - end) / start
    return fall if fall > STILL_FALLING else None


def not_converged(table: Table, costs: dict) -> dict[str, list[str]]:
    """column -> its runs whose training loss was still falling at the end (``still_falling``)."""
    out: dict[str, list[str]] = {}
    for m in table.methods:
        for seed, run in sorted(table.runs.get(m, {}).items(), key=lambda kv: str(kv[0])):
            fall = still_falling((costs.get(run) or {}).get("loss_curve"))
            if fall is not None:
                out.setdefault(m, []).append(f"{run} (−{100 * fall:.0f} %)")
    return out


def cost_table(table: Table, costs: dict) -> dict | None:
    """Training cost per column: forward passes per step, images/s as the median and range over its seeds, wall
    time, the final training loss and whether it had stopped falling, and the CPU threads and other runnable tasks
    each run saw when it started (a busy machine slows a run: images/s without them cannot be compared)."""
    def over_seeds(m, k):
        return [costs[r][k] for r in table.runs.get(m, {}).values() if (costs.get(r) or {}).get(k) is not None]

    falling = not_converged(table, costs)
    rows, any_value = [], False
    for m in table.methods:
        passes, rate, wall = over_seeds(m, "forward_passes_per_step"), over_seeds(m, "train_images_per_s"), over_seeds(m, "train_wall_time_s")
        loss, threads, busy = over_seeds(m, "final_train_loss"), over_seeds(m, "train_threads"), over_seeds(m, "busy_tasks_at_start")
        any_value |= bool(passes or rate or wall)
        cells = [f"{statistics.fmean(passes):g}" if passes else NA,
                 (f"{statistics.median(rate):,.0f}" + (f" ({min(rate):,.0f}–{max(rate):,.0f})" if len(rate) > 1 else ""))
                 if rate else NA,
                 f"{statistics.fmean(wall):,.1f}" if wall else NA,
                 (f"{statistics.fmean(loss):.4g}" + (f" [{len(falling[m])} of {len(table.runs.get(m, {}))} still falling]"
                                                    if m in falling else "")) if loss else NA,
                 ", ".join(f"{x:g}" for x in sorted(set(threads))) if threads else NA,
                 ", ".join(f"{x:g}" for x in sorted(set(busy))) if busy else NA]
        rows.append({"label": m, "cells": cells})
    if not any_value:
        return None
    head = ["forward passes per step", "training images/s, median (range)", "training wall time (s)",
            "final training loss", "CPU threads", "other runnable tasks at start"]
    return {"head": head, "rows": rows,
            "caption": "Training cost per method (over its seeds, from each run's training metadata; n/a where a run "
                       "predates the record). Images/s counts training images through the method's steps, so a method "
                       "with two forward passes per step shows it twice: in the passes and in the rate; it depends on "
                       "the threads and on what else ran (the last two columns). Final training loss: the mean over "
                       f"seeds of the last epoch's; 'still falling': the mean over its last tenth of epochs (3 at least) is more "
                       f"than {100 * STILL_FALLING:.0f} % below the tenth before (the training curves are in plots/training-curves.png)."
                       + (" A deep ensemble trains nothing of its own: n/a, its members' cost is in their method's row."
                          if any(is_ensemble(table, m) for m in table.methods) else "")}


def differences(table: Table, found: list[Comparison], primary: Primary) -> dict | None:
    """One row per column x condition (readable at ten methods): the method claim and the network claim."""
    if not found:
        return None
    adj = ADJUSTED[primary.multiplicity]
    rows = [{"method": f"{c.column} − {c.against}", "label": table.rows[c.row].label,
             "family": "primary" if c.primary else c.family.removeprefix("exploratory: ") + " (exploratory)",
             "seeds": method_text(table, c, adj) + (" holds" if c.holds else ""),
             "images": network_text(table, c, adj) + (" holds" if c.network_holds and not c.descriptive else "")}
            for c in found]
    return {"rows": rows, "images": any(c.network is not None for c in found), "legend": diff_legend(primary)}


def sections(table: Table, outcomes: dict | None = None, detail: dict | None = None) -> list[dict]:
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
                cells.append({"text": text, "cls": "best" if m in best else ("na" if text == NA else ""), "best": m in best})
            rows.append({"label": table.rows[i].label, "cells": cells,
                         "paper": [table.fmt(i, paper[i].get(m)) for m in paper_methods]})
        out.append({"key": key, "title": title, "rows": rows, "paper_methods": paper_methods})
    return out


def sweeps(table: Table, outcomes: dict | None = None, detail: dict | None = None) -> list[dict]:
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
                cells = [{"text": (cell_text(table, i, m) + (" [chosen on validation]" if m in table.chosen else ""))
                          if c is not None else NA,
                          "cls": "best" if c is not None and m in best else ("na" if c is None else "")}
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


def build_view(table: Table, found: list[Comparison], primary: Primary, baseline, outcomes: dict, costs: dict, prov: dict,
               checks: list, bad: list, title: str, notes: list[str], detail: dict | None = None,
               spec: MainSpec | None = None) -> dict:
    single, ensembles = main_columns(table, spec)
    main = main_table(table, outcomes, baseline, found, primary, detail, spec, single)
    if ensembles and main is not None:
        ens = main_table(table, outcomes, baseline, found, primary, detail, spec, ensembles)
        main["ensembles"] = ens
    secs = sections(table, outcomes, detail)
    has_paper = any(s["paper_methods"] for s in secs)
    shown = [{"text": str(n), "cls": "note" if note_level(n) == "info" else "fail"} for n in notes]
    return {"title": title, "notes": shown, "header": header_text(table), "seed_note": seed_note(table),
            "legend": LEGEND + (PAPER_LEGEND if has_paper else ""), "methods": table.methods, "baseline": baseline,
            "main": main, "verdicts": verdicts(table, found, baseline, primary),
            "calibration": calibration_verdicts(table, baseline, found, detail, primary), "cost": cost_table(table, costs),
            "sections": secs, "sweeps": sweeps(table, outcomes, detail), "sweep_legend": SWEEP_LEGEND,
            "diffs": differences(table, found, primary), "checks": checks, "bad": bad, "skipped": skipped(bad),
            "summary": provenance_summary(table, prov), "baseline_choice": quote_label(baseline) if baseline else None,
            "provenance": json.dumps(prov, indent=2, sort_keys=True, default=str),
            "sources": [f"{e} images: {', '.join(v['source'])}." for e, v in table.context["settings"].items() if v.get("source")]}
