"""Out-of-distribution detection: max-softmax histograms, in-distribution against each OOD source. Imports
no torch."""

from __future__ import annotations

import numpy as np

from mmix_eval.report.plots import plot_text, plt
from mmix_eval.report.sections.base import ReportSection, SectionContext
from mmix_eval.report.table import Table


class OODSection(ReportSection):
    """AUROC and friends in the table; the score histograms whose overlap AUROC summarises as a figure."""

    def figures(self, ctx: SectionContext) -> dict:
        return {**super().figures(ctx), **ood_figures(ctx.table, ctx.records, ctx.labels)}


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
