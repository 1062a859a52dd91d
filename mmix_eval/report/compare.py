"""Paired comparisons against the baseline: over training seeds (t interval) and over test images (paired
bootstrap and McNemar's exact test, from the per-image outcomes). Imports no torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mmix_eval.errors import UserError
from mmix_eval.report import stats
from mmix_eval.report.table import Row, Table


def is_ensemble(table: Table, column: str) -> bool:
    return "ensemble_members" in (table.info.get(column, (None, {}))[1] or {})


def reference(table: Table, column: str, baseline: str) -> str:
    """What ``column`` is compared with: the baseline, or for a deep ensemble the baseline's own ensemble where the
    table has it (an ensemble has no training seed in common with a single model, so it pairs with an ensemble)."""
    if not is_ensemble(table, column):
        return baseline
    method, settings = table.info.get(baseline, (None, {}))
    for c in table.methods:
        m, s = table.info.get(c, (None, {}))
        if is_ensemble(table, c) and m == method and {k: v for k, v in (s or {}).items() if k != "ensemble_members"} == (settings or {}):
            return c
    return baseline


def paired_differences(table: Table, baseline: str) -> dict:
    """(row index, method) -> (mean difference, 95 % CI half-width or None, n pairs), paired by seed against the
    column's ``reference`` (the baseline, or its ensemble for an ensemble)."""
    if baseline not in table.methods:
        raise UserError(f"--baseline: expected one of the methods in the results ({', '.join(table.methods)}), got '{baseline}'")
    out = {}
    for i in range(len(table.rows)):
        for m in table.methods:
            ref = reference(table, m, baseline)
            got = seed_pair(table, i, m, ref) if m != ref else None
            if got is not None:
                out[i, m] = got[:3]
    return out

def image_differences(table: Table, outcomes: dict, baseline: str) -> tuple[dict, list[str]]:
    """(row index, method) -> (difference in points, bootstrap low, high, McNemar p, images, seed pairs) for
    the accuracy rows whose per-image outcomes exist for both methods on the very same test images.
    Returns the notes on pairs that could not be made (different test subsets)."""
    out, notes = {}, []
    for i, row in enumerate(table.rows):
        if row.metric != "acc" or row.direction != "higher":
            continue
        for m in table.methods:
            ref = reference(table, m, baseline)
            if m == ref:
                continue
            got = image_pair(table, outcomes, i, m, ref, notes)
            if got is not None:
                out[i, m] = got
    return out, sorted(set(notes))


def image_pair(table: Table, outcomes: dict, i: int, a: str, b: str, notes: list | None = None) -> tuple | None:
    """Column ``a`` − column ``b`` on row ``i`` over test images: (difference in points, bootstrap low, high,
    McNemar p, images, seed pairs), or None without per-image outcomes of both on the same images."""
    row = table.rows[i]
    if row.metric != "acc" or row.direction != "higher" or a not in table.runs or b not in table.runs:
        return None
    xa, xb = [], []
    for seed in sorted(set(table.runs[a]) & set(table.runs[b]), key=str):
        oa = _outcome(outcomes, table.runs[a][seed], row)
        ob = _outcome(outcomes, table.runs[b][seed], row)
        if oa is None or ob is None:
            continue
        if not np.array_equal(oa[0], ob[0]):
            if notes is not None:
                notes.append(f"{row.label}: {a} and {b} (seed {seed}) were evaluated on different test images; no "
                             f"per-image interval")
            continue
        xa.append(oa[1])
        xb.append(ob[1])
    if not xa:
        return None
    ma, mb = np.stack(xa), np.stack(xb)
    diff, lo, hi = stats.paired_image_bootstrap(ma, mb)
    return diff, lo, hi, stats.mcnemar_exact(*stats.discordant(ma, mb)), ma.shape[1], ma.shape[0]


def seed_pair(table: Table, i: int, a: str, b: str) -> tuple | None:
    """Column ``a`` − column ``b`` on row ``i`` paired by training seed: (mean, 95 % half-width or None, pairs,
    two-sided paired t-test p or None), or None without a common seed."""
    ca, cb = table.cells.get((i, a)), table.cells.get((i, b))
    if ca is None or cb is None:
        return None
    seeds = sorted(set(ca.values) & set(cb.values), key=str)
    d = [ca.values[s] - cb.values[s] for s in seeds]
    if not d or not all(math.isfinite(x) for x in d):  # a non-finite difference tests nothing
        return None
    mean, half = stats.t_interval(d)
    return mean, half, len(d), stats.paired_t_p(d)


@dataclass
class Claim:
    """One method against the baseline on one row of the main table."""
    row: int
    method: str
    diff: float  # method − baseline, in the metric's unit (points for accuracy)
    test: str  # "McNemar" (per image) or "paired t" (over seeds)
    p: float | None
    low: float | None = None  # the 95 % interval of the test's kind (bootstrap over images, t over seeds)
    high: float | None = None
    seeds: tuple | None = None  # the over-seeds difference (mean, half-width, pairs) beside a per-image test
    p_holm: float | None = None
    better: bool = False  # the difference is in the metric's better direction
    against: str | None = None  # the column it is compared with (the baseline, or the baseline's ensemble)

    @property
    def holds(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA


ALPHA = 0.05


def claims(table: Table, rows: list[int], outcomes: dict, baseline: str, image_diffs: dict | None = None) -> list[Claim]:
    """Every (row, method) of ``rows`` against ``baseline`` with its test (per-image McNemar where per-image
    outcomes exist, else a paired t-test over seeds), Holm-adjusted across all of them together.
    ``image_diffs``: the per-image comparisons already made against the same baseline (not bootstrapped again)."""
    out = []
    for i in rows:
        if table.rows[i].direction is None:
            continue
        for m in table.methods:
            ref = reference(table, m, baseline)
            if m == ref or (i, m) not in table.cells or (i, ref) not in table.cells:
                continue
            seeds = seed_pair(table, i, m, ref)
            img = image_diffs[i, m] if image_diffs and (i, m) in image_diffs else image_pair(table, outcomes, i, m, ref)
            higher = table.rows[i].direction == "higher"
            if img is not None:
                out.append(Claim(i, m, img[0], "McNemar", img[3], img[1], img[2], seeds[:3] if seeds else None,
                                 better=(img[0] > 0) == higher, against=ref))
            elif seeds is not None:
                low = seeds[0] - seeds[1] if seeds[1] is not None else None
                high = seeds[0] + seeds[1] if seeds[1] is not None else None
                out.append(Claim(i, m, seeds[0], "paired t", seeds[3], low, high, seeds[:3], better=(seeds[0] > 0) == higher,
                                 against=ref))
    adjusted = stats.holm([c.p for c in out if c.p is not None])
    for c, p in zip([c for c in out if c.p is not None], adjusted):
        c.p_holm = p
    return out


ACC_GAP = 5.0  # points: a score's best is not marked for a column this far below the best accuracy


def accuracy_gated(table: Table, i: int) -> set[str]:
    """The columns whose accuracy under row ``i``'s condition is more than ``ACC_GAP`` points below the best
    column's: a score of likelihood or calibration is not called best for them (a near-uniform classifier can
    be well calibrated). Empty for accuracy rows, unscored rows and conditions without an accuracy row."""
    row = table.rows[i]
    if row.metric == "acc" or row.direction is None:
        return set()
    same = [k for k, r in enumerate(table.rows) if r.metric == "acc" and r.condition == row.condition
            and r.evaluator == row.evaluator]
    k = next((k for k in same if table.rows[k].calibrator == "none"), same[0] if same else None)
    if k is None:
        return set()
    accs = {m: c.mean for m in table.methods if (c := table.cells.get((k, m))) is not None and not math.isnan(c.mean)}
    top = max(accs.values(), default=math.nan)
    return {m for m, a in accs.items() if a < top - ACC_GAP}


def best_holds(table: Table, i: int, outcomes: dict) -> set[str]:
    """The best column of row ``i`` (by the metric's direction), only where its paired 95 % interval against
    the runner-up excludes 0 (per image where outcomes exist, else over seeds) and, for a likelihood or
    calibration score, its accuracy is within ``ACC_GAP`` points of the best; empty otherwise."""
    row = table.rows[i]
    best = table.best(i)
    if best & accuracy_gated(table, i):
        return set()
    means = sorted(((c.mean, m) for m in table.methods if (c := table.cells.get((i, m))) is not None and not math.isnan(c.mean)),
                   reverse=row.direction == "higher")
    if len(best) != 1 or len(means) < 2:
        return set()
    (_, first), (_, second) = means[0], means[1]
    img = image_pair(table, outcomes, i, first, second)
    if img is not None:
        low, high = img[1], img[2]
    else:
        seeds = seed_pair(table, i, first, second)
        if seeds is None or seeds[1] is None:
            return set()
        low, high = seeds[0] - seeds[1], seeds[0] + seeds[1]
    excludes = low > 0 if row.direction == "higher" else high < 0
    return {first} if excludes else set()


def _outcome(outcomes: dict, run: str, row: Row):
    if row.evaluator is not None:
        return outcomes.get((run, row.evaluator, row.condition))
    return next((v for (r, _, c), v in sorted(outcomes.items(), key=lambda kv: tuple(map(str, kv[0])))
                 if r == run and c == row.condition), None)
