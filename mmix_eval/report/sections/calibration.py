"""Calibration: reliability diagrams, before and after temperature scaling, one panel per method, large
enough to read, with each bin's image count. Imports no torch."""

from __future__ import annotations

import math

from mmix_eval.report.plots import color_of, plot_text, plt
from mmix_eval.report.sections.base import ReportSection, SectionContext

PANELS_PER_ROW = 5


class CalibrationSection(ReportSection):
    """NLL, ECE, MCE, Brier before and after temperature scaling; the reliability diagrams of each."""

    def figures(self, ctx: SectionContext) -> dict:
        out = super().figures(ctx)
        conditions = list(
            dict.fromkeys(
                r["condition"]
                for r in ctx.records
                if r["evaluator"] == self.evaluator and r["bin"] is not None and r["metric"] == "bin_count"
            )
        )
        for k, condition in enumerate(conditions):
            fig = reliability_figure(ctx, self.evaluator, condition)
            if fig is not None:
                out["reliability" if k == 0 else f"reliability-{condition}"] = fig
        return out


def _pooled(per_bin: dict) -> tuple[list, list, list, list]:
    """(bins, accuracy, mean confidence, image count) of the bins that hold images, each pooled over the runs,
    weighted by each run's count in the bin."""
    xs, accs, confs, counts = [], [], [], []
    for b in sorted(per_bin):
        runs = per_bin[b].values()
        n = sum(v.get("bin_count", 0.0) for v in runs)
        if n <= 0:
            continue
        accs.append(sum(v["bin_count"] * v["bin_acc"] for v in runs if v.get("bin_count")) / n)
        confs.append(sum(v["bin_count"] * v["bin_conf"] for v in runs if v.get("bin_count")) / n)
        counts.append(n)
        xs.append(b)
    return xs, accs, confs, counts


def reliability_figure(ctx: SectionContext, evaluator: str, condition: str):
    """Accuracy per confidence bin (bars; pooled over seeds, weighted by each run's count in the bin), the
    bins' mean confidence (dots), the diagonal, and each bin's image count at the foot of its bar."""
    bins: dict = {}  # method -> bin -> run -> {bin_count, bin_acc, bin_conf}
    label = None
    for r in ctx.records:
        if r["bin"] is not None and r["evaluator"] == evaluator and r["condition"] == condition:
            label = label or r["label"]
            bins.setdefault(ctx.labels[r["run"]], {}).setdefault(r["bin"], {}).setdefault(r["run"], {})[r["metric"]] = (
                r["value"]
            )
    methods = [m for m in ctx.table.methods if m in bins]
    if not methods:
        return None
    cols = min(PANELS_PER_ROW, len(methods))
    nrows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.7 * nrows), squeeze=False)
    for a, m in enumerate(methods):
        ax = axes[a // cols][a % cols]
        xs, accs, confs, counts = _pooled(bins[m])
        width = 1.0 / (max(bins[m]) + 1)
        ax.bar(
            [(b + 0.5) * width for b in xs],
            accs,
            width * 0.95,
            color=color_of(ctx.table, m),
            alpha=0.8,
            label="accuracy",
        )
        for b, n in zip(xs, counts):
            ax.text(
                (b + 0.5) * width, 0.015, f"{n:g}", ha="center", va="bottom", fontsize=6, rotation=90
            )  # inside the bar
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.scatter(confs, accs, s=12, color="k", zorder=3, label="(mean confidence, accuracy) of a bin")
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.set_xlabel("confidence"), ax.set_title(plot_text(m), fontsize=10)
        if a % cols == 0:
            ax.set_ylabel("accuracy")
    for a in range(len(methods), nrows * cols):
        axes[a // cols][a % cols].axis("off")
    fig.legend(
        *axes[0][0].get_legend_handles_labels(),
        fontsize=8,
        loc="lower center",
        ncol=3,
        bbox_to_anchor=(0.5, -0.04 / nrows),
    )  # below the panels: never over a bar
    fig.suptitle(
        plot_text(
            f"Reliability diagrams: {label or condition} ({evaluator}; pooled over seeds; the number "
            f"in a bar is its images)"
        ),
        fontsize=11,
    )
    fig.tight_layout()
    return fig
