"""Plots of the report: matplotlib figures (Agg), each written as PNG (embedded in the HTML) and PDF (for a
paper), without metadata, so the same records give byte-identical files. User strings are drawn literally
(no mathtext, no legend-hiding leading underscore). The evaluator sections add their own figures
(``sections/``); the shift and sweep plots every section shares are here. Imports no torch."""

from __future__ import annotations

import io
import math
from concurrent.futures import BrokenExecutor

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend: no display needed)

from mmix_eval.io import safe_name  # noqa: E402
from mmix_eval.report.sweep import cell, key_of, plotted_rows, sweep_views  # noqa: E402
from mmix_eval.report.table import Table  # noqa: E402

# 20 distinct colours: tab10, then the darker half of tab20b (other hues and shades), so that 20 columns never
# share one (vanilla and the eleventh column were both blue).
COLORS = tuple(plt.get_cmap("tab10").colors) + tuple(
    plt.get_cmap("tab20b").colors[k] for k in (0, 4, 8, 12, 16, 2, 6, 10, 14, 18)
)


def color_of(table: Table, column: str, colors=COLORS):
    """A column's colour, the same in every figure (its position among the table's columns)."""
    return colors[table.methods.index(column) % len(colors)]


def choose_columns(table: Table, k: int, baseline: str | None = None, chosen: list[str] | None = None) -> list[str]:
    """The columns a figure that shows at most ``k`` of them draws, in table order: the ones ``chosen`` (the report's
    ``plot_columns``) when given; else the baseline and every column of the user's own (a plugin method, or a
    label the user gave) first, then the others in table order until ``k``. The must-have columns are all kept even
    beyond ``k``."""
    from mmix_eval.catalog import METHODS

    if chosen:
        return [m for m in table.methods if m in chosen]
    builtin = set(METHODS.builtin())
    own = [
        m
        for m in table.methods
        if m == baseline
        or table.info.get(m, (m, {}))[0] not in builtin
        or (m != table.info.get(m, (m, {}))[0] and not table.sweeps.get(m) and "ensemble" not in m)
    ]
    rest = [m for m in table.methods if m not in own]
    keep = set(own + rest[: max(0, k - len(own))])
    return [m for m in table.methods if m in keep]


def plot_text(s) -> str:
    """A user string drawn literally: '$' is not mathtext, and a leading '_' does not hide a legend entry."""
    s = str(s).replace("$", r"\$")
    return "\u200b" + s if s.startswith("_") else s


def figure_files(name: str, fig, pdf: bool = False) -> dict[str, bytes]:
    """``name``.png (and with ``pdf`` ``name``.pdf, for a paper: a third of a report's build time) of a figure,
    without the metadata (software, dates) that would make two builds of the same records differ; the figure is
    closed."""
    out = {}
    # the tight box once for both formats (bbox_inches="tight" draws the figure an extra time per format)
    fig.draw_without_rendering()  # layout only: no pixels
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    formats = (("png", {"Software": None}), ("pdf", {"Creator": None, "Producer": None, "CreationDate": None}))
    for ext, meta in formats if pdf else formats[:1]:
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=110, bbox_inches=box, metadata=meta)
        out[f"{name}.{ext}"] = buf.getvalue() if ext == "pdf" else _palette_png(buf.getvalue())
    plt.close(fig)
    return out


class Renderer:
    """Draws figures to files: here, one after the other (``figure_files``), or, given a process pool (the bench's
    workers, idle once every run is done), in those processes while this one goes on building the tables: a figure
    is pickled (matplotlib supports it) and drawn there; the same bytes as here (a test checks). A figure that does
    not pickle (a plugin section's own artists) is drawn here. A report section's figures are made in the pool too
    (``add_section``). ``files()`` waits for every figure, in order; what a dead worker did not draw is drawn here."""

    def __init__(self, pdf: bool = False, pool=None):
        self.pdf, self.pool, self._parts = pdf, pool, []
        self._context = None  # (context, its pickle): pickled once for every section

    def add_section(self, section, ctx) -> None:
        """A report section's figures (``figures(ctx)``, checked by ``call_section``): made and drawn in the pool
        where the section and its context pickle (making them took 1-2 s of the bench's report in this process,
        while the workers waited), else made here."""
        import pickle

        if self.pool is not None:
            try:
                if self._context is None or self._context[0] is not ctx:
                    self._context = (ctx, pickle.dumps(ctx))
                future = self.pool.submit(_section_files, pickle.dumps(section), self._context[1], self.pdf)
                self._parts.append((future, lambda: section_figure_files(section, ctx, self.pdf)))
                return
            except Exception:  # noqa: BLE001  (a section or context that does not pickle, a dead pool: made here)
                pass
        self._parts.append(section_figure_files(section, ctx, self.pdf))

    def add(self, name: str, fig) -> None:
        if self.pool is not None:
            import pickle

            try:
                blob = pickle.dumps(fig)
            except Exception:  # noqa: BLE001  (any unpicklable artist: drawn in this process)
                blob = None
            if blob is not None:
                plt.close(fig)
                try:
                    self._parts.append(
                        (
                            self.pool.submit(_draw_pickled, name, blob, self.pdf),
                            lambda: _draw_pickled(name, blob, self.pdf),
                        )
                    )
                except BrokenExecutor:  # a worker died (killed, out of memory): drawn here
                    self._parts.append(_draw_pickled(name, blob, self.pdf))
                return
        self._parts.append(figure_files(name, fig, self.pdf))

    def files(self) -> dict[str, bytes]:
        out = {}
        for part in self._parts:
            if isinstance(part, dict):
                out.update(part)
                continue
            future, here = part
            try:
                out.update(future.result())
            except BrokenExecutor:  # a worker died: drawn here
                out.update(here())
        return out


def section_figure_files(section, ctx, pdf: bool) -> dict[str, bytes]:
    """A report section's figures (``figures(ctx)``, checked by ``call_section``), made and drawn to files."""
    from mmix_eval.report.sections.call import call_section  # at call time: the sections import this module

    out = {}
    for name, fig in call_section(section, "figures", ctx, dict).items():
        out.update(figure_files(name, fig, pdf))
    return out


def _section_files(section_blob: bytes, context_blob: bytes, pdf: bool) -> dict[str, bytes]:
    """In a worker: ``section_figure_files`` of a pickled section and context."""
    import pickle

    section, ctx = pickle.loads(section_blob), pickle.loads(context_blob)  # noqa: S301  (this bench's own pickles)
    return section_figure_files(section, ctx, pdf)


def _draw_pickled(name: str, blob: bytes, pdf: bool) -> dict[str, bytes]:
    import pickle

    return figure_files(name, pickle.loads(blob), pdf)  # noqa: S301  (a figure this bench's own process pickled)


def _palette_png(data: bytes) -> bytes:
    """The PNG with 256 median-cut colours, no dithering: a plot has few colours, and the HTML report embeds every
    PNG (a 24-panel figure 241 KB -> 86 KB; the committed CIFAR report.html was 2.9 MB). Deterministic."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").quantize(
        256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    ).save(out, "PNG", optimize=True)
    return out.getvalue()


def fig_png(fig) -> bytes:
    """One figure as PNG bytes (for callers outside the report, like the spiral demo); the figure is closed."""
    return figure_files("figure", fig)["figure.png"]


MAX_PLOT_CONDITIONS = 30  # categories on one axis; more are cut (said in the title), the files keep them all
MAX_FIG_WIDTH = 18.0  # inches (1,980 px at the report's 110 dpi): a figure grows with its conditions up to this


def cut_note(shown: int, total: int) -> str:
    return f" [first {shown} of {total:,} conditions; all in table.csv]" if total > shown else ""


def series(table: Table, idx: list[int], m: str) -> tuple[list[float], list[float]]:
    means = [table.cells[i, m].mean if (i, m) in table.cells else math.nan for i in idx]
    errs = [(table.cells[i, m].std or 0.0) if (i, m) in table.cells else 0.0 for i in idx]
    return means, errs


def line_or_bars(ax, table: Table, idx: list[int], colors, ylabel: str, title: str) -> None:
    """One line per method against the shift strength when every shifted row has one (clean at 0), else
    grouped bars per condition."""
    numeric = all(table.rows[i].strength is not None for i in idx if table.rows[i].condition != "clean")
    total = len(idx)
    if not numeric:  # bars: one group per condition, so a bounded number of them
        idx = idx[:MAX_PLOT_CONDITIONS]
        title += cut_note(len(idx), total)
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
                means, errs = series(table, line, m)
                xs = [0.0 if table.rows[i].condition == "clean" else table.rows[i].strength for i in line]
                label = plot_text(m if len(groups) == 1 else f"{m} ({attack})")
                ax.errorbar(
                    xs,
                    means,
                    yerr=errs,
                    marker="o",
                    capsize=3,
                    label=label,
                    color=color_of(table, m, colors),
                    linestyle=("-", "--", ":", "-.")[g % 4],
                )
        else:
            means, errs = series(table, idx, m)
            w = 0.8 / len(table.methods)
            xs = [j + (k - (len(table.methods) - 1) / 2) * w for j in range(len(idx))]
            ax.bar(xs, means, w, yerr=errs, capsize=2, label=plot_text(m), color=color_of(table, m, colors))
    if numeric:
        ax.set_xlabel("shift strength (0 = clean; ε in /255 for FGSM; the official code's: its channels' mean)")
    else:
        ax.set_xticks(range(len(idx)), [plot_text(table.rows[i].condition) for i in idx], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over data


def sweep_figures(table: Table, colors) -> dict:
    """Per swept key, each plotted metric against the swept value: one line per method (mean ± std over seeds),
    methods that do not take the key as dashed reference lines, the paper's Table 5 as grey crosses."""
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
            _sweep_panel(ax, table, view, i, xs, colors, handles)
            if numeric and min(view.values) > 0 and max(view.values) / min(view.values) >= 8:
                ax.set_xscale("log", base=2)
            ax.set_xticks(
                xs,
                [plot_text(view.value_text(v).split("=", 1)[-1]) for v in view.values],
                rotation=0 if numeric else 20,
            )
            ax.set_title(plot_text(table.rows[i].label), fontsize=9)
            ax.grid(alpha=0.3)
        for a in range(len(idx), nrows * cols):
            axes[a // cols][a % cols].axis("off")
        fig.supxlabel(plot_text(view.key))
        fig.legend(
            list(handles.values()),
            [plot_text(h) for h in handles],
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.0, 0.95),
        )
        fig.suptitle(plot_text(f"Sweep over {view.key} (mean ± std over seeds)"))
        fig.tight_layout()
        out[f"sweep-{safe_name(view.key)}"] = fig
    return out


def _sweep_panel(ax, table: Table, view, i: int, xs: list, colors, handles: dict) -> None:
    """One row's panel: a line per method over the swept values, the paper's numbers as grey crosses, and the
    methods that do not take the key as dashed lines (``handles``: one legend entry per name)."""
    for k, s in enumerate(view.series):
        cs = [cell(table, i, s.columns.get(key_of(v))) for v in view.values]
        ys = [c[0] if c else math.nan for c in cs]
        es = [(c[1] or 0.0) if c else 0.0 for c in cs]
        h = ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colors[k % len(colors)], label=plot_text(s.name))
        handles.setdefault(s.name, h)
        got = view.paper.get((i, s.name))
        if got:
            px = [x for x, v in zip(xs, view.values) if key_of(v) in got]
            py = [got[key_of(v)] for v in view.values if key_of(v) in got]
            h = ax.plot(px, py, "x", color="0.45", ms=8, label="paper (Table 5)")[0]
            handles.setdefault("paper (Table 5)", h)
    for k, m in enumerate(view.fixed, start=len(view.series)):
        c = cell(table, i, m)
        if c is not None:
            h = ax.axhline(c[0], ls="--", lw=1.2, color=colors[k % len(colors)], label=plot_text(f"{m} (not swept)"))
            handles.setdefault(f"{m} (not swept)", h)


def training_curves(table: Table, costs: dict, colors=COLORS):
    """The training loss per epoch of every run: one colour per column, each seed a thin line (log scale): did every
    method converge? None without any run's curve."""
    drawn = [
        (m, run, (costs.get(run) or {}).get("loss_curve"))
        for m in table.methods
        for run in table.runs.get(m, {}).values()
    ]
    drawn = [(m, run, c) for m, run, c in drawn if c]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    labelled = set()
    for m, _, curve in drawn:
        ax.plot(
            range(1, len(curve) + 1),
            curve,
            lw=0.9,
            alpha=0.8,
            color=color_of(table, m, colors),
            label=None if m in labelled else plot_text(m),
        )
        labelled.add(m)
    if all(v > 0 for _, _, c in drawn for v in c):
        ax.set_yscale("log")
    ax.set_xlabel("epoch"), ax.set_ylabel("training loss (the method's own objective)")
    ax.set_title("Training curves: one line per run (seed), one colour per method", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
