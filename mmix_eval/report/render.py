"""Render the report's view model (``view.py``) as HTML (one self-contained file, through autoescaping Jinja2
templates in ``templates/``), Markdown, LaTeX and the generated summary, and the table as CSV.

Deterministic: the same records give byte-identical files. Every user string is escaped for its format:
Jinja2 autoescape in HTML, ``md`` in Markdown, ``tex`` in LaTeX, a leading apostrophe against formulas in
CSV. Imports no torch.
"""

from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent / "templates"


def md(v) -> str:
    """A Markdown-safe table cell: no pipes, no raw HTML, no line breaks, no emphasis or code spans from a
    user's string (``*`` and backticks escaped)."""
    s = str(v).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("*", "\\*").replace("`", "\\`")
    return " ".join(s.split())


def render_html(view: dict, images: dict[str, bytes]) -> str:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
    )
    shown = [(name, base64.b64encode(images[name]).decode()) for name in sorted(images) if name.endswith(".png")]
    return env.get_template("report.html.j2").render(
        v=view,
        images=shown,
        calibration_intro=CALIBRATION_INTRO,
        calibrators_intro=CALIBRATORS_INTRO,
        conformal_intro=conformal_intro(view.get("conformal") or []),
        verdict_intro=verdict_intro(view["verdicts"]),
    )


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows] + [""]
    )


def render_markdown(view: dict) -> str:
    """report.md: the notes, what holds, the main table, then every section, sweep, difference and check."""
    out = [
        f"## {md(view['title'])}",
        "",
        *[f"> **{md(n['text'])}**\n" if n["cls"] == "fail" else f"> {md(n['text'])}\n" for n in view["notes"]],
        f"{md(view['header'])} Mean ± std over training seeds (n); **bold** = the best in its row where its interval "
        f"against the runner-up excludes 0.",
        "",
    ]
    if view["skipped"]:
        out += [
            f"**{md(view['skipped']['text'])}**",
            "",
            *[f"- {md(p)}: {md(w)}" for p, w in view["skipped"]["shown"]],
            "",
        ]
    out += verdict_lines(view)
    out += [line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in calibration_lines(view)]
    if view["main"]:
        out += ["### Main table", "", *main_lines(view)]
    out += _cost_lines(view)
    if view["seed_note"]:
        out += [f"*{md(view['seed_note'])}*", ""]
    if view["sources"]:  # where shifted images came from (published files vs generated) is part of what a number means
        out += [" ".join(md(s) for s in view["sources"]), ""]
    out += _section_lines(view) + _sweep_lines(view) + _difference_lines(view)
    if view["checks"]:
        out += (
            ["### Checks", ""]
            + [f"- {'PASS' if ok else '**FAIL**'}: `{md(c)}` ({md(why)})" for c, ok, why in view["checks"]]
            + [""]
        )
    return "\n".join(out)


def _cost_lines(view: dict) -> list[str]:
    if not view["cost"]:
        return []
    return [
        "### Training cost",
        "",
        *_md_table(
            ["method", *map(md, view["cost"]["head"])],
            [[md(r["label"]), *map(md, r["cells"])] for r in view["cost"]["rows"]],
        ),
    ]


def _section_lines(view: dict) -> list[str]:
    out, methods = [], [md(m) for m in view["methods"]]
    for s in view["sections"]:
        rows = [
            [md(r["label"])] + [f"**{md(c['text'])}**" if c["best"] else md(c["text"]) for c in r["cells"]]
            for r in s["rows"]
        ]
        out += [f"### {md(s['title'])}", "", *_md_table(["condition", *methods], rows)]
    return out


def _sweep_cell(c: dict, paper: bool) -> str:
    if c["cls"] == "best":
        return f"**{md(c['text'])}**"
    return f"*{md(c['text'])}*" if paper and c["text"] else md(c["text"])


def _sweep_lines(view: dict) -> list[str]:
    out = []
    for sw in view["sweeps"]:
        rows = [
            [md(r["metric"]), md(r["method"])] + [_sweep_cell(c, r["paper"]) for c in r["cells"]] for r in sw["rows"]
        ]
        out += [
            f"### {md(sw['title'])}",
            "",
            md(view["sweep_legend"]),
            "",
            *_md_table(["metric", "method", *map(md, sw["head"])], rows),
        ]
        if sw["fixed"]:
            out += [
                f"Not swept over {md(sw['key'])}:",
                "",
                *_md_table(
                    ["metric", "method", "value"],
                    [[md(r["metric"]), md(r["method"]), md(r["text"])] for r in sw["fixed"]],
                ),
            ]
    return out


def _difference_lines(view: dict) -> list[str]:
    if not view["diffs"]:
        return []
    d = view["diffs"]
    return [
        f"### Differences against {md(view['baseline'])}",
        "",
        md(d["legend"]),
        "",
        "The primary comparisons; every comparison, exploratory ones included, is in claims.md.",
        "",
        *_diff_table(d, [r for r in d["rows"] if r["family"] == "primary"]),
    ]


def _diff_table(d: dict, rows: list[dict]) -> list[str]:
    head = ["comparison", "condition", "family", "method claim (training runs and images)"] + (
        ["network claim (these networks, over images)"] if d["images"] else []
    )
    return _md_table(
        head,
        [
            [md(r["method"]), md(r["label"]), md(r["family"]), md(r["seeds"])]
            + ([md(r["images"])] if d["images"] else [])
            for r in rows
        ],
    )


def render_claims(view: dict) -> str:
    """claims.md: every comparison with its claims, the primary family's sentences condition by condition, then each
    family's differences table (what report.md and summary.md link to instead of holding it: at 20 columns it is
    megabytes)."""
    out = [f"# Claims against {md(view['baseline'])}: {md(view['title'])}", ""]
    if view["verdicts"]["by_condition"]:
        out += ["## The primary comparisons, condition by condition", "", md(verdict_intro(view["verdicts"])), ""]
        for label, sentences in view["verdicts"]["by_condition"]:
            out += [f"**{md(label)}**", ""] + [f"- {md(s)}" for s in sentences] + [""]
    d = view["diffs"]
    if d:
        out += ["## Every comparison, by family", "", md(d["legend"]), ""]
        for family in dict.fromkeys(r["family"] for r in d["rows"]):
            out += [f"### {md(family)}", "", *_diff_table(d, [r for r in d["rows"] if r["family"] == family])]
    if len(out) == 2:
        out += ["No comparison: one method, or no baseline.", ""]
    return "\n".join(out)


def main_lines(view: dict) -> list[str]:
    """The main table in Markdown: bold where the best holds, † where the difference holds, the caption below; the
    deep ensembles' table after it."""
    out = []
    for table in [view["main"], view["main"].get("ensembles")]:
        if not table:
            continue
        rows = [
            [md(r["label"])]
            + [
                (f"**{md(c['text'])}**" if c["best"] else md(c["text"]))
                + (f" {md(c['mark'].strip())}" if c["mark"] else "")
                for c in r["cells"]
            ]
            for r in table["rows"]
        ]
        out += _md_table(["condition", *map(md, table["columns"])], rows)[:-1] + ["", f"*{md(table['caption'])}*", ""]
    return out


def verdict_lines(view: dict) -> list[str]:
    """'What holds' as Markdown: one line per method (better / worse / no difference); the sentences with
    their intervals and tests are in summary.md."""
    v = view["verdicts"]
    if not v["short"]:
        return []
    return [
        f"### What holds against {md(view['baseline'])}",
        "",
        md(verdict_intro(v)) + " One sentence per method and condition, with its intervals and tests, in claims.md.",
        "",
        *[f"- {md(s)}" for s in v["short"]],
        "",
    ]


def verdict_intro(v: dict) -> str:
    """What the 'what holds' lines are about and rest on (every format says it the same way)."""
    return (
        f"Method claims (about the training method: the training run as the unit, test images a sample too) over "
        f"the primary comparisons: {v['family']}, α = 0.05; differences in the metric's unit (points for "
        f"accuracy). Network claims (about these trained networks, per test image) are labelled as such; they say "
        f"nothing of another training seed."
    )


CALIBRATION_INTRO = (
    "Does a calibration advantage over the baseline under a shift survive post-hoc calibration? The "
    "calibrator is fitted once per run on held-out images and applied to every condition's logits. "
    "Verdicts rest on the proper scores (NLL, Brier), raw and calibrated side by side: 'lower under k of "
    "n raw, j of those after' counts the shifted conditions where the method claim holds (the training "
    "run as the unit; Holm within each evaluator's section). The calibration gap is the part of the "
    "score the calibrator removes (raw − calibrated): a smaller gap, its method claim holding, is "
    "'better calibrated' as the calibrator measures it (Holm across the section's gap comparisons); "
    "intervals are 95 %. ECE and its kin are descriptive (each model's estimate is biased by its own "
    "amount). A deep ensemble's line, by network claims, only where one of them holds."
)


def calibration_lines(view: dict, compact: bool = False) -> list[str]:
    """The calibration-under-shift sentences as Markdown (report.md), or with ``compact`` one table of their counts,
    a row per single-model column (summary.md: paper-sized at 20 columns; the sentences are in report.md)."""
    if not view.get("calibration"):
        return []
    head = [
        f"## Calibration under shift, raw and calibrated, against {md(view['baseline'])}",
        "",
        CALIBRATION_INTRO,
        "",
    ]
    means = calibrator_lines(view) + conformal_lines(view, ("aps",) if compact else None)
    if not compact:
        return head + [f"- {md(s)}" for s in view["calibration"]] + [""] + means
    facts = [getattr(s, "facts", {}) for s in view["calibration"]]
    facts = [f for f in facts if f and not f["ensemble"]]
    if not facts:
        return []
    keys = list(dict.fromkeys((f["section"], f["score"]) for f in facts))
    several = len({f.get("calibrator") for f in facts}) > 1  # a row per column and calibrator
    cols = list(dict.fromkeys((f["column"], f.get("calibrator") if several else None) for f in facts))
    by = {(f["column"], f.get("calibrator") if several else None, f["section"], f["score"]): f for f in facts}
    cell = lambda f: f"{f['raw']}/{f['n']} → {f['after']}; gap −{f['smaller']} +{f['larger']}" if f else "n/a"  # noqa: E731
    rows = [
        [md(f"{c}, {cal}" if several else c)] + [md(cell(by.get((c, cal, s, k)))) for s, k in keys] for c, cal in cols
    ]
    return head + [
        "Per column and shift evaluator: lower than the baseline under k of n shifted conditions raw → under "
        "how many of those after the calibrator; the calibration gap smaller (−) or larger (+) under how "
        "many (method claims). The sentences, with the largest differences and their intervals, are in "
        "report.md.",
        "",
        *_md_table(["column, calibrator" if several else "column", *(md(f"{s}, {k}") for s, k in keys)], rows),
        *(["", *means[:-1]] if means else []),  # the tables end with a blank line: the summary adds its own
    ]


CALIBRATORS_INTRO = (
    "Which calibrator keeps each method calibrated under shift: each run's score averaged over the evaluator's "
    "shifted conditions, raw ('none') and after each calibrator (all fitted once per run on the same clean held-out "
    "images), mean ± std over training seeds. Descriptive; which differences hold is said above and in claims.md."
)


def conformal_intro(tables: list) -> str:
    alpha = tables[0].alpha if tables else None
    level = f"{100 * (1 - alpha):g} %" if isinstance(alpha, (int, float)) else "1 − α"
    return (
        f"Split conformal sets at {level}, calibrated once per run on the held-out images (after each calibrator; "
        "'none': the raw softmax). Per cell: coverage (the share of images whose label is in its set) and, in "
        "brackets, the mean set size, averaged over the run's seeds: on the clean test images (exchangeable with the "
        f"held-out ones: coverage at least {level} expected) and averaged over the shifted conditions (no guarantee)."
    )


def conformal_lines(view: dict, methods: tuple | None = None) -> list[str]:
    """Per shift evaluator and conformal method (``methods``: which; all by default): coverage and mean set size by
    calibrator, on the clean images and over the shifted conditions."""
    tables = [t for t in view.get("conformal") or [] if methods is None or t.method in methods]
    if not tables:
        return []
    out = ["### Conformal sets under shift by calibrator", "", conformal_intro(tables), ""]
    for t in tables:
        cols = [c for c in t.columns]
        out += [f"{md(t.section)}, {t.method.upper()} sets (clean | shifted, mean over conditions):", ""]
        rows = [
            [md(cal)] + [md(f"{t.text(t.clean, cal, c)} | {t.text(t.shifted, cal, c)}") for c in cols]
            for cal in t.calibrators
        ]
        out += _md_table(["calibrator", *(md(c) for c in cols)], rows) + [""]
    return out


def calibrator_lines(view: dict) -> list[str]:
    """One table per shift evaluator and proper score: a row per calibrator, a column per method."""
    tables = view.get("calibrators") or []
    if not tables:
        return []
    out = ["### Proper scores under shift by calibrator", "", CALIBRATORS_INTRO, ""]
    for t in tables:
        out += [f"{md(t.section)}, {md(t.label)} (mean over {t.conditions} shifted conditions):", ""]
        rows = [[md(cal)] + [md(t.text(cal, c)) for c in t.columns] for cal in t.calibrators]
        out += _md_table(["calibrator", *(md(c) for c in t.columns)], rows) + [""]
    return out


SUMMARY_START = "<!-- generated by mmix-eval report: the main table and what holds -->"
SUMMARY_END = "<!-- end of the generated summary -->"


def render_summary(view: dict) -> str:
    """summary.md: the main table and, per headline condition, one generated sentence per method."""
    out = [f"# {md(view['title'])}", "", md(view["header"]), "", SUMMARY_START]
    if view["main"]:
        out += main_lines(view)
    if view["verdicts"]["short"]:
        out += [f"## In short, against {md(view['baseline'])}", "", md(verdict_intro(view["verdicts"])), ""]
        out += [f"- {md(s)}" for s in view["verdicts"]["short"]] + [""]
    out += calibration_lines(view, compact=True)
    out += [SUMMARY_END, ""]
    if view["verdicts"]["by_condition"]:
        out += [
            "Every claim condition by condition, with its intervals and tests, and every exploratory comparison: "
            "claims.md.",
            "",
        ]
    elif view["baseline"] is None or len(view["methods"]) < 2:
        out += ["No comparison: one method, or no baseline.", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- LaTeX


# ---------------------------------------------------------------- CSV
