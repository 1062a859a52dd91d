"""Representation spectra: the normalised singular values per layer, one line per method. Imports no torch."""

from __future__ import annotations

import numpy as np

from mmix_eval.report.plots import COLORS, color_of, plot_text, plt
from mmix_eval.report.sections.base import ReportSection, SectionContext
from mmix_eval.report.table import Table


class SpectraSection(ReportSection):
    """Per-class singular values of the hidden representations (the paper's flattening claim)."""

    def figures(self, ctx: SectionContext) -> dict:
        return {**super().figures(ctx), **spectra_figures(ctx.table, ctx.records, ctx.labels, COLORS)}


MAX_PANELS = 12


def spectra_figures(table: Table, records: list[dict], names: dict, colors) -> dict:
    """The normalised singular values s_k / Σ s per layer (rows of metric ``sv``, ``bin`` = k − 1), one line per
    method (mean over seeds, band from the lowest to the highest seed): a flatter class is a steeper curve."""
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
    keys = list(per)[:MAX_PANELS]  # a bounded figure: the rest are in the table and the files
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys) + 1.5, 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for m in [m for m in table.methods if m in per[key]]:
            seeds = per[key][m]
            ks = sorted({k for v in seeds.values() for k, val in v.items() if val > 0})  # log axis: s_k > 0 only
            vals = np.array([[seeds[s].get(k, np.nan) for k in ks] for s in seeds])
            c = color_of(table, m, colors)
            x = [k + 1 for k in ks]
            ax.plot(x, np.nanmean(vals, 0), "-o", ms=2.5, lw=1.3, color=c, label=plot_text(m))
            if len(vals) > 1:
                ax.fill_between(x, np.nanmin(vals, 0), np.nanmax(vals, 0), color=c, alpha=0.18, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("singular value index k"), ax.set_title(plot_text(labels[key]), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("s_k / Σ s (mean over classes)")
    axes[0][-1].legend(
        *axes[0][0].get_legend_handles_labels(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    fig.suptitle("Per-class singular values of the representations (steeper = flatter classes)", fontsize=10)
    return {"spectra": fig}
