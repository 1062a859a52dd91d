"""Render an aggregated Table as HTML (one self-contained file, through autoescaping Jinja2 templates in
``templates/``, one per section kind), Markdown, CSV and PNG plots.

Deterministic: the same records give byte-identical files (no clock, sorted inputs, PNGs without
metadata, a fixed bootstrap seed). Every user string is escaped in HTML (Jinja2 autoescape) and Markdown,
neutralised in CSV and drawn literally in plots (no mathtext, no legend-hiding leading underscore).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from mmix_eval.evaluate.records import _cell
from mmix_eval.report.build import Table
from mmix_eval.report.paper import published

NA = "n/a"
TEMPLATES = Path(__file__).resolve().parent / "templates"


def cell_text(table: Table, i: int, m: str) -> str:
    c = table.cells.get((i, m))
    if c is None:
        return NA
    mean = table.fmt(i, c.mean)
    return f"{mean} ± {table.fmt(i, c.std)} (n={c.n})" if c.std is not None else f"{mean} (n={c.n})"


def diff_rows(table: Table) -> list[int]:
    """Rows worth a paired difference: scores, each (evaluator, condition, metric) once."""
    seen, out = set(), []
    for i, r in enumerate(table.rows):
        key = (r.evaluator, r.condition, r.metric)
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
    diff, lo, hi, p, n_images, pairs = d
    f = lambda v: table.fmt(i, v)
    return (f"{'+' if diff >= 0 else ''}{f(diff)} [{f(lo)}, {f(hi)}], McNemar p = {p:.3g} "
            f"({n_images} images × {pairs} seed pair{'s' if pairs != 1 else ''})")


DIFF_LEGEND = ("Over seeds: mean of the per-seed differences ± half-width of the two-sided 95 % t interval (n seed "
               "pairs; n/a with one pair; pairs share the seed and the evaluated images). Over images: the accuracy "
               "difference with a 95 % paired bootstrap interval over test images (10,000 resamples; each image "
               "brings all its seed pairs) and McNemar's exact test on the discordant images summed over seed pairs; "
               "computed from the per-image outcomes, so one seed per method still gets an interval. The over-images "
               "interval holds the trained networks fixed (test-image noise only); only the over-seeds interval "
               "covers how much another training seed would move the difference.")


def paper_values(table: Table, i: int) -> dict:
    """Published number per method column, for rows whose setting matches the paper's."""
    row, out = table.rows[i], {}
    if len(table.context["data"]) != 1 or len(table.context["model"]) != 1:
        return out
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


# ---------------------------------------------------------------- plots

def plot_text(s) -> str:
    """A user string drawn literally: '$' is not mathtext, and a leading '_' does not hide a legend entry."""
    s = str(s).replace("$", r"\$")
    return "\u200b" + s if s.startswith("_") else s


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _series(table: Table, idx: list[int], m: str) -> tuple[list[float], list[float]]:
    means = [table.cells[i, m].mean if (i, m) in table.cells else math.nan for i in idx]
    errs = [(table.cells[i, m].std or 0.0) if (i, m) in table.cells else 0.0 for i in idx]
    return means, errs


def _line_or_bars(ax, table: Table, idx: list[int], colors, ylabel: str, title: str) -> None:
    """One line per method against the shift strength when every shifted row has one (clean at 0), else
    grouped bars per condition."""
    numeric = all(table.rows[i].strength is not None for i in idx if table.rows[i].condition != "clean")
    # one line per attack (FGSM, the official code's FGSM, PGD-k ...), each along its own strengths, clean at 0
    clean = [i for i in idx if table.rows[i].condition == "clean"]
    groups: dict = {}
    for i in idx:
        if table.rows[i].condition != "clean":
            groups.setdefault((table.rows[i].settings or {}).get("attack"), []).append(i)
    for k, m in enumerate(table.methods):
        if numeric:
            for g, (attack, members) in enumerate(groups.items()):
                line = clean + sorted(members, key=lambda i: table.rows[i].strength)
                means, errs = _series(table, line, m)
                xs = [0.0 if table.rows[i].condition == "clean" else table.rows[i].strength for i in line]
                label = plot_text(m if len(groups) == 1 else f"{m} ({attack})")
                ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=label, color=colors[k % 10],
                            linestyle=("-", "--", ":", "-.")[g % 4])
        else:
            means, errs = _series(table, idx, m)
            w = 0.8 / len(table.methods)
            xs = [j + (k - (len(table.methods) - 1) / 2) * w for j in range(len(idx))]
            ax.bar(xs, means, w, yerr=errs, capsize=2, label=plot_text(m), color=colors[k % 10])
    if numeric:
        ax.set_xlabel("shift strength (0 = clean; ε in /255 for FGSM; the official code's: its channels' mean)")
    else:
        ax.set_xticks(range(len(idx)), [plot_text(table.rows[i].condition) for i in idx], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over data


def plots(table: Table, records: list[dict], baseline: str | None = None) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmix_eval.evaluate.runner import safe_name
    from mmix_eval.report.build import evaluator_order, method_labels

    out = {}
    colors = plt.get_cmap("tab10").colors
    clean_acc = next((i for i, r in enumerate(table.rows) if (r.evaluator, r.condition, r.metric) == (None, "clean", "acc")
                      and r.section == "comparison"), None)
    for e in evaluator_order(records):
        stem = safe_name(str(e))
        head = [i for i, r in enumerate(table.rows) if r.section == "comparison" and r.evaluator == e]
        if head:  # the evaluator's headline metric under each shift, clean first
            idx = ([clean_acc] if clean_acc is not None and table.rows[head[0]].metric == "acc" else []) + head
            fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(idx) + 2), 3.6))
            ylabel = plot_text(table.rows[head[0]].label.rsplit(": ", 1)[-1])
            _line_or_bars(ax, table, idx, colors, ylabel, f"{plot_text(e)}: {ylabel} under each condition")
            out[f"{stem}.png"] = _fig_png(fig)
        ece = [i for i, r in enumerate(table.rows) if r.section == e and r.metric == "ece"]
        if head and len(ece) >= 2:  # a shift evaluator: Ovadia et al. 2019's question
            fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(ece) + 2), 3.6))
            _line_or_bars(ax, table, ece, colors, "ECE", f"{plot_text(e)}: ECE under each condition")
            out[f"{stem}-ece.png"] = _fig_png(fig)

    names = method_labels(records)
    out.update(sweep_plots(table, colors))
    out.update(corruption_plots(table, records, names, baseline, colors))
    out.update(spectra_plots(table, records, names, colors))
    out.update(ood_plots(table, records, names, colors))
    bins: dict = {}  # method -> bin -> run -> {bin_count, bin_acc, bin_conf}
    first = next(((r["evaluator"], r["condition"]) for r in records if r["bin"] is not None and r["metric"] == "bin_count"), None)
    for r in records:
        if r["bin"] is not None and (r["evaluator"], r["condition"]) == first:
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
            width = 1.0 / (max(bins[m]) + 1)
            ax.bar([(b + 0.5) * width for b in xs], accs, width * 0.95, color=colors[table.methods.index(m) % 10],
                   alpha=0.8, label="accuracy")
            ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
            ax.scatter(confs, accs, s=10, color="k", zorder=3, label="(mean confidence, accuracy) of a bin")
            ax.set_xlim(0, 1), ax.set_ylim(0, 1)
            ax.set_xlabel("confidence"), ax.set_title(plot_text(m), fontsize=9)
        axes[0][0].set_ylabel("accuracy")
        fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=3,
                   bbox_to_anchor=(0.5, -0.12))  # below the panels: never over a bar
        fig.suptitle(f"Reliability diagrams ({plot_text(first[0])}, {plot_text(first[1])}; pooled over seeds)", fontsize=10)
        out["reliability.png"] = _fig_png(fig)
    return out


def ood_plots(table: Table, records: list[dict], names: dict, colors) -> dict[str, bytes]:
    """Max-softmax histograms, in-distribution vs each OOD source, one panel per method (pooled over seeds;
    rows of metrics ``hist_in`` / ``hist_out`` with ``bin``): the overlap is what AUROC summarises."""
    import matplotlib.pyplot as plt

    per: dict = {}  # condition -> method -> metric -> bin -> [values]
    for r in records:
        if r["metric"] in ("hist_in", "hist_out") and r["bin"] is not None and r["value"] is not None:
            per.setdefault(r["condition"], {}).setdefault(names[r["run"]], {}).setdefault(r["metric"], {}) \
               .setdefault(r["bin"], []).append(r["value"])
    if not per:
        return {}
    conds = list(per)
    methods = [m for m in table.methods if any(m in per[c] for c in conds)]
    fig, axes = plt.subplots(len(conds), len(methods), figsize=(3.0 * len(methods) + 1.5, 2.4 * len(conds)),
                             squeeze=False)
    for row, c in zip(axes, conds):
        for ax, m in zip(row, methods):
            for metric, colour, text in (("hist_in", "tab:blue", "in-distribution"), ("hist_out", "tab:red", "OOD")):
                bins = per[c].get(m, {}).get(metric, {})
                if bins:
                    k = max(bins) + 1
                    ax.bar([(b + 0.5) / k for b in sorted(bins)], [float(np.mean(bins[b])) for b in sorted(bins)],
                           1 / k, color=colour, alpha=0.55, label=text)
            ax.set_title(f"{plot_text(m)}: {plot_text(c.split('/')[0])}", fontsize=8)
            ax.set_xlim(0, 1)
        row[0].set_ylabel("share of images")
    for ax in axes[-1]:
        ax.set_xlabel("max softmax probability")
    axes[0][-1].legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Out-of-distribution detection: max-softmax scores, in vs out (pooled over seeds)", fontsize=10)
    fig.tight_layout()
    return {"ood.png": _fig_png(fig)}


def spectra_plots(table: Table, records: list[dict], names: dict, colors) -> dict[str, bytes]:
    """The normalised singular values s_k / Σ s per layer (rows of metric ``sv``, ``bin`` = k − 1), one line per
    method (mean over seeds, band from the lowest to the highest seed): a flatter class is a steeper curve."""
    import matplotlib.pyplot as plt

    per: dict = {}  # (evaluator, layer) -> method -> seed -> k -> value
    labels: dict = {}
    for r in records:
        if r["metric"] == "sv" and r["bin"] is not None and r["value"] is not None:
            key = (r["evaluator"], r["condition"])
            labels.setdefault(key, r["label"] or r["condition"])
            seed = r["train_seed"] if r["train_seed"] is not None else r["run"]
            per.setdefault(key, {}).setdefault(names[r["run"]], {}).setdefault(seed, {})[r["bin"]] = r["value"]
    if not per:
        return {}
    keys = list(per)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys) + 1.5, 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for m in [m for m in table.methods if m in per[key]]:
            seeds = per[key][m]
            ks = sorted({k for v in seeds.values() for k, val in v.items() if val > 0})  # log axis: s_k > 0 only
            vals = np.array([[seeds[s].get(k, np.nan) for k in ks] for s in seeds])
            c = colors[table.methods.index(m) % 10]
            x = [k + 1 for k in ks]
            ax.plot(x, np.nanmean(vals, 0), "-o", ms=2.5, lw=1.3, color=c, label=plot_text(m))
            if len(vals) > 1:
                ax.fill_between(x, np.nanmin(vals, 0), np.nanmax(vals, 0), color=c, alpha=0.18, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("singular value index k"), ax.set_title(plot_text(labels[key]), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("s_k / Σ s (mean over classes)")
    axes[0][-1].legend(*axes[0][0].get_legend_handles_labels(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Per-class singular values of the representations (steeper = flatter classes)", fontsize=10)
    return {"spectra.png": _fig_png(fig)}


def corruption_plots(table: Table, records: list[dict], names: dict, baseline: str | None, colors) -> dict[str, bytes]:
    """Per-severity detail rows (settings corruption + severity): accuracy and ECE against severity, one box
    per method over the corruptions at each severity (Ovadia et al. 2019, Fig. 2), and a corruption x
    severity heatmap of each method's accuracy minus the baseline's (means over seeds)."""
    import matplotlib.pyplot as plt

    from mmix_eval.report.corruption import severity_grid

    acc = severity_grid(records, names, "acc")
    if not acc:
        return {}
    out = {}
    ece = severity_grid(records, names, "ece")
    methods = [m for m in table.methods if m in acc]
    sevs = sorted({s for per in acc.values() for _, s in per})
    corr = list(dict.fromkeys(c for per in acc.values() for c, s in per if s > 0))
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.3 * len(sevs) * max(1, len(methods)) / 2 + 3), 3.6))
    width = 0.8 / max(1, len(methods))
    for ax, grid, ylabel in ((axes[0], acc, "accuracy (%)"), (axes[1], ece, "ECE")):
        for k, m in enumerate(methods):
            data = [[v for (c, s), v in grid.get(m, {}).items() if s == sev] for sev in sevs]
            pos = [j + (k - (len(methods) - 1) / 2) * width for j in range(len(sevs))]
            keep = [(p, d) for p, d in zip(pos, data) if d]
            if not keep:
                continue
            bp = ax.boxplot([d for _, d in keep], positions=[p for p, _ in keep], widths=width * 0.9, patch_artist=True,
                            showfliers=False, medianprops={"color": "k"})
            for b in bp["boxes"]:
                b.set_facecolor(colors[table.methods.index(m) % 10])
                b.set_alpha(0.75)
            ax.plot([], [], "s", color=colors[table.methods.index(m) % 10], label=plot_text(m))
        ax.set_xticks(range(len(sevs)), ["clean" if s == 0 else str(s) for s in sevs])
        ax.set_xlabel("severity"), ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="upper left",
                   bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over data
    fig.suptitle(f"Corruptions: accuracy and ECE by severity (box over {len(corr)} corruptions; means over seeds)",
                 fontsize=10)
    out["corruptions-severity.png"] = _fig_png(fig)
    others = [m for m in methods if m != baseline]
    if baseline in acc and others:
        fig, axes = plt.subplots(1, len(others), figsize=(0.9 * len([s for s in sevs if s]) * len(others) + 3.5,
                                                           0.32 * len(corr) + 1.6), squeeze=False)
        shown = [s for s in sevs if s > 0]
        lim = max([abs(acc[m].get((c, s), 0) - acc[baseline].get((c, s), 0)) for m in others for c in corr for s in shown]
                  + [1e-9])
        for ax, m in zip(axes[0], others):
            d = np.array([[acc[m].get((c, s), np.nan) - acc[baseline].get((c, s), np.nan) for s in shown] for c in corr])
            im = ax.imshow(d, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            for (r, q), v in np.ndenumerate(d):
                if not np.isnan(v):
                    ax.text(q, r, f"{v:+.1f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(v) > 0.6 * lim else "black")
            ax.set_xticks(range(len(shown)), [str(s) for s in shown])
            ax.set_yticks(range(len(corr)), [plot_text(c) for c in corr], fontsize=8)
            ax.set_xlabel("severity"), ax.set_title(f"{plot_text(m)} − {plot_text(baseline)}", fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), label="accuracy difference (points)")
        out["corruptions-heatmap.png"] = _fig_png(fig)
    return out


# ---------------------------------------------------------------- HTML / Markdown / CSV

def md(v) -> str:
    """A Markdown-safe table cell: no pipes, no raw HTML, no line breaks."""
    s = str(v).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(s.split())


def header_text(table: Table) -> str:
    c = table.context
    parts = [f"Data: {', '.join(c['data'])}; model: {', '.join(c['model'])}; test images: "
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


def _sections(table: Table) -> list[dict]:
    out = []
    for _, title, idx in table.sections:
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
        out.append({"title": title, "rows": rows, "paper_methods": paper_methods})
    return out


SWEEP_LEGEND = ("One row per metric and method, one column per swept value: mean ± std over training seeds (n). "
                "Bold: the best value of the row, by the metric's direction. 'not swept': methods that do not take "
                "the key, trained once, as a reference. Italic grey rows: the paper's Table 5, shown only where the "
                "setting is the paper's (CIFAR-10/100, PreActResNet18, manifold mixup α=2, clean accuracy).")


def sweep_sections(table: Table) -> list[dict]:
    """Each swept key as a table: metric, method, then one column per swept value (and 'not swept')."""
    from mmix_eval.report.sweep import _key, cell, sweep_views

    out = []
    for view in sweep_views(table):
        head = [view.value_text(v) for v in view.values] + (["not swept"] if view.fixed else [])
        rows = []
        for i in view.rows:
            row = table.rows[i]
            for s in view.series:
                columns = [s.columns.get(_key(v)) for v in view.values]
                cs = [cell(table, i, m) for m in columns]
                means = [c[0] for c in cs if c is not None]
                best = None
                if row.direction is not None and len(means) > 1:
                    best = (max if row.direction == "higher" else min)(means)
                cells = [{"text": cell_text(table, i, m) if c is not None else NA,
                          "cls": "best" if c is not None and c[0] == best else ("na" if c is None else "")}
                         for m, c in zip(columns, cs)] + ([{"text": "", "cls": "na"}] if view.fixed else [])
                rows.append({"metric": row.label, "method": s.name, "cells": cells, "paper": False})
                got = view.paper.get((i, s.name))
                if got:
                    rows.append({"metric": row.label, "method": f"paper (Table 5): {s.name}", "paper": True,
                                 "cells": [{"text": table.fmt(i, got[_key(v)]) if _key(v) in got else NA, "cls": "paper"}
                                           for v in view.values] + ([{"text": "", "cls": "paper"}] if view.fixed else [])})
            for m in view.fixed:
                rows.append({"metric": row.label, "method": m, "paper": False,
                             "cells": [{"text": "", "cls": "na"} for _ in view.values]
                             + [{"text": cell_text(table, i, m), "cls": ""}]})
        out.append({"title": f"Sweep over {view.key}", "key": view.key, "head": head, "rows": rows})
    return out


def sweep_plots(table: Table, colors) -> dict[str, bytes]:
    """Per swept key, each plotted metric against the swept value: one line per method (mean ± std over seeds),
    methods that do not take the key as dashed reference lines, the paper's Table 5 as grey crosses."""
    import matplotlib.pyplot as plt

    from mmix_eval.evaluate.runner import safe_name
    from mmix_eval.report.sweep import _key, cell, plotted_rows, sweep_views

    out = {}
    for view in sweep_views(table):
        idx = plotted_rows(table, view)
        if not idx:
            continue
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in view.values)
        xs = list(view.values) if numeric else list(range(len(view.values)))
        cols = min(3, len(idx))
        nrows = math.ceil(len(idx) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols + 2.2, 3.1 * nrows), squeeze=False)
        handles = {}
        for a, i in enumerate(idx):
            ax = axes[a // cols][a % cols]
            for k, s in enumerate(view.series):
                cs = [cell(table, i, s.columns.get(_key(v))) for v in view.values]
                ys = [c[0] if c else math.nan for c in cs]
                es = [(c[1] or 0.0) if c else 0.0 for c in cs]
                h = ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colors[k % 10], label=plot_text(s.name))
                handles.setdefault(s.name, h)
                got = view.paper.get((i, s.name))
                if got:
                    px = [x for x, v in zip(xs, view.values) if _key(v) in got]
                    h = ax.plot(px, [got[_key(v)] for v in view.values if _key(v) in got], "x", color="0.45", ms=8,
                                label="paper (Table 5)")[0]
                    handles.setdefault("paper (Table 5)", h)
            for k, m in enumerate(view.fixed, start=len(view.series)):
                c = cell(table, i, m)
                if c is not None:
                    h = ax.axhline(c[0], ls="--", lw=1.2, color=colors[k % 10], label=plot_text(f"{m} (not swept)"))
                    handles.setdefault(f"{m} (not swept)", h)
            if numeric and min(view.values) > 0 and max(view.values) / min(view.values) >= 8:
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [plot_text(view.value_text(v).split("=", 1)[-1]) for v in view.values],
                          rotation=0 if numeric else 20)
            ax.set_title(plot_text(table.rows[i].label), fontsize=9)
            ax.grid(alpha=0.3)
        for a in range(len(idx), nrows * cols):
            axes[a // cols][a % cols].axis("off")
        fig.supxlabel(plot_text(view.key))
        fig.legend(list(handles.values()), list(handles), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95))
        fig.suptitle(plot_text(f"Sweep over {view.key} (mean ± std over seeds)"))
        fig.tight_layout()
        out[f"sweep-{safe_name(view.key)}.png"] = _fig_png(fig)
    return out


def write_sweep_csv(table: Table, path: Path) -> bool:
    """sweep.csv, long format: key, value, method, metric, mean, std, n (and the paper's number). False: no sweep."""
    from mmix_eval.report.sweep import _key, cell, sweep_views

    views = sweep_views(table)
    if not views:
        return False
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "value", "method", "section", "evaluator", "condition", "metric", "label", "mean", "std", "n", "paper"])
    for view in views:
        for i in view.rows:
            r = table.rows[i]
            for s in view.series:
                for v in view.values:
                    c = cell(table, i, s.columns.get(_key(v)))
                    paper = view.paper.get((i, s.name), {}).get(_key(v))
                    w.writerow([_cell(x) for x in [view.key, v, s.name, r.section, r.evaluator, r.condition, r.metric, r.label,
                                                   *(c if c else (None, None, None)), paper]])
            for m in view.fixed:
                c = cell(table, i, m)
                w.writerow([_cell(x) for x in [view.key, "not swept", m, r.section, r.evaluator, r.condition, r.metric,
                                               r.label, *(c if c else (None, None, None)), None]])
    from mmix_eval.io import atomic_write_text

    atomic_write_text(path, buf.getvalue())
    return True


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
    from mmix_eval.report.stats import t_quantile

    n = max(counts)
    text = (f"Only {n} training seed{'s' if n != 1 else ''} per method: " +
            ("a standard deviation and an interval over seeds need at least 2; " if n == 1 else
             f"the 95 % t interval over seeds uses t with {n - 1} degree{'s' if n > 2 else ''} of freedom "
             f"({t_quantile(n - 1):.3g} × the standard error), so it is wide and a difference can be real "
             f"and still not exclude 0; "))
    text += ("the per-image intervals and McNemar tests below hold the trained networks fixed and are narrower."
             if image_diffs else "more seeds narrow it.")
    return text


def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                       keep_trailing_newline=True)


def render_html(table: Table, diffs: dict | None, image_diffs: dict, baseline: str | None, images: dict[str, bytes],
                prov: dict, checks: list, bad: list, title: str, notes: list[str] | None = None) -> str:
    sections = _sections(table)
    has_paper = any(s["paper_methods"] for s in sections)
    diff_view = None
    if diffs:
        others = [m for m in table.methods if m != baseline]
        rows = []
        for i in diff_rows(table):
            cells = []
            for m in others:
                cells.append(diff_text(diffs, table, i, m))
                if image_diffs:
                    cells.append(image_text(image_diffs, table, i, m))
            rows.append({"label": table.rows[i].label, "cells": cells})
        diff_view = {"methods": others, "rows": rows, "images": bool(image_diffs), "legend": DIFF_LEGEND}
    return _env().get_template("report.html.j2").render(
        summary=provenance_summary(table, prov), seed_note=seed_note(table, image_diffs),
        title=title, notes=notes or [], header=header_text(table), legend=LEGEND + (PAPER_LEGEND if has_paper else ""),
        sections=sections, sweeps=sweep_sections(table), sweep_legend=SWEEP_LEGEND, methods=table.methods, diffs=diff_view, baseline=baseline, checks=checks,
        images=[(name, base64.b64encode(images[name]).decode()) for name in sorted(images)],
        provenance=json.dumps(prov, indent=2, sort_keys=True, default=str), bad=bad)


def render_markdown(table: Table, diffs: dict | None, image_diffs: dict, baseline: str | None, checks: list, title: str,
                    notes: list[str] | None = None) -> str:
    out = [f"## {md(title)}", "", *[f"> **{md(n)}**\n" for n in notes or []],
           f"Data {md(', '.join(table.context['data']))}, model {md(', '.join(table.context['model']))}, "
           f"{md(', '.join(map(str, table.context['n_images'])))} test images. Mean ± std over training seeds (n); "
           "**bold** = best in row.", ""]
    note = seed_note(table, image_diffs)
    if note:
        out += [f"*{md(note)}*", ""]
    sources = [f"{md(e)} images: {md(', '.join(v['source']))}." for e, v in table.context["settings"].items() if v.get("source")]
    if sources:  # where shifted images came from (published files vs generated) is part of what a number means
        out += [" ".join(sources), ""]
    for s in _sections(table):
        out += [f"### {md(s['title'])}", "", "| condition | " + " | ".join(md(m) for m in table.methods) + " |",
                "|---|" + "---|" * len(table.methods)]
        for row in s["rows"]:
            cells = [f"**{md(c['text'])}**" if c["best"] else md(c["text"]) for c in row["cells"]]
            out.append(f"| {md(row['label'])} | " + " | ".join(cells) + " |")
        out.append("")
    for sw in sweep_sections(table):
        out += [f"### {md(sw['title'])}", "", md(SWEEP_LEGEND), "",
                "| metric | method | " + " | ".join(md(h) for h in sw["head"]) + " |", "|---|---|" + "---|" * len(sw["head"])]
        for row in sw["rows"]:
            cells = [f"**{md(c['text'])}**" if c["cls"] == "best" else f"*{md(c['text'])}*" if row["paper"] and c["text"]
                     else md(c["text"]) for c in row["cells"]]
            out.append(f"| {md(row['metric'])} | {md(row['method'])} | " + " | ".join(cells) + " |")
        out.append("")
    if diffs:
        others = [m for m in table.methods if m != baseline]
        heads = [f"{md(m)} − {md(baseline)}{k}" for m in others for k in ([" (seeds)", " (images)"] if image_diffs else [""])]
        out += [f"### Differences against {md(baseline)}", "", md(DIFF_LEGEND), "",
                "| condition | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
        for i in diff_rows(table):
            cells = []
            for m in others:
                cells.append(md(diff_text(diffs, table, i, m)))
                if image_diffs:
                    cells.append(md(image_text(image_diffs, table, i, m)))
            out.append(f"| {md(table.rows[i].label)} | " + " | ".join(cells) + " |")
        out.append("")
    if checks:
        out += ["### Checks", ""] + [f"- {'PASS' if ok else '**FAIL**'}: `{md(c)}` ({md(why)})" for c, ok, why in checks] + [""]
    return "\n".join(out)


def write_csv_table(table: Table, path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([_cell(h) for h in ["section", "evaluator", "condition", "metric", "label", "direction"]
                + [f"{m} {k}" for m in table.methods for k in ("mean", "std", "n")]])
    for i, r in enumerate(table.rows):
        vals = []
        for m in table.methods:
            c = table.cells.get((i, m))
            vals += [c.mean, c.std, c.n] if c is not None else [None, None, None]
        w.writerow([_cell(v) for v in [r.section, r.evaluator, r.condition, r.metric, r.label, r.direction] + vals])
    from mmix_eval.io import atomic_write_text

    atomic_write_text(path, buf.getvalue())
