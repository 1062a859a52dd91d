"""Paired comparisons against the baseline: over training seeds (t interval) and over test images (paired
bootstrap and McNemar's exact test, from the per-image outcomes). Imports no torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mmix_eval.errors import UserError
from mmix_eval.evaluate.boot import BOOT_STATS
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

def image_differences(table: Table, outcomes: dict, baseline: str, detail: dict | None = None) -> tuple[dict, list[str]]:
    """(row index, method) -> ``image_pair``'s tuple for the accuracy rows whose per-image outcomes, and the NLL,
    Brier and ECE rows whose bootstrap replicates, exist for both methods on the very same test images.
    Returns the notes on pairs that could not be made (different test subsets)."""
    out, notes = {}, []
    for i, row in enumerate(table.rows):
        if not per_image(row):
            continue
        for m in table.methods:
            ref = reference(table, m, baseline)
            if m == ref:
                continue
            got = image_pair(table, outcomes, i, m, ref, notes, detail)
            if got is not None:
                out[i, m] = got
    return out, sorted(set(notes))


def per_image(row: Row) -> bool:
    """A row compared over test images: accuracy (per-image outcomes) or a score with bootstrap replicates."""
    return (row.metric == "acc" and row.direction == "higher") or (row.metric in BOOT_STATS and row.direction is not None)


def image_pair(table: Table, outcomes: dict, i: int, a: str, b: str, notes: list | None = None,
               detail: dict | None = None) -> tuple | None:
    """Column ``a`` − column ``b`` on row ``i`` over test images: (difference, 95 % low, high, p, images, seed
    pairs, test), or None without the per-image data of both on the same images. Accuracy (points): percentile
    bootstrap and McNemar's exact test from the per-image outcomes (test "McNemar"); NLL, Brier, ECE: the stored
    paired bootstrap replicates (``boot_pair``, test "bootstrap")."""
    row = table.rows[i]
    if row.metric in BOOT_STATS:
        return boot_pair(table, detail or {}, i, a, b, notes)
    if row.metric != "acc" or row.direction != "higher" or a not in table.runs or b not in table.runs:
        return None
    xa, xb = [], []
    for seed in sorted(set(table.runs[a]) & set(table.runs[b]), key=str):
        oa = _outcome(outcomes, table.runs[a][seed], row)
        ob = _outcome(outcomes, table.runs[b][seed], row)
        if oa is None or ob is None:
            continue
        if not _same_images(oa[0], ob[0], row, a, b, seed, notes):
            continue
        xa.append(oa[1])
        xb.append(ob[1])
    if not xa:
        return None
    ma, mb = np.stack(xa), np.stack(xb)
    diff, lo, hi = stats.paired_image_bootstrap(ma, mb)
    return diff, lo, hi, stats.mcnemar_exact(*stats.discordant(ma, mb)), ma.shape[1], ma.shape[0], "McNemar"


def _same_images(ia, ib, row: Row, a: str, b: str, seed, notes: list | None) -> bool:
    """Two runs' per-image data are paired only on the very same test images (a note says where they are not)."""
    if np.array_equal(ia, ib):
        return True
    if notes is not None:
        notes.append(f"{row.label}: {a} and {b} (seed {seed}) were evaluated on different test images; no per-image "
                     f"interval")
    return False


def boot_pair(table: Table, detail: dict, i: int, a: str, b: str, notes: list | None = None) -> tuple | None:
    """Column ``a`` − column ``b`` on an NLL, Brier or ECE row over test images, from each run's stored bootstrap
    replicates (``evaluate.boot``: the same resamples of the same images for every run, so resample r is one draw
    of the paired bootstrap, ECE recomputed on it). Seed pairs ride together: replicate r of the difference is the
    mean over seed pairs of their r-th differences. (difference, low, high, p, images, pairs, "bootstrap"): the
    difference of the recorded values, a normal 95 % interval and a two-sided z-test with the replicates'
    standard deviation as the standard error; None where a pair lacks replicates or saw other images."""
    row = table.rows[i]
    ca, cb = table.cells.get((i, a)), table.cells.get((i, b))
    if ca is None or cb is None or a not in table.runs or b not in table.runs:
        return None
    k = BOOT_STATS.index(row.metric)
    reps, diffs, n = [], [], 0
    for seed in sorted(set(table.runs[a]) & set(table.runs[b]) & set(ca.values) & set(cb.values), key=str):
        xa, xb = _detail(detail, table.runs[a][seed], row), _detail(detail, table.runs[b][seed], row)
        if xa is None or xb is None or xa[1] is None or xb[1] is None:
            continue
        if not _same_images(xa[0], xb[0], row, a, b, seed, notes):
            continue
        reps.append(xa[1][:, k].astype(np.float64) - xb[1][:, k].astype(np.float64))
        diffs.append(ca.values[seed] - cb.values[seed])
        n = len(xa[0])
    if not diffs or not all(math.isfinite(d) for d in diffs):
        return None
    diff = float(np.mean(diffs))
    se = float(np.std(np.mean(reps, axis=0), ddof=1))
    if not math.isfinite(se) or se == 0.0:
        return diff, None, None, None, n, len(diffs), "bootstrap"
    z = stats.Z975 * se
    return diff, diff - z, diff + z, stats.normal_p(diff / se), n, len(diffs), "bootstrap"


def used_detail(table: Table, detail: dict) -> dict:
    """``detail`` with the bootstrap replicates kept only where a row of ``table`` pairs with them (``boot_pair``'s
    lookup): what a report stores beside its records (the per-severity corruption conditions and the clean
    condition's copies in every evaluator's file are not paired by any row); the reliability bins are all kept."""
    used = set()
    runs = {r for by_seed in table.runs.values() for r in by_seed.values()}
    for row in table.rows:
        if row.metric not in BOOT_STATS:
            continue
        for run in runs:
            key = next((k for k, v in _matches(detail, run, row) if v[1] is not None), None)
            if key is not None:
                used.add(key)
    return {k: (v[0], v[1] if k in used else None, v[2]) for k, v in detail.items()}


def _matches(detail: dict, run: str, row: Row):
    if row.evaluator is not None:
        key = (run, row.evaluator, row.condition, row.calibrator)
        return [(key, detail[key])] if key in detail else []
    return [(k, v) for k, v in sorted(detail.items(), key=lambda kv: tuple(map(str, kv[0])))
            if k[0] == run and k[2] == row.condition and k[3] == row.calibrator]


def _detail(detail: dict, run: str, row: Row):
    return next((v for _, v in _matches(detail, run, row) if v[1] is not None), None)


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


def claims(table: Table, rows: list[int], outcomes: dict, baseline: str, image_diffs: dict | None = None,
           detail: dict | None = None) -> list[Claim]:
    """Every (row, method) of ``rows`` against ``baseline`` with its test (per image where the per-image data
    exist: McNemar for accuracy, the paired bootstrap's z-test for NLL, Brier and ECE; else a paired t-test over
    seeds), Holm-adjusted across all of them together. ``image_diffs``: the per-image comparisons already made
    against the same baseline (not bootstrapped again)."""
    out = []
    for i in rows:
        if table.rows[i].direction is None:
            continue
        for m in table.methods:
            ref = reference(table, m, baseline)
            if m == ref or (i, m) not in table.cells or (i, ref) not in table.cells:
                continue
            seeds = seed_pair(table, i, m, ref)
            img = (image_diffs[i, m] if image_diffs and (i, m) in image_diffs
                   else image_pair(table, outcomes, i, m, ref, detail=detail))
            higher = table.rows[i].direction == "higher"
            if img is not None and img[3] is not None:
                out.append(Claim(i, m, img[0], img[6], img[3], img[1], img[2], seeds[:3] if seeds else None,
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


def best_holds(table: Table, i: int, outcomes: dict, detail: dict | None = None) -> set[str]:
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
    img = image_pair(table, outcomes, i, first, second, detail=detail)
    if img is not None and img[1] is not None:
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
