"""Pairing two columns of the table: by training seed (the per-seed differences) and over test images (the per-image
outcomes and the bootstrap replicates of the very same images). The claims built on them are ``claims.py``.
Imports no torch."""

from __future__ import annotations

import math

import numpy as np

from mmix_eval.errors import ParamError
from mmix_eval.evaluate.boot import replicate_column
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
        if (
            is_ensemble(table, c)
            and m == method
            and {k: v for k, v in (s or {}).items() if k != "ensemble_members"} == (settings or {})
        ):
            return c
    return baseline


def paired_differences(table: Table, baseline: str) -> dict:
    """(row index, method) -> (mean difference, 95 % CI half-width or None, n pairs), paired by seed against the
    column's ``reference`` (the baseline, or its ensemble for an ensemble)."""
    if baseline not in table.methods:
        raise ParamError(
            "baseline", f"expected one of the methods in the results ({', '.join(table.methods)}), got '{baseline}'"
        )
    out = {}
    for i in range(len(table.rows)):
        for m in table.methods:
            ref = reference(table, m, baseline)
            got = seed_pair(table, i, m, ref) if m != ref else None
            if got is not None:
                out[i, m] = got[:3]
    return out


def image_differences(
    table: Table, outcomes: dict, baseline: str, detail: dict | None = None
) -> tuple[dict, list[str]]:
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
    """A row compared over test images: accuracy (per-image outcomes) or a score with bootstrap replicates (NLL,
    Brier, ECE; an OOD condition's AUROC)."""
    return (row.metric == "acc" and row.direction == "higher") or (
        replicate_column(row.metric) is not None and row.direction is not None
    )


def image_pair(
    table: Table, outcomes: dict, i: int, a: str, b: str, notes: list | None = None, detail: dict | None = None
) -> tuple | None:
    """Column ``a`` − column ``b`` on row ``i`` over test images, the trained networks held fixed (a network claim):
    (difference, 95 % low, high, p, images, seed pairs, test), or None without the per-image data of both on the
    same images. Accuracy (points): the percentile bootstrap over images and the exact sign-flip test on each image's
    summed discordance (test "sign-flip"; an image, not an (image, seed pair), is the unit, since the same images
    recur in every pair); NLL, Brier, ECE: the stored paired bootstrap replicates (``boot_pair``, test "bootstrap")."""
    row = table.rows[i]
    if replicate_column(row.metric) is not None:
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
    d = (ma.astype(np.int64) - mb.astype(np.int64)).sum(0)
    return diff, lo, hi, stats.sign_flip_exact(d), ma.shape[1], ma.shape[0], "sign-flip"


def _same_images(ia, ib, row: Row, a: str, b: str, seed, notes: list | None) -> bool:
    """Two runs' per-image data are paired only on the very same test images (a note says where they are not)."""
    if np.array_equal(ia, ib):
        return True
    if notes is not None:
        notes.append(
            f"{row.label}: {a} and {b} (seed {seed}) were evaluated on different test images; no per-image interval"
        )
    return False


def boot_pair(table: Table, detail: dict, i: int, a: str, b: str, notes: list | None = None) -> tuple | None:
    """Column ``a`` − column ``b`` on an NLL, Brier, ECE or AUROC row over test images, from each run's stored bootstrap
    replicates (``evaluate.boot``: the same resamples of the same images for every run, so resample r is one draw
    of the paired bootstrap, ECE recomputed on it). Seed pairs ride together: replicate r of the difference is the
    mean over seed pairs of their r-th differences. (difference, low, high, p, images, pairs, "bootstrap"): the
    difference of the recorded values, a normal 95 % interval and a two-sided z-test with the replicates'
    standard deviation as the standard error; None where a pair lacks replicates or saw other images."""
    row = table.rows[i]
    ca, cb = table.cells.get((i, a)), table.cells.get((i, b))
    if ca is None or cb is None or a not in table.runs or b not in table.runs:
        return None
    k = replicate_column(row.metric)
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
    return (*stats.replicate_z(float(np.mean(diffs)), np.stack(reps)), n, len(diffs), "bootstrap")


def used_detail(table: Table, detail: dict) -> dict:
    """``detail`` with the bootstrap replicates kept only where a row of ``table`` pairs with them (``boot_pair``'s
    lookup): what a report stores beside its records (the per-severity corruption conditions and the clean
    condition's copies in every evaluator's file are not paired by any row); the reliability bins are all kept."""
    used = set()
    runs = {r for by_seed in table.runs.values() for r in by_seed.values()}
    for row in table.rows:
        if replicate_column(row.metric) is None:
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
    return _BY_RUN_CONDITION_CALIBRATOR(detail, (run, row.condition, row.calibrator))


class _SortedIndex:
    """``key_of(entry key)`` -> [(key, value)] in key order, built once per mapping (every lookup sorted every
    entry: 513 runs took minutes), rebuilt when another mapping, or one of another size, is asked. A mapping is
    not changed in place between the lookups of one report."""

    def __init__(self, key_of):
        self.key_of, self.mapping, self.size, self.index = key_of, None, -1, {}

    def __call__(self, mapping: dict, key) -> list:
        if self.mapping is not mapping or self.size != len(mapping):
            index: dict = {}
            for k, v in sorted(mapping.items(), key=lambda kv: tuple(map(str, kv[0]))):
                index.setdefault(self.key_of(k), []).append((k, v))
            self.mapping, self.size, self.index = mapping, len(mapping), index
        return self.index.get(key, [])


_BY_RUN_CONDITION_CALIBRATOR = _SortedIndex(
    lambda k: (k[0], k[2], k[3])
)  # detail: (run, evaluator, condition, calibrator)
_BY_RUN_CONDITION = _SortedIndex(lambda k: (k[0], k[2]))  # outcomes: (run, evaluator, condition)


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


ACC_GAP = 5.0  # points: a score's best is not marked for a column this far below the best accuracy


def accuracy_gated(table: Table, i: int) -> set[str]:
    """The columns whose accuracy under row ``i``'s condition is more than ``ACC_GAP`` points below the best
    column's: a score of likelihood or calibration is not called best for them (a near-uniform classifier can
    be well calibrated). Empty for accuracy rows, unscored rows and conditions without an accuracy row."""
    row = table.rows[i]
    if row.metric == "acc" or row.direction is None:
        return set()
    same = [
        k
        for k, r in enumerate(table.rows)
        if r.metric == "acc" and r.condition == row.condition and r.evaluator == row.evaluator
    ]
    k = next((k for k in same if table.rows[k].calibrator == "none"), same[0] if same else None)
    if k is None:
        return set()
    accs = {m: c.mean for m in table.methods if (c := table.cells.get((k, m))) is not None and not math.isnan(c.mean)}
    top = max(accs.values(), default=math.nan)
    return {m for m, a in accs.items() if a < top - ACC_GAP}


def _outcome(outcomes: dict, run: str, row: Row):
    if row.evaluator is not None:
        return outcomes.get((run, row.evaluator, row.condition))
    hits = _BY_RUN_CONDITION(outcomes, (run, row.condition))
    return hits[0][1] if hits else None
