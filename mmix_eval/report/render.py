"""Render an aggregated Table as HTML (one self-contained file), Markdown, CSV and PNG plots.

Deterministic: the same records give byte-identical files (no clock, sorted inputs, PNGs without
metadata). Every user string is escaped in HTML and Markdown and neutralised in CSV.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

from mmix_eval.evaluate.records import _cell
from mmix_eval.report.build import Table
from mmix_eval.report.paper import published

NA = "n/a"


def fmt(v, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    return f"{v:.2f}" if metric == "acc" else f"{v:.4f}" if metric != "temperature" else f"{v:.3f}"


def cell_text(table: Table, i: int, m: str) -> str:
    c = table.cells.get((i, m))
    if c is None:
        return NA
    metric = table.rows[i].metric
    return f"{fmt(c.mean, metric)} ± {fmt(c.std, metric)} (n={c.n})" if c.std is not None else f"{fmt(c.mean, metric)} (n={c.n})"


def diff_rows(table: Table) -> list[int]:
    """Rows worth a paired difference: scores only, and not the calibration section's repeat of clean NLL / ECE."""
    return [i for i, r in enumerate(table.rows)
            if r.higher_is_better is not None and not (r.condition == "test" and r.metric in ("nll", "ece"))]


def diff_text(diffs: dict, table: Table, i: int, m: str) -> str:
    d = diffs.get((i, m))
    if d is None:
        return NA
    mean, half, n = d
    metric = table.rows[i].metric
    return f"{'+' if mean >= 0 else ''}{fmt(mean, metric)} ± {fmt(half, metric) if half is not None else NA} (n={n})"


def paper_values(table: Table, i: int) -> dict:
    """Published number per method column, for rows whose setting matches the paper's."""
    row, out = table.rows[i], {}
    if len(table.context["data"]) != 1 or len(table.context["model"]) != 1:
        return out
    for m in table.methods:
        method, _, rest = m.partition(" α=")
        alpha = float(rest.split()[0]) if rest else {"input_mixup": 1.0, "manifold_mixup": 2.0}.get(method)
        v = published(table.context["data"][0], table.context["model"][0], method, alpha, row.condition, row.metric)
        if v is not None:
            out[m] = v
    return out


# ---------------------------------------------------------------- plots

def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plots(table: Table, records: list[dict]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    colors = plt.get_cmap("tab10").colors
    for section, name, title in (("deformations", "deformations.png", "Accuracy under novel deformations"),
                                 ("fgsm", "fgsm.png", "Accuracy under FGSM")):
        idx = [i for i, r in enumerate(table.rows) if r.section == section or (r.condition, r.metric) == ("clean", "acc")]
        if len(idx) < 2:
            continue
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(idx) + 2), 3.6))
        for k, m in enumerate(table.methods):
            means = [table.cells[i, m].mean if (i, m) in table.cells else math.nan for i in idx]
            errs = [table.cells[i, m].std or 0.0 if (i, m) in table.cells else 0.0 for i in idx]
            if section == "fgsm":
                eps = [0.0] + [float(table.rows[i].condition[3:]) for i in idx[1:]]
                ax.errorbar(eps, means, yerr=errs, marker="o", capsize=3, label=m, color=colors[k % 10])
            else:
                w = 0.8 / len(table.methods)
                xs = [j + (k - (len(table.methods) - 1) / 2) * w for j in range(len(idx))]
                ax.bar(xs, means, w, yerr=errs, capsize=2, label=m, color=colors[k % 10])
        if section == "fgsm":
            ax.set_xlabel("ε (/255, pixel units; 0 = clean)")
        else:
            ax.set_xticks(range(len(idx)), [table.rows[i].condition for i in idx], rotation=30, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{title} (mean ± std over seeds)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        out[name] = _fig_png(fig)

    from mmix_eval.report.build import method_labels

    names = method_labels(records)
    bins: dict = {}  # method -> bin -> run -> {bin_count, bin_acc, bin_conf}
    for r in records:
        if r["evaluator"] == "calibration" and r["condition"] == "test" and r["bin"] is not None:
            bins.setdefault(names[r["run"]], {}).setdefault(r["bin"], {}).setdefault(r["run"], {})[r["metric"]] = r["value"]
    if bins:
        methods = [m for m in table.methods if m in bins]
        fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.3), squeeze=False)
        for ax, m in zip(axes[0], methods):
            xs, accs, confs = [], [], []
            for b in sorted(bins[m]):
                runs = bins[m][b].values()
                n = sum(v.get("bin_count", 0.0) for v in runs)
                if n <= 0:
                    continue  # pooled over seeds, weighted by each run's count in the bin
                accs.append(sum(v["bin_count"] * v["bin_acc"] for v in runs if v.get("bin_count")) / n)
                confs.append(sum(v["bin_count"] * v["bin_conf"] for v in runs if v.get("bin_count")) / n)
                xs.append(b)
            nb = max(bins[m]) + 1
            width = 1.0 / nb
            ax.bar([(b + 0.5) * width for b in xs], accs, width * 0.95, color=colors[table.methods.index(m) % 10],
                   alpha=0.8, label="accuracy")
            ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
            ax.scatter(confs, accs, s=10, color="k", zorder=3, label="(mean confidence, accuracy) of a bin")
            ax.set_xlim(0, 1), ax.set_ylim(0, 1)
            ax.set_xlabel("confidence"), ax.set_title(m, fontsize=9)
        axes[0][0].set_ylabel("accuracy")
        axes[0][0].legend(fontsize=7, loc="lower right")
        fig.suptitle("Reliability diagrams (test, before temperature scaling; pooled over seeds)", fontsize=10)
        out["reliability.png"] = _fig_png(fig)
    return out


# ---------------------------------------------------------------- HTML / Markdown / CSV

def esc(v) -> str:
    return html.escape(str(v), quote=True)


def md(v) -> str:
    """A Markdown-safe table cell: no pipes, no raw HTML, no line breaks."""
    s = str(v).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(s.split())


def table_sections(table: Table) -> list[tuple[str, list[int]]]:
    main = [i for i, r in enumerate(table.rows) if r.section != "calibration"]
    cal = [i for i, r in enumerate(table.rows) if r.section == "calibration"]
    return [(title, idx) for title, idx in (("Comparison", main), ("Calibration", cal)) if idx]


def render_html(table: Table, diffs: dict | None, baseline: str | None, images: dict[str, bytes], prov: dict,
                checks: list, bad: list, title: str, notes: list[str] | None = None) -> str:
    h = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
         "<style>body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}"
         "table{border-collapse:collapse;margin:.6em 0 1.4em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
         "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}td.best{font-weight:700;background:#e7f5e7}"
         "td.paper{color:#666;font-style:italic}.na{color:#999}.fail{color:#b00;font-weight:700}.pass{color:#070}"
         "img{max-width:100%;border:1px solid #eee;margin:.4em 0}code,pre{background:#f6f6f6;padding:.1em .3em}"
         "pre{padding:.6em;overflow-x:auto;white-space:pre-wrap}</style></head><body>",
         f"<h1>{esc(title)}</h1>",
         *[f"<p class='fail'>{esc(n)}</p>" for n in notes or []],
         f"<p>Data: {esc(', '.join(table.context['data']))}; model: {esc(', '.join(table.context['model']))}; "
         f"test images: {esc(', '.join(map(str, table.context['n_images'])))}; "
         f"deformation grid: {esc(', '.join(table.context['grid']) or NA)} "
         f"({esc(', '.join(table.context['interpolation']) or NA)}, evaluation seed {esc(', '.join(map(str, table.context['eval_seed'])) or NA)}); "
         f"attack: {esc(', '.join(table.context['attack']) or NA)}; ECE bins: {esc(', '.join(map(str, table.context['bins'])) or NA)}.</p>",
         "<p>Cells: mean ± sample standard deviation over training seeds (n seeds). Bold: the best mean in its row "
         "(higher accuracy, lower NLL / ECE / MCE / Brier). Italic grey <em>paper</em> columns: the published number, "
         "shown only where data set and architecture are the paper's. Values are final-epoch checkpoints.</p>"]
    for heading, idx in table_sections(table):
        paper = {i: paper_values(table, i) for i in idx}
        paper_methods = [m for m in table.methods if any(m in p for p in paper.values())]
        h.append(f"<h2>{esc(heading)}</h2><table><tr><th>condition</th>"
                 + "".join(f"<th>{esc(m)}</th>" for m in table.methods)
                 + "".join(f"<th>paper: {esc(m)}</th>" for m in paper_methods) + "</tr>")
        for i in idx:
            best = table.best(i)
            tds = []
            for m in table.methods:
                text = cell_text(table, i, m)
                cls = "best" if m in best else ("na" if text == NA else "")
                tds.append(f"<td class='{cls}'>{esc(text)}</td>")
            tds += [f"<td class='paper'>{esc(fmt(paper[i].get(m), table.rows[i].metric))}</td>" for m in paper_methods]
            h.append(f"<tr><td>{esc(table.rows[i].label)}</td>{''.join(tds)}</tr>")
        h.append("</table>")
    if diffs:
        others = [m for m in table.methods if m != baseline]
        h.append(f"<h2>Differences against {esc(baseline)}</h2><p>Paired over training seeds (pairs share the seed and "
                 "the evaluated images): mean difference ± half-width of the two-sided 95 % t interval (n pairs; "
                 "n/a with one pair).</p><table><tr><th>condition</th>" + "".join(f"<th>{esc(m)} − {esc(baseline)}</th>" for m in others) + "</tr>")
        for i in diff_rows(table):
            row = table.rows[i]
            h.append(f"<tr><td>{esc(row.label)}</td>" + "".join(f"<td>{esc(diff_text(diffs, table, i, m))}</td>" for m in others) + "</tr>")
        h.append("</table>")
    if checks:
        h.append("<h2>Checks</h2><ul>" + "".join(
            f"<li class='{'pass' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}: <code>{esc(c)}</code> ({esc(why)})</li>"
            for c, ok, why in checks) + "</ul>")
    if images:
        h.append("<h2>Plots</h2>")
        for name in sorted(images):
            h.append(f"<p><img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(images[name]).decode()}'></p>")
    h.append("<h2>Provenance</h2><pre>" + esc(json.dumps(prov, indent=2, sort_keys=True, default=str)) + "</pre>")
    if bad:
        h.append("<h2>Unreadable result files (skipped)</h2><ul>" + "".join(f"<li><code>{esc(p)}</code>: {esc(w)}</li>" for p, w in bad) + "</ul>")
    h.append("</body></html>\n")
    return "\n".join(h)


def render_markdown(table: Table, diffs: dict | None, baseline: str | None, checks: list, title: str,
                    notes: list[str] | None = None) -> str:
    out = [f"## {md(title)}", "", *[f"> **{md(n)}**\n" for n in notes or []],
           f"Data {md(', '.join(table.context['data']))}, model {md(', '.join(table.context['model']))}, "
           f"{md(', '.join(map(str, table.context['n_images'])))} test images. Mean ± std over training seeds (n); "
           "**bold** = best in row.", ""]
    for heading, idx in table_sections(table):
        out += [f"### {heading}", "", "| condition | " + " | ".join(md(m) for m in table.methods) + " |",
                "|---|" + "---|" * len(table.methods)]
        for i in idx:
            best = table.best(i)
            cells = [f"**{md(cell_text(table, i, m))}**" if m in best else md(cell_text(table, i, m)) for m in table.methods]
            out.append(f"| {md(table.rows[i].label)} | " + " | ".join(cells) + " |")
        out.append("")
    if diffs:
        others = [m for m in table.methods if m != baseline]
        out += [f"### Differences against {md(baseline)} (paired over seeds, ± 95 % t interval)", "",
                "| condition | " + " | ".join(f"{md(m)} − {md(baseline)}" for m in others) + " |", "|---|" + "---|" * len(others)]
        out += [f"| {md(table.rows[i].label)} | " + " | ".join(md(diff_text(diffs, table, i, m)) for m in others) + " |"
                for i in diff_rows(table)]
        out.append("")
    if checks:
        out += ["### Checks", ""] + [f"- {'PASS' if ok else '**FAIL**'}: `{md(c)}` ({md(why)})" for c, ok, why in checks] + [""]
    return "\n".join(out)


def write_csv_table(table: Table, path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([_cell(h) for h in ["condition", "metric", "label", "higher_is_better"]
                + [f"{m} {k}" for m in table.methods for k in ("mean", "std", "n")]])
    for i, r in enumerate(table.rows):
        vals = []
        for m in table.methods:
            c = table.cells.get((i, m))
            vals += [c.mean, c.std, c.n] if c is not None else [None, None, None]
        w.writerow([_cell(v) for v in [r.condition, r.metric, r.label, r.higher_is_better] + vals])
    from mmix_eval.io import atomic_write_text

    atomic_write_text(path, buf.getvalue())
