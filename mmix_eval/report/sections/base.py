"""The report-section interface: what one evaluator contributes to a report beyond its rows of the table.

A section is found by the evaluator's name (``sections.section_for``); an evaluator with no section of its
own gets ``ReportSection`` itself, the generic one: its headline metric under each condition as a plot
(one line per method against the shift strength, or bars per condition), and its ECE under each condition
when it has one. A section may add derived rows (corruption errors against the baseline), notes (the
gradient-masking check) and figures (reliability diagrams, histograms, spectra). Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmix_eval.report.plots import COLORS, MAX_FIG_WIDTH, line_or_bars, plot_text, plt
from mmix_eval.report.plots_calibration import calibration_under_shift, reliability_by_condition
from mmix_eval.report.table import Row, Table


class Note(str):
    """A note for the top of the report with its level: ``warning`` (the default for a plain string: drawn as a
    problem, bold red) or ``info`` (a neutral statement, e.g. which baseline was chosen)."""

    def __new__(cls, text: str, level: str = "warning"):
        obj = super().__new__(cls, text)
        obj.level = level if level in ("warning", "info") else "warning"
        return obj


def note_level(note) -> str:
    return getattr(note, "level", "warning")


@dataclass
class SectionContext:
    table: Table
    records: list[dict]  # every record of the report, bins and detail rows included
    labels: dict[str, str]  # run -> column label
    baseline: str | None
    # (run, evaluator, condition, calibrator) -> (indices, bootstrap replicates, reliability bins): evaluate.outcomes
    detail: dict = field(default_factory=dict)
    plot_columns: list[str] | None = None  # the columns a figure that cannot show them all draws (report.plot_columns)


class ReportSection:
    """One evaluator's section. Subclasses override what they add; every method has a working default."""

    def __init__(self, evaluator: str):
        self.evaluator = evaluator

    @property
    def title(self) -> str:
        return f"{self.evaluator}: every metric per condition"

    def add_rows(self, ctx: SectionContext) -> list[str]:
        """Derived rows added to ``ctx.table`` (cells per seed); returns the notes that explain them."""
        return []

    def notes(self, ctx: SectionContext) -> list[str]:
        """Findings stated at the top of the report (a failed sanity check, say): plain strings are warnings; a
        ``Note(text, "info")`` is drawn as a neutral statement."""
        return []

    def headline_rows(self, table: Table) -> list[int]:
        """This evaluator's rows of the main comparison (its headline metric under each condition)."""
        return [i for i, r in enumerate(table.rows) if r.section == "comparison" and r.evaluator == self.evaluator]

    def figures(self, ctx: SectionContext) -> dict:
        """name (no extension) -> matplotlib figure."""
        from mmix_eval.io import safe_name

        table, out, stem = ctx.table, {}, safe_name(str(self.evaluator))
        head = self.headline_rows(table)
        clean = next(
            (
                i
                for i, r in enumerate(table.rows)
                if (r.evaluator, r.condition, r.metric) == (None, "clean", "acc") and r.section == "comparison"
            ),
            None,
        )
        if head:  # the headline metrics under each shift, clean first, one panel per metric on an axis of its unit
            by_metric: dict = {}
            for i in head:
                by_metric.setdefault(table.rows[i].metric, []).append(i)
            panels = [
                ([clean] if clean is not None and metric == "acc" else []) + rows for metric, rows in by_metric.items()
            ]
            width = min(MAX_FIG_WIDTH, sum(max(6.0, 0.9 * len(idx) + 2) for idx in panels))
            fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.6), squeeze=False)
            for k, (ax, idx) in enumerate(zip(axes[0], panels)):
                ylabel = plot_text(table.rows[idx[-1]].label.rsplit(": ", 1)[-1])
                if len(panels) == 1:
                    line_or_bars(
                        ax, table, idx, COLORS, ylabel, f"{plot_text(self.evaluator)}: {ylabel} under each condition"
                    )
                    continue
                line_or_bars(ax, table, idx, COLORS, ylabel, ylabel.split(" (")[0])
                ax.title.set_fontsize(9)
                if k < len(panels) - 1:
                    ax.get_legend().remove()  # one legend, right of the last panel
            if len(panels) > 1:
                fig.suptitle(
                    f"{plot_text(self.evaluator)}: each headline metric under each condition, on its own axis "
                    f"(mean ± std over seeds)",
                    fontsize=10,
                )
                fig.tight_layout()
            out[stem] = fig
        if head:  # a shift evaluator: Ovadia et al. 2019's question, raw and after the calibrator
            fig = calibration_under_shift(table, self.evaluator, COLORS)
            if fig is not None:
                out[f"{stem}-calibration"] = fig
            fig = reliability_by_condition(table, ctx.detail, self.evaluator, COLORS, ctx.baseline, ctx.plot_columns)
            if fig is not None:
                out[f"{stem}-reliability"] = fig
        return out


def add_row(table: Table, row: Row, values: dict, after: int | None = None) -> int:
    """Append ``row`` with ``values`` (column -> {seed: value}) to ``table``, placed in its section after row
    ``after`` (at the end without one); a section not in the table yet is appended."""
    from mmix_eval.report.table import Cell

    table.rows.append(row)
    i = len(table.rows) - 1
    for m, v in values.items():
        table.cells[i, m] = Cell(v)
    for key, _, idx in table.sections:
        if key == row.section:
            idx.insert(idx.index(after) + 1 if after is not None and after in idx else len(idx), i)
            return i
    table.sections.append((row.section, f"{row.section}: every metric per condition", [i]))
    return i
