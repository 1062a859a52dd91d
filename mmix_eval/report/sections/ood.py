"""Out-of-distribution detection: max-softmax histograms, in-distribution against each OOD source, and the feature
scores' AUROC layer by layer. Imports no torch."""

from __future__ import annotations

import numpy as np

from mmix_eval.report.plots import COLORS, color_of, plot_text, plt
from mmix_eval.report.sections.base import ReportSection, SectionContext
from mmix_eval.report.table import Table


class OODSection(ReportSection):
    """AUROC and friends in the table; the score histograms whose overlap AUROC summarises as a figure."""

    def figures(self, ctx: SectionContext) -> dict:
        return {
            **super().figures(ctx),
            **ood_figures(ctx.table, ctx.records, ctx.labels),
            **layer_figures(ctx.table, ctx.records, ctx.labels),
        }


MAX_PANEL_ROWS = 12


def ood_figures(table: Table, records: list[dict], names: dict) -> dict:
    """Max-softmax histograms, in-distribution vs each OOD source, one panel per method (pooled over seeds;
    rows of metrics ``hist_in`` / ``hist_out`` with ``bin``): the overlap is what AUROC summarises."""
    per: dict = {}  # condition -> method -> metric -> bin -> [values]
    for r in records:
        if r["metric"] in ("hist_in", "hist_out") and r["bin"] is not None and r["value"] is not None:
            per.setdefault(r["condition"], {}).setdefault(names[r["run"]], {}).setdefault(r["metric"], {}).setdefault(
                r["bin"], []
            ).append(r["value"])
    if not per:
        return {}
    conds = list(per)[:MAX_PANEL_ROWS]  # a bounded figure: the rest are in the table and the files
    methods = [m for m in table.methods if any(m in per[c] for c in conds)]
    fig, axes = plt.subplots(
        len(conds), len(methods), figsize=(3.0 * len(methods) + 1.5, 2.4 * len(conds)), squeeze=False
    )
    for row, c in zip(axes, conds):
        for ax, m in zip(row, methods):
            for metric, colour, text in (("hist_in", "tab:blue", "in-distribution"), ("hist_out", "tab:red", "OOD")):
                bins = per[c].get(m, {}).get(metric, {})
                if bins:
                    k = max(bins) + 1
                    ax.bar(
                        [(b + 0.5) / k for b in sorted(bins)],
                        [float(np.mean(bins[b])) for b in sorted(bins)],
                        1 / k,
                        color=colour,
                        alpha=0.55,
                        label=text,
                    )
            ax.set_title(f"{plot_text(m)}: {plot_text(c.split('/')[0])}", fontsize=8)
            ax.set_xlim(0, 1)
        row[0].set_ylabel("share of images")
    for ax in axes[-1]:
        ax.set_xlabel("max softmax probability")
    axes[0][-1].legend(
        *axes[0][0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    fig.suptitle("Out-of-distribution detection: max-softmax scores, in vs out (pooled over seeds)", fontsize=10)
    fig.tight_layout()
    return {"ood": fig}


LAYER_SCORES = ("mahalanobis", "rmds", "knn")  # the feature scores defined at every layer
MAX_SOURCES = 6


def layer_figures(table: Table, records: list[dict], names: dict) -> dict:
    """AUROC of each feature score layer by layer (input side to penultimate, in the rows' order), one panel per
    source (an OpenOOD protocol's near and far groups, not their sets) and score, one line per method (mean over seeds, band from the lowest to the highest seed): does a
    regularizer move separability to earlier layers?"""
    per: dict = {}  # (source, score) -> method -> layer -> seed -> value
    layers: dict = {}  # (source, score) -> layers in order
    for r in records:
        s = r["settings"] or {}
        if r["evaluator"] != "ood" or r["metric"] != "auroc" or r["value"] is None or r["calibrator"] != "none":
            continue
        if s.get("score") not in LAYER_SCORES or s.get("layer") is None:
            continue
        if s.get("ood_group") and not s.get("group_sets"):  # an OpenOOD set: drawn in its group's panel
            continue
        key = (s.get("ood"), s["score"])
        layers.setdefault(key, {})[s["layer"]] = None
        seed = r["train_seed"] if r["train_seed"] is not None else r["run"]
        per.setdefault(key, {}).setdefault(names[r["run"]], {}).setdefault(s["layer"], {})[seed] = r["value"]
    if not per:
        return {}
    sources = list(dict.fromkeys(k[0] for k in per))[:MAX_SOURCES]  # a bounded figure: the rest are in the table
    scores = [sc for sc in LAYER_SCORES if any((src, sc) in per for src in sources)]
    fig, axes = plt.subplots(
        len(sources), len(scores), figsize=(3.4 * len(scores) + 1.8, 2.6 * len(sources)), squeeze=False
    )
    for row, src in zip(axes, sources):
        for ax, sc in zip(row, scores):
            ls = list(layers.get((src, sc), {}))
            for m in [m for m in table.methods if m in per.get((src, sc), {})]:
                vals = np.array([[per[src, sc][m].get(layer, {}).get(seed, np.nan) for layer in ls]
                                 for seed in {s for v in per[src, sc][m].values() for s in v}])  # fmt: skip
                c = color_of(table, m, COLORS)
                ax.plot(range(len(ls)), np.nanmean(vals, 0), "-o", ms=3, lw=1.3, color=c, label=plot_text(m))
                if len(vals) > 1:
                    ax.fill_between(range(len(ls)), np.nanmin(vals, 0), np.nanmax(vals, 0), color=c, alpha=0.18, lw=0)
            ax.set_xticks(range(len(ls)), [plot_text(x) for x in ls], fontsize=7)
            ax.set_title(f"{plot_text(src)}: {sc}", fontsize=8)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("AUROC")
    for ax in axes[-1]:
        ax.set_xlabel("layer")
    axes[0][-1].legend(
        *axes[0][0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    fig.suptitle("Out-of-distribution detection from the features, layer by layer (mean over seeds, band: min-max)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    return {"ood_layers": fig}
