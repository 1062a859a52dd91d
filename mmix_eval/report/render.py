"""Render the report's view model (``view.py``) as HTML (one self-contained file, through autoescaping Jinja2
templates in ``templates/``), Markdown, LaTeX and the generated summary, and the table as CSV.

Deterministic: the same records give byte-identical files. Every user string is escaped for its format:
Jinja2 autoescape in HTML, ``md`` in Markdown, ``tex`` in LaTeX, a leading apostrophe against formulas in
CSV. Imports no torch.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import unicodedata
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from mmix_eval.evaluate.records import _cell
from mmix_eval.io import atomic_write_text
from mmix_eval.report.sweep import cell, key_of, sweep_views
from mmix_eval.report.table import Table

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
        v=view, images=shown, calibration_intro=CALIBRATION_INTRO, verdict_intro=verdict_intro(view["verdicts"])
    )


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows] + [""]
    )


def render_markdown(view: dict) -> str:
    methods = [md(m) for m in view["methods"]]
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
    if view["cost"]:
        out += [
            "### Training cost",
            "",
            *_md_table(
                ["method", *map(md, view["cost"]["head"])],
                [[md(r["label"]), *map(md, r["cells"])] for r in view["cost"]["rows"]],
            ),
        ]
    if view["seed_note"]:
        out += [f"*{md(view['seed_note'])}*", ""]
    if view["sources"]:  # where shifted images came from (published files vs generated) is part of what a number means
        out += [" ".join(md(s) for s in view["sources"]), ""]
    for s in view["sections"]:
        rows = [
            [md(r["label"])] + [f"**{md(c['text'])}**" if c["best"] else md(c["text"]) for c in r["cells"]]
            for r in s["rows"]
        ]
        out += [f"### {md(s['title'])}", "", *_md_table(["condition", *methods], rows)]
    for sw in view["sweeps"]:
        rows = [
            [md(r["metric"]), md(r["method"])]
            + [
                f"**{md(c['text'])}**"
                if c["cls"] == "best"
                else f"*{md(c['text'])}*"
                if r["paper"] and c["text"]
                else md(c["text"])
                for c in r["cells"]
            ]
            for r in sw["rows"]
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
    if view["diffs"]:
        d = view["diffs"]
        out += [
            f"### Differences against {md(view['baseline'])}",
            "",
            md(d["legend"]),
            "",
            "The primary comparisons; every comparison, exploratory ones included, is in claims.md.",
            "",
            *_diff_table(d, [r for r in d["rows"] if r["family"] == "primary"]),
        ]
    if view["checks"]:
        out += (
            ["### Checks", ""]
            + [f"- {'PASS' if ok else '**FAIL**'}: `{md(c)}` ({md(why)})" for c, ok, why in view["checks"]]
            + [""]
        )
    return "\n".join(out)


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
    if not compact:
        return head + [f"- {md(s)}" for s in view["calibration"]] + [""]
    facts = [getattr(s, "facts", {}) for s in view["calibration"]]
    facts = [f for f in facts if f and not f["ensemble"]]
    if not facts:
        return []
    keys = list(dict.fromkeys((f["section"], f["score"]) for f in facts))
    cols = list(dict.fromkeys(f["column"] for f in facts))
    by = {(f["column"], f["section"], f["score"]): f for f in facts}
    cell = lambda f: f"{f['raw']}/{f['n']} → {f['after']}; gap −{f['smaller']} +{f['larger']}" if f else "n/a"  # noqa: E731
    rows = [[md(c)] + [md(cell(by.get((c, s, k)))) for s, k in keys] for c in cols]
    return head + [
        "Per column and shift evaluator: lower than the baseline under k of n shifted conditions raw → under "
        "how many of those after the calibrator; the calibration gap smaller (−) or larger (+) under how "
        "many (method claims). The sentences, with the largest differences and their intervals, are in "
        "report.md.",
        "",
        *_md_table(["column", *(md(f"{s}, {k}") for s, k in keys)], rows),
    ]


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

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_TEX_UNICODE = {
    "±": r"$\pm$",
    "−": "-",
    "–": "--",
    "—": "---",
    "°": r"$^\circ$",
    "α": r"$\alpha$",
    "ε": r"$\varepsilon$",
    "λ": r"$\lambda$",
    "σ": r"$\sigma$",
    "μ": r"$\mu$",
    "Σ": r"$\Sigma$",
    "×": r"$\times$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "→": r"$\rightarrow$",
    "†": r"$^\dagger$",
    "’": "'",
    "…": "...",
    "·": r"$\cdot$",
    "\u200b": "",
}


def tex(v) -> str:
    """A user string as LaTeX text: the ten special characters escaped, the symbols the report uses as math,
    accents kept through their base letter, anything else outside ASCII as '?' (pdflatex cannot set it)."""
    out = []
    for ch in " ".join(str(v).split()):
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ch in _TEX_UNICODE:
            out.append(_TEX_UNICODE[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            base = "".join(
                c for c in unicodedata.normalize("NFKD", ch) if ord(c) < 128 and not unicodedata.combining(c)
            )
            out.append(tex(base) if base else "?")
    return "".join(out)


TEX_GROUP = 5  # value columns per tabular: a wider table is split into column groups (each repeating the row
# labels), never shrunk (\resizebox set 20 columns in 2-pt type); 5 in footnotesize fit an A4 page's width
TEX_LABEL = r">{\raggedright\arraybackslash}p{3.6cm}"


def _tex_groups(head: list[str], size: int = TEX_GROUP) -> list[list[int]]:
    return [list(range(1 + k, min(len(head), 1 + k + size))) for k in range(0, max(1, len(head) - 1), size)]


def _tex_head(head: list[str], cols: list[int]) -> str:
    """The header row: the column names wrapped in 2 cm boxes (a long label widened its column past the page)."""
    return (
        " & ".join([head[0], *(r"\multicolumn{1}{>{\raggedleft\arraybackslash}p{2cm}}{" + head[c] + "}" for c in cols)])
        + r" \\"
    )


def _tex_table(caption: str, head: list[str], rows: list[list[str]], label: str, long: bool = False) -> list[str]:
    """A table: the columns in groups of ``TEX_GROUP`` (one tabular each, the row labels repeated), footnotesize, each
    fitting an A4 page's width with 2 cm margins. ``long``: an evaluator's table of many rows, as longtables that
    break across pages (a float of hundreds of rows is more than TeX can set: 'Dimension too large')."""
    groups = _tex_groups(head, TEX_GROUP - 1 if long else TEX_GROUP)  # its cells carry "(n=3)": one column fewer
    if long:
        out = []
        for g, cols in enumerate(groups):
            top = _tex_head(head, cols)
            first = (
                r"\caption{" + caption + r"}\label{tab:" + label + r"}\\"
                if g == 0
                else r"\multicolumn{"
                + str(len(cols) + 1)
                + r"}{l}{\emph{(continued: columns "
                + f"{cols[0]}--{cols[-1]}"
                + r")}}\\"
            )
            out += [
                r"{\footnotesize",
                r"\begin{longtable}{" + TEX_LABEL + "r" * len(cols) + "}",
                first,
                r"\toprule",
                top,
                r"\midrule",
                r"\endfirsthead",
                r"\toprule",
                top,
                r"\midrule",
                r"\endhead",
                *[" & ".join([r[0], *(r[c] for c in cols)]) + r" \\" for r in rows],
                r"\bottomrule",
                r"\end{longtable}}",
                "",
            ]
        return out
    out = [
        r"\begin{table}[ht]",
        r"\centering",
        r"\footnotesize",
        r"\caption{" + caption + "}",
        r"\label{tab:" + label + "}",
    ]
    for g, cols in enumerate(groups):
        if g:
            out.append(r"\par\medskip")
        out += [
            r"\begin{tabular}{" + TEX_LABEL + "r" * len(cols) + "}",
            r"\toprule",
            _tex_head(head, cols),
            r"\midrule",
            *[" & ".join([r[0], *(r[c] for c in cols)]) + r" \\" for r in rows],
            r"\bottomrule",
            r"\end{tabular}",
        ]
    return out + [r"\end{table}", ""]


TEX_CAVEATS = (
    ("below 0.5", "<", "an AUROC below 0.5"),
    ("bound", "b", "a calibrator at its bound in some runs"),
    ("penalised", "b", "a calibrator at its bound in some runs"),
    ("chosen", "c", "the sweep value chosen on validation"),
)


def tex_cell(text: str) -> tuple[str, set[str]]:
    """A cell for LaTeX: its bracketed caveats as superscript marks (a caveat's words widened a column past the page),
    and the marks used (their meaning goes in the caption)."""
    marks = set()
    m = re.search(r" \[([^\[\]]*)\]( [†*‡])?$", text)
    if m:
        for needle, mark, _ in TEX_CAVEATS:
            if needle in m.group(1):
                marks.add(mark)
        text = text[: m.start()] + (m.group(2) or "")
    return tex(text) + (r"$^{" + ",".join(sorted(marks)) + "}$" if marks else ""), marks


def tex_marks(marks: set[str]) -> str:
    return "".join(
        f" ${mark}$: {what}."
        for needle, mark, what in TEX_CAVEATS
        if mark in marks and needle == next(n for n, k, _ in TEX_CAVEATS if k == mark)
    )


def render_latex(view: dict) -> str:
    """report.tex: a standalone article (booktabs) with the main table, the cost table and one table per
    evaluator section; every table is one ``table`` environment, to copy into a paper."""
    methods = [tex(m) for m in view["methods"]]
    out = [
        r"\documentclass{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage[a4paper,margin=2cm]{geometry}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\usepackage{array}",
        r"\usepackage{longtable}",
        r"\begin{document}",
        r"\section*{" + tex(view["title"]) + "}",
        tex(view["header"]),
        "",
    ]
    for name, table in (("main", view["main"]), ("ensembles", (view["main"] or {}).get("ensembles"))):
        if not table:
            continue
        rows, marks = [], set()
        for r in table["rows"]:
            cells = []
            for c in r["cells"]:
                t, m = tex_cell(c["text"])
                marks |= m
                t = r"\textbf{" + t + "}" if c["best"] else t
                cells.append(t + {" †": r"$^\dagger$", " *": r"$^*$"}.get(c["mark"], ""))
            rows.append([tex(r["label"])] + cells)
        out += _tex_table(
            tex(table["caption"]) + tex_marks(marks), ["condition", *map(tex, table["columns"])], rows, name
        )
    if view["cost"]:
        out += _tex_table(
            tex(view["cost"]["caption"]),
            ["method", *map(tex, view["cost"]["head"])],
            [[tex(r["label"]), *map(tex, r["cells"])] for r in view["cost"]["rows"]],
            "cost",
        )
    for k, s in enumerate(view["sections"]):
        rows, marks = [], set()
        for r in s["rows"]:
            cells = []
            for c in r["cells"]:
                t, m = tex_cell(c["text"])
                marks |= m
                cells.append(r"\textbf{" + t + "}" if c["best"] else t)
            rows.append([tex(r["label"])] + cells)
        out += _tex_table(
            tex(s["title"]) + r". Mean $\pm$ std over training seeds (n); bold: the best in its row where its 95\,\% "
            r"interval against the runner-up excludes 0." + tex_marks(marks),
            ["condition", *methods],
            rows,
            f"section{k}",
            long=True,
        )
    return "\n".join(out + [r"\end{document}", ""])


# ---------------------------------------------------------------- CSV


def write_csv_table(table: Table, path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            _cell(h)
            for h in ["section", "evaluator", "condition", "calibrator", "metric", "label", "direction"]
            + [f"{m} {k}" for m in table.methods for k in ("mean", "std", "n")]
        ]
    )
    for i, r in enumerate(table.rows):
        vals = []
        for m in table.methods:
            c = table.cells.get((i, m))
            vals += [c.mean, c.std, c.n] if c is not None else [None, None, None]
        w.writerow(
            [
                _cell(v)
                for v in [r.section, r.evaluator, r.condition, r.calibrator, r.metric, r.label, r.direction] + vals
            ]
        )
    atomic_write_text(path, buf.getvalue())


def write_sweep_csv(table: Table, path: Path) -> bool:
    """sweep.csv, long format: key, value, method, metric, mean, std, n (and the paper's number). False: no sweep."""
    views = sweep_views(table)
    if not views:
        return False
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "key",
            "value",
            "method",
            "section",
            "evaluator",
            "condition",
            "calibrator",
            "metric",
            "label",
            "mean",
            "std",
            "n",
            "paper",
        ]
    )
    for view in views:
        for i in view.rows:
            r = table.rows[i]
            for s in view.series:
                for v in view.values:
                    c = cell(table, i, s.columns.get(key_of(v)))
                    paper = view.paper.get((i, s.name), {}).get(key_of(v))
                    w.writerow(
                        [
                            _cell(x)
                            for x in [
                                view.key,
                                v,
                                s.name,
                                r.section,
                                r.evaluator,
                                r.condition,
                                r.calibrator,
                                r.metric,
                                r.label,
                                *(c if c else (None, None, None)),
                                paper,
                            ]
                        ]
                    )
            for m in view.fixed:
                c = cell(table, i, m)
                w.writerow(
                    [
                        _cell(x)
                        for x in [
                            view.key,
                            "not swept",
                            m,
                            r.section,
                            r.evaluator,
                            r.condition,
                            r.calibrator,
                            r.metric,
                            r.label,
                            *(c if c else (None, None, None)),
                            None,
                        ]
                    ]
                )
    atomic_write_text(path, buf.getvalue())
    return True
