"""The report's texts, computed once: cell texts, claim sentences, the header and legends, the provenance summary.
Imports no torch."""

from __future__ import annotations

import json

from mmix_eval.evaluate.boot import BOOT_RESAMPLES
from mmix_eval.report.claims import POWER, Comparison, Primary
from mmix_eval.report.compare import is_ensemble
from mmix_eval.report.paper import published
from mmix_eval.report.stats import t_quantile
from mmix_eval.report.table import Table
from mmix_eval.report.table import signed_text as _num

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
    return (
        f"{interval_text(table, c.row, t.diff, t.low, t.high)}, {_p(t.p)}, {adjusted}-adjusted {_p(c.p_method)} "
        f"({over})"
    )


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
    return (
        f"{interval_text(table, c.row, diff, lo, hi)}, {TEST_NAME[test]} {shown}, {adjusted}-adjusted {_p(c.p_network)} "
        f"({over})"
    )


TEST_NAME = {"sign-flip": "sign-flip test", "bootstrap": "bootstrap z-test"}


ADJUSTED = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "BH", "none": "un"}


def diff_legend(primary: Primary) -> str:
    return (
        "Method claim: the difference of the means over seed pairs, with a 95 % interval and test that take the "
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
        f"adjusted within the family (primary: {primary.describe()}; exploratory: each evaluator's section)."
    )


def paper_values(table: Table, i: int) -> dict:
    """Published number per method column, for rows whose setting matches the paper's."""
    row, out = table.rows[i], {}
    if len(table.context["data"]) != 1 or len(table.context["model"]) != 1 or row.calibrator != "none":
        return out  # the paper's numbers are of the models' own softmax
    if row.evaluator not in (None, "deformations", "fgsm") or (
        row.evaluator == "fgsm" and row.settings.get("attack") not in ("fgsm", "fgsm_official")
    ):
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
    parts = [
        f"Data: {', '.join(c['data'])}; model: {', '.join(c['model'])}{loss}; test images: "
        f"{', '.join(map(str, c['n_images']))}; evaluation seed {', '.join(map(str, c['eval_seed'])) or NA}."
    ]
    for e, settings in c["settings"].items():
        shown = "; ".join(f"{k} {', '.join(v)}" for k, v in sorted(settings.items()))
        if shown:
            parts.append(f"{e}: {shown}.")
    return " ".join(parts)


LEGEND = (
    "Cells: mean ± sample standard deviation over training seeds (n seeds); in brackets, a caveat the cell carries "
    "(a calibrator fitted at its bound in some runs, an AUROC below 0.5). Bold: the best in its row only where the "
    "95 % interval of its difference from the runner-up excludes 0 (as in the main table), "
    "by the direction each metric declares (higher accuracy, lower NLL / Brier; never a calibration error, which "
    "is descriptive; none for values that are not scores). Relative accuracy: accuracy under the shift as a percentage of the same model's "
    "clean accuracy. Values are final-epoch checkpoints."
)


PAPER_LEGEND = (
    " Italic grey paper columns: the published number, shown only where data set and architecture are the "
    "paper's. Table 7 (FGSM) does not state ε: it is shown beside the row of the reading that was run, "
    "8/255 in pixels or the official code's FGSM at ε = 0.03 normalised, and only there."
)


SWEEP_LEGEND = (
    "One row per metric and method, one column per swept value: mean ± std over training seeds (n). "
    "Bold: the best value of the row, only where its 95 % interval against the runner-up value excludes 0 (a "
    "method claim where both have 2 seeds or more). [chosen on validation]: the value with the lowest mean NLL "
    "on the runs' held-out validation split, the one the main claims are about. Methods that do not take the key, "
    "trained once, are a reference in the table below it. Italic grey rows: the paper's Table 5, shown only where the "
    "setting is the paper's (CIFAR-10/100, PreActResNet18, manifold mixup α=2, clean accuracy)."
)


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
    out = [
        (
            "data",
            f"{', '.join(table.context['data'])}; {distinct(z.get('train_size') for z in sizes)} training images, "
            f"{', '.join(map(str, table.context['n_images'])) or NA} evaluated",
        ),
        ("model", ", ".join(table.context["model"])),
        (
            "budget",
            f"{distinct((c.get('train') or {}).get('epochs') for c in configs)} epochs, batch "
            f"{distinct((c.get('train') or {}).get('batch_size') for c in configs)}, schedule "
            f"{distinct((c.get('train') or {}).get('schedule') for c in configs)}"
            if configs
            else NA,
        ),
        (
            "seeds",
            f"{', '.join(map(str, seeds))} ({len(table.runs)} methods, {sum(map(len, table.runs.values()))} runs)",
        ),
        (
            "versions",
            "; ".join(
                f"{k} {distinct(v.get(k) for v in versions)}"
                for k in ("mmix-eval", "torch", "python")
                if any(v.get(k) for v in versions)
            )
            or NA,
        ),
        ("git commit", distinct([t.get("git_commit") for t in train] + [e.get("git_commit") for e in evals])),
    ]
    return out


def seed_note(table: Table) -> str | None:
    """With 2 or 3 training seeds a method claim is weak; say so in words beside the tables."""
    counts = [len(v) for v in table.runs.values()]
    if not counts or max(counts) > 3:
        return None
    n = max(counts)
    if n == 1:
        return (
            "One training seed per method: no method claim can be made (it needs 2 seed pairs or more); every "
            "interval shown is a network claim, about these trained networks only."
        )
    return (
        f"Only {n} training seeds per method: a method claim uses t with {n - 1} degree{'s' if n > 2 else ''} of "
        f"freedom ({t_quantile(n - 1):.3g} × its standard error), so few hold, and that is the result. Network "
        f"claims (these {n} trained networks per method, per image) are narrower and say nothing of another seed; "
        f"where one holds and the method claim does not, the differences say how many seeds would give "
        f"{POWER * 100:.0f} % power."
    )


def short_text(table: Table, i: int, m: str) -> str:
    """A main-table cell: mean ± std, n stated once in the caption."""
    c = table.cells.get((i, m))
    if c is None:
        return NA
    if c.nonfinite:
        return c.na_text
    text = f"{table.fmt(i, c.mean)} ± {table.fmt(i, c.std)}" if c.std is not None else table.fmt(i, c.mean)
    return text + caveat_text(table, i, m)


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
        text += (
            f" Method claim ({'primary' if c.primary else c.family}; the training run as the unit): "
            f"{method_text(table, c, adj)}: {verdict}."
        )
    else:
        text += f" Method claim: {method_text(table, c, adj)}."
    if c.network is not None and c.network[1] is not None:
        verdict = "" if c.descriptive else (": holds" if c.network_holds else ": does not hold")
        text += f" Network claim (these trained networks, per image): {network_text(table, c, adj)}{verdict}."
    if c.power_checked:
        text += (
            f" {POWER * 100:.0f} % power for the method claim at this effect and seed spread, at the family's "
            f"level α = {c.power_alpha:.2g}, needs "
            + (
                f"{c.seeds_needed} seeds per method"
                if c.seeds_needed
                else "more than 1,000 seeds per method (the test images' own variance dominates: more test images)"
            )
            + " (noncentral t; docs/statistics.md)."
        )
    return text
