"""Corruption errors against the report's baseline (Hendrycks & Dietterich, ICLR 2019), from records alone.

A record whose settings carry ``corruption`` and ``severity`` is per-severity detail: kept in the records,
plotted, and used here, but not a table row (the evaluator's per-corruption means are). With E the top-1
error in %, for a method and one training seed:

    CE_c  = Σ_s E_{c,s} / Σ_s Ē^base_{c,s}                        (Hendrycks' CE with the baseline for AlexNet)
    mCE   = 100 · mean_c CE_c
    relative mCE = 100 · mean_c [ Σ_s (E_{c,s} − E_clean) / Σ_s (Ē^base_{c,s} − Ē^base_clean) ]

Ē^base is the baseline's error averaged over its seeds, a fixed reference like AlexNet's; so the baseline's
own mCE is 100 on average and varies over its seeds. Only pairs (c, s) every method has are used. Imports no
torch.
"""

from __future__ import annotations

import math

import numpy as np

from mmix_eval.evaluate.records import calibrator_of
from mmix_eval.report.plots import COLORS, color_of, plot_text, plt
from mmix_eval.report.sections.base import ReportSection, SectionContext, add_row
from mmix_eval.report.table import Row, Table, is_detail


class CorruptionsSection(ReportSection):
    """Common corruptions: mCE and relative mCE against the baseline in the main comparison, each corruption's
    CE in the section, accuracy and ECE by severity, and a corruption x severity heatmap against the baseline."""

    def add_rows(self, ctx: SectionContext) -> list[str]:
        """mCE, relative mCE and each corruption's CE against ``baseline`` (see the module's docstring), as table rows:
        mCE and relative mCE in the comparison after the corruption headline, every CE in the evaluator's section."""
        table, records, baseline = ctx.table, ctx.records, ctx.baseline
        if baseline not in table.methods:
            return []
        res = corruption_errors(records, ctx.labels, baseline)
        if res is None:
            return []
        e = next(iter(res.values()))["evaluator"]
        missing = [m for m in table.methods if m not in res]

        def add(section: str, condition: str, metric: str, label: str, values: dict, after: int | None = None):
            return add_row(table, Row(e, condition, metric, label, "lower", ".1f", section), values, after)

        head = next(
            (
                i
                for i, r in enumerate(table.rows)
                if r.section == "comparison" and r.evaluator == e and r.condition == "mean" and r.metric == "acc"
            ),
            None,
        )
        i = add(
            "comparison",
            "mean",
            "mce",
            f"{e}: mCE (% of {baseline}'s errors)",
            {m: r["mce"] for m, r in res.items()},
            head,
        )
        add(
            "comparison",
            "mean",
            "rel_mce",
            f"{e}: relative mCE (% of {baseline}'s degradation)",
            {m: r["rel_mce"] for m, r in res.items()},
            i,
        )
        last = None
        for c in next(iter(res.values()))["ce"]:
            last = add(e, c, "ce", f"{c}: CE (% of {baseline}'s errors)", {m: r["ce"][c] for m, r in res.items()}, last)
        note = (
            f"Corruption errors: CE_c = Σ_s E_c,s / Σ_s E_c,s of {baseline} (its mean over seeds), mCE = mean over "
            f"corruptions, relative mCE from the drop below clean accuracy (Hendrycks & Dietterich 2019, with "
            f"{baseline} in place of AlexNet)."
        )
        undefined = res_undefined(res)
        if undefined:
            note += (
                f" Relative mCE is undefined (n/a) where {baseline}'s error under a corruption is not above its clean "
                f"error (a non-positive denominator): {', '.join(undefined)}."
            )
        return [note] + ([f"No corruption errors for {', '.join(missing)} (no corruption records)."] if missing else [])

    def figures(self, ctx: SectionContext) -> dict:
        return {**super().figures(ctx), **corruption_figures(ctx.table, ctx.records, ctx.labels, ctx.baseline, COLORS)}


def res_undefined(res: dict) -> list[str]:
    """The corruptions whose relative CE has no denominator (see ``corruption_errors``)."""
    return sorted({c for r in res.values() for c in r.get("undefined", ())})


def errors(records: list[dict], labels: dict[str, str]) -> tuple[dict, dict, str | None]:
    """(label -> seed -> (corruption, severity) -> error %, label -> seed -> clean error %, evaluator)."""
    det: dict = {}
    clean: dict = {}
    evaluator = None
    for r in records:
        if r["bin"] is not None or r["metric"] != "acc" or r["value"] is None:
            continue
        seed = r["train_seed"] if r["train_seed"] is not None else r["run"]
        lab = labels[r["run"]]
        if is_detail(r):
            evaluator = evaluator or r["evaluator"]
            s = r["settings"]
            det.setdefault(lab, {}).setdefault(seed, {})[(s["corruption"], int(s["severity"]))] = 100.0 - r["value"]
    for r in records:
        if r["evaluator"] == evaluator and r["condition"] == "clean" and r["metric"] == "acc" and r["bin"] is None:
            seed = r["train_seed"] if r["train_seed"] is not None else r["run"]
            clean.setdefault(labels[r["run"]], {})[seed] = 100.0 - r["value"]
    return det, clean, evaluator


def corruption_errors(records: list[dict], labels: dict[str, str], baseline: str) -> dict | None:
    """label -> {"mce": {seed: v}, "rel_mce": {seed: v}, "ce": {corruption: {seed: v}}}; None without detail
    rows or without the baseline among them."""
    det, clean, evaluator = errors(records, labels)
    if baseline not in det:
        return None
    # sorted: a set of (corruption, severity) iterates in a hash order that changes between processes, and
    # float sums in another order differ in the last digits; the same records must give the same files
    keys = sorted(set.intersection(*(set(k) for per in det.values() for k in per.values())))
    if not keys:
        return None
    order = {
        c: k
        for k, c in enumerate(dict.fromkeys((r["settings"] or {}).get("corruption") for r in records if is_detail(r)))
    }
    corruptions = sorted({c for c, _ in keys}, key=lambda c: order.get(c, len(order)))
    mean = lambda vs: sum(vs) / len(vs)
    ref = {k: mean([per[k] for per in det[baseline].values()]) for k in keys}
    ref_clean = mean(list(clean[baseline].values())) if clean.get(baseline) else None
    out = {}
    for lab, seeds in det.items():
        res: dict = {
            "mce": {},
            "rel_mce": {},
            "ce": {c: {} for c in corruptions},
            "evaluator": evaluator,
            "undefined": set(),
        }
        for seed, e in seeds.items():
            ces, rces = [], []
            for c in corruptions:
                ks = [k for k in keys if k[0] == c]
                ce = sum(e[k] for k in ks) / sum(ref[k] for k in ks) if sum(ref[k] for k in ks) > 0 else math.nan
                res["ce"][c][seed] = 100.0 * ce
                ces.append(ce)
                ec = clean.get(lab, {}).get(seed)
                den = sum(ref[k] - ref_clean for k in ks) if ref_clean is not None else 0.0
                if ec is not None and not den > 0:
                    res["undefined"].add(c)
                rces.append(sum(e[k] - ec for k in ks) / den if ec is not None and den > 0 else math.nan)
            res["mce"][seed] = 100.0 * mean(ces)
            res["rel_mce"][seed] = 100.0 * mean(rces)
        out[lab] = res
    return out


def severity_grid(records: list[dict], labels: dict[str, str], metric: str, calibrator: str = "none") -> dict:
    """label -> (corruption, severity) -> mean over seeds of ``metric`` (detail rows; raw, or after
    ``calibrator``), and severity 0 = clean."""
    acc: dict = {}
    evaluators = {r["evaluator"] for r in records if is_detail(r)}
    for r in records:
        if r["bin"] is not None or r["metric"] != metric or r["value"] is None or calibrator_of(r) != calibrator:
            continue
        lab = labels[r["run"]]
        if is_detail(r):
            s = r["settings"]
            acc.setdefault(lab, {}).setdefault((s["corruption"], int(s["severity"])), []).append(r["value"])
        elif r["condition"] == "clean" and r["evaluator"] in evaluators:
            acc.setdefault(lab, {}).setdefault(("clean", 0), []).append(r["value"])
    return {lab: {k: sum(v) / len(v) for k, v in per.items()} for lab, per in acc.items()}


def corruption_figures(table: Table, records: list[dict], names: dict, baseline: str | None, colors) -> dict:
    """Per-severity detail rows (settings corruption + severity): accuracy and ECE against severity, one box
    per method over the corruptions at each severity (Ovadia et al. 2019, Fig. 2), and a corruption x
    severity heatmap of each method's accuracy minus the baseline's (means over seeds)."""
    acc = severity_grid(records, names, "acc")
    if not acc:
        return {}
    ece = severity_grid(records, names, "ece")
    methods = [m for m in table.methods if m in acc]
    sevs = sorted({s for per in acc.values() for _, s in per})
    corr = list(dict.fromkeys(c for per in acc.values() for c, s in per if s > 0))
    out = {"corruptions-severity": _severity_boxes(table, acc, ece, methods, sevs, len(corr), colors)}
    others = [m for m in methods if m != baseline]
    if baseline in acc and others:
        out["corruptions-heatmap"] = _difference_heatmap(acc, baseline, others, corr, [s for s in sevs if s > 0])
    return out


def _severity_boxes(table: Table, acc: dict, ece: dict, methods: list[str], sevs: list, n_corr: int, colors):
    """Accuracy and ECE against severity: one box per method over the corruptions at each severity."""
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.3 * len(sevs) * max(1, len(methods)) / 2 + 3), 3.6))
    width = 0.8 / max(1, len(methods))
    for ax, grid, ylabel in ((axes[0], acc, "accuracy (%)"), (axes[1], ece, "ECE")):
        for k, m in enumerate(methods):
            data = [[v for (c, s), v in grid.get(m, {}).items() if s == sev] for sev in sevs]
            pos = [j + (k - (len(methods) - 1) / 2) * width for j in range(len(sevs))]
            keep = [(p, d) for p, d in zip(pos, data) if d]
            if not keep:
                continue
            bp = ax.boxplot(
                [d for _, d in keep],
                positions=[p for p, _ in keep],
                widths=width * 0.9,
                patch_artist=True,
                showfliers=False,
                medianprops={"color": "k"},
            )
            for b in bp["boxes"]:
                b.set_facecolor(color_of(table, m, colors))
                b.set_alpha(0.75)
            ax.plot([], [], "s", color=color_of(table, m, colors), label=plot_text(m))
        ax.set_xticks(range(len(sevs)), ["clean" if s == 0 else str(s) for s in sevs])
        ax.set_xlabel("severity"), ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    handles = axes[0].get_legend_handles_labels()
    axes[1].legend(*handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes
    fig.suptitle(
        f"Corruptions: accuracy and ECE by severity (box over {n_corr} corruptions; means over seeds)", fontsize=10
    )
    return fig


def _difference_heatmap(acc: dict, baseline: str, others: list[str], corr: list[str], shown: list):
    """Corruption x severity: each method's accuracy minus the baseline's, one panel per method."""
    fig, axes = plt.subplots(
        1,
        len(others),
        figsize=(0.9 * len(shown) * len(others) + 3.5, 0.32 * len(corr) + 1.6),
        squeeze=False,
        sharey=True,
    )
    diff = lambda m, c, s, missing: acc[m].get((c, s), missing) - acc[baseline].get((c, s), missing)  # noqa: E731
    lim = max([abs(diff(m, c, s, 0)) for m in others for c in corr for s in shown] + [1e-9])
    for ax, m in zip(axes[0], others):
        d = np.array([[diff(m, c, s, np.nan) for s in shown] for c in corr])
        im = ax.imshow(d, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for (r, q), v in np.ndenumerate(d):
            if not np.isnan(v):
                colour = "white" if abs(v) > 0.6 * lim else "black"
                ax.text(q, r, f"{v:+.1f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(len(shown)), [str(s) for s in shown])
        ax.set_yticks(range(len(corr)), [plot_text(c) for c in corr], fontsize=8)
        ax.tick_params(labelleft=ax is axes[0][0])  # the corruption names once, left of the first panel: a
        # later panel's names covered the previous panel's severity-5 values
        ax.set_xlabel("severity"), ax.set_title(f"{plot_text(m)} − {plot_text(baseline)}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label="accuracy difference (points)")
    return fig
