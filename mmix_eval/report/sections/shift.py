"""Natural shift: accuracy on the line (Miller et al. 2021) and effective robustness (Taori et al. 2020).

Across all checkpoints of the report (every method and seed), shift accuracy is close to a linear function of
clean accuracy once both are probit-transformed (Φ⁻¹ of the accuracy as a fraction). Per shift set, the line
is the least-squares fit Φ⁻¹(shift) = a·Φ⁻¹(clean) + b over those checkpoints; a checkpoint's effective
robustness is its shift accuracy minus the line's prediction at its clean accuracy, in percentage points
(positive: more robust than its clean accuracy predicts). The line is fitted on the checkpoints being
compared, not on an external testbed of models, so effective robustness says how a method sits relative to
the others here; with fewer than 3 checkpoints of different clean accuracy there is no line. Imports no torch.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from mmix_eval.evaluate.records import calibrator_of
from mmix_eval.report.plots import COLORS, plot_text, plt
from mmix_eval.report.sections.base import ReportSection, SectionContext, add_row
from mmix_eval.report.table import Row

_N = NormalDist()
MAX_PANELS = 6
TICKS = (1, 5, 10, 20, 30, 50, 70, 80, 90, 95, 99)


def probit(acc_percent: float) -> float:
    return _N.inv_cdf(min(max(acc_percent / 100.0, 1e-4), 1 - 1e-4))


def points(records: list[dict], labels: dict[str, str], evaluator: str = "shift") -> dict:
    """set -> [(method label, seed, clean acc %, shift acc %)], one point per checkpoint."""
    clean, shifted, seeds = {}, {}, {}
    for r in records:
        if (
            r["evaluator"] != evaluator
            or r["metric"] != "acc"
            or r["bin"] is not None
            or r["value"] is None
            or calibrator_of(r) != "none"
            or not np.isfinite(r["value"])
        ):
            continue
        seeds[r["run"]] = r["train_seed"] if r["train_seed"] is not None else r["run"]
        if r["condition"] == "clean":  # keyed by run: one point per checkpoint
            clean[r["run"]] = r["value"]
        else:
            shifted.setdefault(r["condition"], {})[r["run"]] = r["value"]
    return {
        s: [(labels[run], seeds[run], clean[run], v) for run, v in per.items() if run in clean]
        for s, per in shifted.items()
    }


def fit_line(pts) -> tuple[float, float] | None:
    """(slope, intercept) of Φ⁻¹(shift) on Φ⁻¹(clean), least squares; None with < 3 distinct clean accuracies."""
    x = np.array([probit(c) for _, _, c, _ in pts])
    if len(pts) < 3 or len(set(np.round(x, 12))) < 3:
        return None
    y = np.array([probit(v) for _, _, _, v in pts])
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def predicted(line: tuple[float, float], clean: float) -> float:
    return 100.0 * _N.cdf(line[0] * probit(clean) + line[1])


class ShiftSection(ReportSection):
    """Effective robustness rows in the comparison, and the accuracy-on-the-line figure."""

    def add_rows(self, ctx: SectionContext) -> list[str]:
        table, notes, none = ctx.table, [], []
        for s, pts in points(ctx.records, ctx.labels, self.evaluator).items():
            line = fit_line(pts)
            if line is None:
                none.append(s)
                continue
            values: dict = {}
            for m, seed, c, v in pts:
                values.setdefault(m, {})[seed] = v - predicted(line, c)
            head = next(
                (
                    i
                    for i, r in enumerate(table.rows)
                    if r.section == "comparison"
                    and r.evaluator == self.evaluator
                    and r.condition == s
                    and r.metric == "acc"
                    and r.calibrator == "none"
                ),
                None,
            )
            add_row(
                table,
                Row(
                    self.evaluator,
                    s,
                    "eff_rob",
                    f"{s}: effective robustness (pp above the line)",
                    "higher",
                    ".2f",
                    "comparison",
                ),
                values,
                head,
            )
            notes.append(
                f"{s}: probit fit over {len(pts)} checkpoints, Φ⁻¹(shift) = {line[0]:.3f}·Φ⁻¹(clean) "
                f"{'+' if line[1] >= 0 else '−'} {abs(line[1]):.3f}."
            )
        if notes:
            notes.insert(
                0,
                "Effective robustness: a checkpoint's shift accuracy minus the accuracy-on-the-line prediction "
                "at its clean accuracy, in percentage points (Taori et al. 2020; the line is the least-squares "
                "fit on probit axes over this report's checkpoints, Miller et al. 2021; fitted on the models "
                "being compared, not an external testbed).",
            )
        if none:
            notes.append(
                f"No accuracy-on-the-line fit for {', '.join(none)}: it needs at least 3 checkpoints of "
                f"different clean accuracy."
            )
        return notes

    def figures(self, ctx: SectionContext) -> dict:
        out = super().figures(ctx)
        fig = line_figure(points(ctx.records, ctx.labels, self.evaluator), ctx.table.methods)
        if fig is not None:
            out["shift-accuracy-on-the-line"] = fig
        return out


def line_figure(per_set: dict, methods: list[str]):
    """One panel per shift set: each checkpoint's (clean, shift) accuracy on probit axes, the fitted line, y = x."""
    sets = list(per_set)[:MAX_PANELS]
    if not sets:
        return None
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets) + 1.8, 4.2), squeeze=False)
    colour = {m: COLORS[k % len(COLORS)] for k, m in enumerate(methods)}
    for ax, s in zip(axes[0], sets):
        pts = per_set[s]
        xs = [probit(c) for _, _, c, _ in pts]
        ys = [probit(v) for _, _, _, v in pts]
        lo, hi = min(xs + ys) - 0.25, max(xs + ys) + 0.25
        ax.plot([lo, hi], [lo, hi], ls=":", color="grey", lw=1, label="y = x (no drop)")
        line = fit_line(pts)
        if line is not None:
            ax.plot(
                [lo, hi],
                [line[0] * lo + line[1], line[0] * hi + line[1]],
                color="black",
                lw=1.2,
                label="linear fit (probit axes)",
            )
        for m in methods:
            mine = [(x, y) for (mm, *_), x, y in zip(pts, xs, ys) if mm == m]
            if mine:
                ax.scatter(*zip(*mine), color=colour[m], s=26, label=plot_text(m), zorder=3)
        ticks = [t for t in TICKS if lo <= probit(t) <= hi] or [TICKS[len(TICKS) // 2]]
        for set_ticks, set_labels in ((ax.set_xticks, ax.set_xticklabels), (ax.set_yticks, ax.set_yticklabels)):
            set_ticks([probit(t) for t in ticks])
            set_labels([str(t) for t in ticks])
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("clean test accuracy (%, probit scale)")
        ax.set_ylabel(f"{plot_text(s)} accuracy (%, probit scale)")
        ax.set_title(plot_text(s), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    cut = f" (first {MAX_PANELS} of {len(per_set)} sets; all in the table)" if len(per_set) > MAX_PANELS else ""
    fig.suptitle(f"Accuracy on the line: one point per checkpoint{cut}", fontsize=10)
    fig.tight_layout()
    return fig
