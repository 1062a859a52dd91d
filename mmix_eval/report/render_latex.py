"""The report as LaTeX: booktabs tables that compile standalone, wide tables split into column groups, caveats as marks. Imports no torch."""

from __future__ import annotations

import re
import unicodedata

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
    ("bound", "b", "a calibrator at its bound in some runs"),  # the committed reports' caption: kept word for word
    ("penalised", "b", "a calibrator at its bound in some runs"),
    ("uncalibrated", "u", "a class absent from the held-out images left uncalibrated in some runs"),
    ("ODIR", "o", "Dirichlet's regulariser not cross-validated (too few held-out images) in some runs"),
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
