"""The report's calibration figures every shift section shares: calibration under shift (Ovadia et al. 2019) and
the per-condition reliability diagrams, raw and after the post-hoc calibrator. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmix_eval.report.plots import (
    MAX_FIG_WIDTH,
    MAX_PLOT_CONDITIONS,
    choose_columns,
    color_of,
    cut_note,
    plot_text,
    plt,
)
from mmix_eval.report.table import Table


def calibration_under_shift(table: Table, section: str, colors, metrics=("nll", "brier")):
    """Ovadia et al. 2019's figure for one shift evaluator: each score against the shift strength where every
    condition has one (clean at 0; lines, raw dashed with open markers, after the post-hoc calibrator solid with
    filled ones), else per condition (markers side by side per method, open raw, filled calibrated: categories
    are not joined by lines). One colour per method. None when the section has fewer than two conditions."""
    panels = []
    for metric in metrics:
        rows = [i for i, r in enumerate(table.rows) if r.section == section and r.metric == metric]
        if len({table.rows[i].condition for i in rows}) >= 2:
            panels.append((metric, rows))
    if not panels:
        return None
    conds = list(dict.fromkeys(table.rows[i].condition for _, rows in panels for i in rows))
    strength = {table.rows[i].condition: table.rows[i].strength for _, rows in panels for i in rows}
    numeric = all(strength[c] is not None for c in conds if c != "clean")
    note = ""
    if not numeric and len(conds) > MAX_PLOT_CONDITIONS:  # categories: a bounded number of them
        note = cut_note(MAX_PLOT_CONDITIONS, len(conds))
        conds = conds[:MAX_PLOT_CONDITIONS]
        keep = set(conds)
        panels = [(metric, [i for i in rows if table.rows[i].condition in keep]) for metric, rows in panels]
    x_of = {c: (0.0 if c == "clean" else strength[c]) if numeric else float(k) for k, c in enumerate(conds)}
    width = min(MAX_FIG_WIDTH, max(6.0, 0.55 * len(conds) + 3) * len(panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.8), squeeze=False)
    calibrators = sorted({table.rows[i].calibrator for _, rows in panels for i in rows} - {"none"})
    for ax, (_metric, rows) in zip(axes[0], panels):
        for k, m in enumerate(table.methods):
            for cal in ["none", *calibrators]:
                pts = sorted(
                    (x_of[table.rows[i].condition], table.cells[i, m].mean)
                    for i in rows
                    if table.rows[i].calibrator == cal and (i, m) in table.cells
                )
                if pts:
                    raw = cal == "none"
                    if not numeric:  # side by side within each condition, raw left of calibrated
                        shift = (k - (len(table.methods) - 1) / 2) * 0.8 / max(len(table.methods), 1) / 2
                        pts = [(x + shift + (-0.04 if raw else 0.04), y) for x, y in pts]
                    ax.plot(
                        *zip(*pts),
                        ls=("--" if raw else "-") if numeric else "none",
                        marker="o",
                        mfc="white" if raw else color_of(table, m, colors),
                        color=color_of(table, m, colors),
                        lw=1.2 if raw else 1.8,
                    )
        label = table.rows[rows[0]].label.rsplit(": ", 1)[-1].split(",")[0]
        ax.set_ylabel(plot_text(label)), ax.set_title(plot_text(f"{label} under each condition"), fontsize=10)
        if numeric:
            ax.set_xlabel("shift strength (0 = clean; ε in /255 for FGSM)")
        else:
            ax.set_xticks(range(len(conds)), [plot_text(c) for c in conds], rotation=30, ha="right")
        ax.grid(alpha=0.3)
    fig.legend(
        handles=_shift_legend(table, colors, calibrators, numeric),
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.0, 0.95),
    )
    fig.suptitle(
        plot_text(f"{section}: calibration under shift, raw and calibrated (means over seeds){note}"), fontsize=11
    )
    fig.tight_layout()
    return fig


def _shift_legend(table: Table, colors, calibrators: list[str], numeric: bool) -> list:
    """One colour per method; open markers (dashed where numeric) raw, filled after each calibrator."""
    handles = [plt.Line2D([], [], color=color_of(table, m, colors), lw=2, label=plot_text(m)) for m in table.methods]
    handles += [
        plt.Line2D([], [], color="0.3", ls="--" if numeric else "none", marker="o", mfc="white", label="raw softmax")
    ]
    handles += [
        plt.Line2D(
            [], [], color="0.3", ls="-" if numeric else "none", marker="o", label=plot_text(f"after {c} scaling")
        )
        for c in calibrators
    ]
    return handles


MAX_RELIABILITY_CONDITIONS = 4  # rows of the per-condition reliability figure
MAX_RELIABILITY_METHODS = 6  # its columns


def pooled_bins(detail: dict, runs: list[str], evaluator: str, condition: str, calibrator: str):
    """(3, bins) sums over the runs' stored reliability bins of one condition (count, correct, confidence), or
    None where no run has them (or the runs' bin counts differ)."""
    got = [
        v[2] for r in runs if (v := detail.get((r, evaluator, condition, calibrator))) is not None and v[2] is not None
    ]
    if not got or len({g.shape for g in got}) != 1:
        return None
    return sum(g.astype(float) for g in got)


def pick_conditions(conditions: list[str], k: int) -> list[str]:
    """At most ``k`` of the conditions, evenly spaced, the first (clean) and the last (the strongest) kept."""
    if len(conditions) <= k:
        return conditions
    return [conditions[round(j * (len(conditions) - 1) / (k - 1))] for j in range(k)]


def reliability_by_condition(
    table: Table, detail: dict, evaluator: str, colors, baseline: str | None = None, chosen: list[str] | None = None
):
    """Per condition (rows) and method (columns): the reliability diagram raw (open bars) and after the post-hoc
    calibrator (filled), the diagonal, and under it the confidence histogram of both (the bins' image counts,
    pooled over seeds). At most ``MAX_RELIABILITY_METHODS`` columns (``choose_columns``: the baseline and the user's
    own always, or the ``chosen`` ones). None without stored reliability bins for this evaluator."""
    conds = list(dict.fromkeys(c for (_, e, c, _) in detail if e == evaluator))
    order = {r.condition: k for k, r in reversed(list(enumerate(table.rows))) if r.evaluator in (evaluator, None)}
    conds.sort(key=lambda c: order.get(c, len(order)))
    methods = [
        m
        for m in table.methods
        if any(
            pooled_bins(detail, list(table.runs.get(m, {}).values()), evaluator, c, "none") is not None for c in conds
        )
    ]
    if not conds or not methods:
        return None
    keep = choose_columns(table, MAX_RELIABILITY_METHODS, baseline, chosen)
    shown, shown_m = pick_conditions(conds, MAX_RELIABILITY_CONDITIONS), [m for m in methods if m in keep]
    if not shown_m:
        return None
    calibrators = sorted({cal for (_, e, _, cal) in detail if e == evaluator} - {"none"})
    cal = calibrators[0] if calibrators else None
    labels = {r.condition: r.label.rsplit(": ", 1)[0] for r in table.rows if r.evaluator in (evaluator, None)}
    fig = plt.figure(figsize=(min(MAX_FIG_WIDTH, 2.9 * len(shown_m) + 0.6), 3.3 * len(shown)))
    outer = fig.add_gridspec(len(shown), len(shown_m), hspace=0.3, wspace=0.28)
    for a, c in enumerate(shown):
        for b, m in enumerate(shown_m):
            _reliability_panel(
                fig,
                outer[a, b],
                Panel(table, detail, evaluator, c, m, cal, colors),
                (a == 0, b == 0, a == len(shown) - 1),
                labels.get(c, c),
            )
    cut = []
    if len(conds) > len(shown):
        cut.append(f"{len(shown)} of {len(conds)} conditions, evenly spaced")
    if len(methods) > len(shown_m):
        cut.append(
            f"{len(shown_m)} of {len(methods)} columns: "
            + ("those of report.plot_columns" if chosen else "the baseline, your own, then the first others")
        )
    after = f"filled: after {cal} scaling" if cal else "no calibrated rows"
    fig.suptitle(
        plot_text(
            f"{evaluator}: reliability per condition, pooled over seeds\ndashed/open: raw; {after}; "
            f"under each, the share of images per confidence bin"
            + (f"\n[{'; '.join(cut)}; every condition's bins are in outcomes.npz]" if cut else "")
        ),
        fontsize=9,
        va="bottom",
        y=0.88 + 0.3 / fig.get_figheight(),
    )  # above the column titles (the grid ends at 0.88)
    return fig


@dataclass(frozen=True)
class Panel:
    """One panel of the per-condition reliability figure: a condition of an evaluator, a method's runs, the
    calibrator drawn filled (None: raw only)."""

    table: Table
    detail: dict
    evaluator: str
    condition: str
    method: str
    calibrator: str | None
    colors: tuple


def _reliability_panel(fig, cell_spec, p: Panel, edge: tuple[bool, bool, bool], label: str) -> None:
    """The reliability diagram (raw dashed, calibrated filled) over the confidence histogram, in one grid cell;
    ``edge``: (first row, first column, last row), which carry the titles and axis labels."""
    first_row, first_col, last_row = edge
    runs = list(p.table.runs.get(p.method, {}).values())
    inner = cell_spec.subgridspec(2, 1, height_ratios=[3, 1], hspace=0.06)
    ax, hx = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
    color = color_of(p.table, p.method, p.colors)
    for which, filled in (("none", False), (p.calibrator, True)):
        got = pooled_bins(p.detail, runs, p.evaluator, p.condition, which) if which else None
        if got is None:
            continue
        count, hits, _ = got
        k = len(count)
        edges = np.arange(k + 1) / k
        acc = np.divide(hits, count, out=np.zeros(k), where=count > 0)  # an empty bin drawn at 0
        # one step artist per curve (not a bar per bin): 24 panels of bars made this figure the report's slowest
        ax.stairs(
            acc, edges, fill=filled, color=color, alpha=0.55 if filled else 1.0, lw=1.0, ls="-" if filled else "--"
        )
        hx.stairs(
            count / max(count.sum(), 1), edges, color=color, ls="-" if filled else "--", lw=1.4 if filled else 1.0
        )
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.set_xticks([])
    hx.set_xlim(0, 1), hx.set_ylim(0, None)
    hx.tick_params(labelsize=7), ax.tick_params(labelsize=7)
    if first_row:
        ax.set_title(plot_text(p.method), fontsize=9)
    if first_col:
        ax.set_ylabel(plot_text(label)[:28] + "\naccuracy", fontsize=8)
        hx.set_ylabel("share", fontsize=7)
    else:
        ax.set_yticklabels([])
    if last_row:
        hx.set_xlabel("confidence", fontsize=8)
    else:
        hx.set_xticks([])
