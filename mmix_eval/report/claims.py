"""What a report claims against its baseline, and what each claim is about. Imports no torch.

Two kinds of claim (docs/statistics.md):

- a **method claim** is about the training method: the unit is the training run, and the test images are a sample
  too (``stats.method_test``: seed pairs and images as crossed random effects, t with k - 1 degrees of freedom).
  It needs two seed pairs or more; a deep ensemble, which has no seeds of its own, makes none.
- a **network claim** is about these trained networks, conditional on their weights: per test image, clustered by
  image (accuracy: the exact sign-flip test and the paired bootstrap interval; NLL and Brier: the paired bootstrap
  replicates' z-test and normal interval).

Calibration errors (ECE and its kin, ``CALIBRATION_ERRORS``) are descriptive: intervals where replicates exist, no
test, no mark; "better calibrated" rests on the proper scores (``calibration_verdicts``).

Families: the *primary* comparisons (``Primary``; by default each non-ensemble column against the baseline on the
clean, deformation and FGSM accuracies and the clean NLL and Brier, raw and calibrated: the paper's claims) are
corrected together for multiplicity; every other comparison is *exploratory*, corrected within its evaluator's
section. So adding an evaluator never changes a primary verdict.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import numpy as np

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import CALIBRATION_ERRORS
from mmix_eval.evaluate.boot import replicate_column
from mmix_eval.report import stats
from mmix_eval.report.checks import parse_target
from mmix_eval.report.compare import _detail, _outcome, _same_images, image_pair, is_ensemble, reference
from mmix_eval.report.table import Row, Table

ALPHA = 0.05
POWER = 0.8
PRIMARY_EVALUATORS = (None, "deformations", "fgsm")  # None: the clean condition, shared by every evaluator
PRIMARY_SCORES = ("nll", "brier")  # at the clean condition, raw and after the calibrator


@dataclass
class Primary:
    """The comparisons a user claims (``report: {primary: [...]}``, ``--primary``): patterns
    'COLUMN.CONDITION[:METRIC[@CALIBRATOR]]', each part an fnmatch pattern (COLUMN: a label or a method name;
    METRIC defaults to acc, CALIBRATOR to none). None: the default family. ``multiplicity``: how p-values are
    adjusted within each family (``stats.MULTIPLICITY``)."""

    patterns: list[str] | None = None
    multiplicity: str = "holm"
    parsed: list = field(default_factory=list, repr=False)
    # columns left out of the default family: the sweep values not chosen on held-out data (``sweep.sweep_choices``)
    exploratory_columns: frozenset = frozenset()

    def __post_init__(self):
        if self.multiplicity not in stats.MULTIPLICITY:
            raise UserError(
                f"multiplicity: expected one of {', '.join(stats.MULTIPLICITY)}, got {self.multiplicity!r:.80}"
            )
        if self.patterns is not None:
            if not isinstance(self.patterns, list) or not all(isinstance(p, str) and p.strip() for p in self.patterns):
                raise UserError(
                    f"primary: expected a list of 'COLUMN.CONDITION[:METRIC[@CALIBRATOR]]' patterns, got "
                    f"{self.patterns!r:.200}"
                )
            self.parsed = []
            for p in self.patterns:
                column, condition, metric = parse_target(p, f"primary '{p}'")
                metric, _, calibrator = metric.partition("@")
                self.parsed.append((p, column, condition, metric or "acc", calibrator or "none"))

    @property
    def default(self) -> bool:
        return self.patterns is None

    def describe(self) -> str:
        if self.default:
            return (
                "each column against the baseline on the clean, deformation and FGSM accuracies and the clean NLL "
                "and Brier, raw and calibrated (the default)"
            )
        return "the comparisons named: " + ", ".join(self.patterns)


def default_primary(table: Table, i: int, column: str) -> bool:
    r = table.rows[i]
    if is_ensemble(table, column):
        return False
    if r.metric == "acc" and r.calibrator == "none":
        return r.evaluator in PRIMARY_EVALUATORS and r.section == "comparison"
    return r.metric in PRIMARY_SCORES and _clean(table, r)


def _clean(table: Table, r: Row) -> bool:
    """The clean condition, raw or calibrated; the calibration evaluator's '<calibrator>_scaled' condition only where
    no clean calibrated row of the same score exists (they are the same numbers: counted once in the family)."""
    if r.condition == "clean":
        return True
    return (
        r.calibrator != "none"
        and r.condition == f"{r.calibrator}_scaled"
        and not any(
            o.condition == "clean" and o.calibrator == r.calibrator and o.metric == r.metric for o in table.rows
        )
    )


def _matches(table: Table, i: int, column: str, pattern: tuple) -> bool:
    _, col, condition, metric, calibrator = pattern
    r = table.rows[i]
    method = table.info.get(column, (None, {}))[0]
    return (
        (fnmatch.fnmatchcase(column, col) or fnmatch.fnmatchcase(str(method), col))
        and fnmatch.fnmatchcase(r.condition, condition)
        and fnmatch.fnmatchcase(r.metric, metric)
        and fnmatch.fnmatchcase(r.calibrator, calibrator)
    )


@dataclass
class Comparison:
    """One column against its reference on one row: the method claim, the network claim beside it, its family."""

    row: int
    column: str
    against: str
    family: str  # "primary", or "exploratory: <section>"
    method: stats.MethodTest | None = None  # None: fewer than 2 seed pairs, an ensemble, or a descriptive row
    network: tuple | None = None  # (diff, low, high, p, images, pairs, test) over test images, or None
    descriptive: bool = False  # a calibration error: intervals only, no test
    seeds: tuple | None = None  # (mean, t half-width or None, pairs): the plain over-seeds difference, shown beside
    p_method: float | None = None  # adjusted within the family
    p_network: float | None = None
    direction: str | None = None
    seeds_needed: int | None = None  # for 80 % power of the method test at the observed effect (network holds only)
    power_checked: bool = False  # seeds_needed was computed (None then means: not reachable with 1000 seeds)
    power_alpha: float = ALPHA  # the level seeds_needed is computed at (the family's Bonferroni level)

    @property
    def primary(self) -> bool:
        return self.family == "primary"

    @property
    def holds(self) -> bool:
        """The method claim holds after the family's multiplicity adjustment."""
        return self.p_method is not None and self.p_method < ALPHA

    @property
    def network_holds(self) -> bool:
        return self.p_network is not None and self.p_network < ALPHA

    @property
    def diff(self) -> float:
        if self.method is not None:
            return self.method.diff
        return self.network[0] if self.network is not None else (self.seeds[0] if self.seeds else math.nan)

    @property
    def better(self) -> bool:
        return (self.diff > 0) == (self.direction == "higher")


def comparison_rows(table: Table) -> list[int]:
    """Rows worth a comparison: scores, each (evaluator, condition, metric, calibrator) once (its first row, the
    comparison section's where it has one)."""
    seen, out = set(), []
    for i, r in enumerate(table.rows):
        key = (r.evaluator, r.condition, r.metric, r.calibrator)
        if r.direction is not None and key not in seen:
            seen.add(key)
            out.append(i)
    return out


def row_key(row: Row) -> tuple:
    return row.evaluator, row.condition, row.metric, row.calibrator


def comparisons(
    table: Table,
    baseline: str,
    outcomes: dict,
    detail: dict | None,
    primary: Primary | None = None,
    notes: list | None = None,
) -> list[Comparison]:
    """Every column against its reference (the baseline, or the baseline's ensemble for an ensemble) on every
    scored row, with both claims, families and adjusted p-values. ``notes``: where two runs' per-image data are not
    on the same images (no per-image interval)."""
    primary = primary or Primary()
    detail = detail or {}
    if baseline not in table.methods or len(table.methods) < 2:
        return []
    rows = comparison_rows(table)
    if not primary.default:
        _check_primary(table, baseline, rows, primary)
    out = []
    for i in rows:
        r = table.rows[i]
        for m in table.methods:
            ref = reference(table, m, baseline)
            if m == ref or (i, m) not in table.cells or (i, ref) not in table.cells:
                continue
            is_primary = (
                default_primary(table, i, m) and m not in primary.exploratory_columns
                if primary.default
                else any(_matches(table, i, m, p) for p in primary.parsed)
            )
            family = (
                "primary"
                if is_primary
                else f"exploratory: {r.section if r.section != 'comparison' else r.evaluator or 'clean'}"
            )
            c = Comparison(i, m, ref, family, direction=r.direction, descriptive=r.metric in CALIBRATION_ERRORS)
            c.seeds = _seed_diff(table, i, m, ref)
            c.network = image_pair(table, outcomes, i, m, ref, notes, detail)
            if not is_ensemble(table, m):
                c.method = method_claim(table, outcomes, detail, i, m, ref)
            if c.descriptive:  # a calibration error: its estimator's bias differs by model, so no test of it
                c.method = None
                c.network = c.network[:3] + (None,) + c.network[4:] if c.network is not None else None
            if c.method is None and c.network is None and c.seeds is None:
                continue  # a non-finite difference: nothing to claim
            out.append(c)
    for fam in dict.fromkeys(c.family for c in out):
        members = [c for c in out if c.family == fam]
        for attr, p_of in (
            ("p_method", lambda c: c.method.p if c.method is not None else None),
            ("p_network", lambda c: c.network[3] if c.network is not None else None),
        ):
            tested = [c for c in members if p_of(c) is not None]
            for c, p in zip(tested, stats.adjust([p_of(c) for c in tested], primary.multiplicity)):
                setattr(c, attr, p)
    for c in out:
        if c.network_holds and not c.holds and c.method is not None:
            c.power_checked = True
            c.power_alpha = power_alpha(out, c.family, primary.multiplicity)
            c.seeds_needed = stats.seeds_for_power(
                c.method.diff, c.method.seed_sd, c.method.image_var, POWER, alpha=c.power_alpha
            )
    return out


def power_alpha(found: list[Comparison], family: str, multiplicity: str) -> float:
    """The level a method test must reach to hold in its family: alpha / m (Bonferroni, Holm's strictest step, and
    what BH asks of a lone discovery) over the family's m method tests; alpha itself without correction."""
    m = sum(1 for c in found if c.family == family and c.method is not None)
    return ALPHA if multiplicity == "none" or m < 2 else ALPHA / m


def _check_primary(table: Table, baseline: str, rows: list[int], primary: Primary) -> None:
    """Each pattern names at least one comparison, and none names a deep ensemble (it has no training seeds)."""
    for p in primary.parsed:
        hits = [
            (i, m)
            for i in rows
            for m in table.methods
            if m != reference(table, m, baseline) and _matches(table, i, m, p)
        ]
        if not hits:
            conditions = ", ".join(dict.fromkeys(table.rows[i].condition for i in rows))
            raise UserError(
                f"primary '{p[0]}': expected COLUMN.CONDITION[:METRIC[@CALIBRATOR]] naming a comparison against "
                f"'{baseline}', got none (columns: {', '.join(table.methods)}; conditions: {conditions})"
            )
        ens = [m for _, m in hits if is_ensemble(table, m)]
        if ens:
            raise UserError(
                f"primary '{p[0]}': names '{ens[0]}', a deep ensemble, which has no training seeds of its own "
                f"and so no method claim; expected single-model columns (its network claims are in the "
                f"differences table)"
            )


def _seed_diff(table: Table, i: int, a: str, b: str) -> tuple | None:
    ca, cb = table.cells.get((i, a)), table.cells.get((i, b))
    if ca is None or cb is None:
        return None
    d = [ca.values[s] - cb.values[s] for s in sorted(set(ca.values) & set(cb.values), key=str)]
    if not d or not all(math.isfinite(x) for x in d):
        return None
    mean, half = stats.t_interval(d)
    return mean, half, len(d)


def method_claim(table: Table, outcomes: dict, detail: dict, i: int, a: str, b: str) -> stats.MethodTest | None:
    """The method claim of column ``a`` − ``b`` on row ``i``: the per-seed-pair differences of the recorded values,
    with the image terms from the per-image outcomes (accuracy) or the bootstrap replicates (NLL, Brier) where
    every pair has them on the same images; seeds alone otherwise (``images`` None: said where shown)."""
    row = table.rows[i]
    ca, cb = table.cells.get((i, a)), table.cells.get((i, b))
    if ca is None or cb is None or a not in table.runs or b not in table.runs:
        return None
    seeds = sorted(set(ca.values) & set(cb.values) & set(table.runs[a]) & set(table.runs[b]), key=str)
    diffs = [ca.values[s] - cb.values[s] for s in seeds]
    if len(diffs) < 2:
        return None
    terms, n = _image_terms(table, outcomes, detail, row, a, b, seeds)
    return stats.method_test(diffs, *terms, images=n) if terms is not None else stats.method_test(diffs)


def _image_terms(table: Table, outcomes: dict, detail: dict, row: Row, a: str, b: str, seeds: list):
    """((V_img, V_pairs), images) for the pairs of ``seeds``, or (None, None) where a pair lacks per-image data."""
    if row.metric == "acc" and row.direction == "higher":
        d = []
        for s in seeds:
            oa, ob = _outcome(outcomes, table.runs[a][s], row), _outcome(outcomes, table.runs[b][s], row)
            if oa is None or ob is None or not _same_images(oa[0], ob[0], row, a, b, s, None):
                return None, None
            d.append((oa[1].astype(np.float64) - ob[1].astype(np.float64)) * 100.0)
        return stats.image_terms(np.stack(d)), len(d[0])
    if replicate_column(row.metric) is not None and row.metric not in CALIBRATION_ERRORS:
        k = replicate_column(row.metric)
        reps = []
        for s in seeds:
            xa, xb = _detail(detail, table.runs[a][s], row), _detail(detail, table.runs[b][s], row)
            if (
                xa is None
                or xb is None
                or xa[1] is None
                or xb[1] is None
                or not _same_images(xa[0], xb[0], row, a, b, s, None)
            ):
                return None, None
            reps.append(xa[1][:, k].astype(np.float64) - xb[1][:, k].astype(np.float64))
        return stats.replicate_terms(np.stack(reps)), len(_detail(detail, table.runs[a][seeds[0]], row)[0])
    return None, None


def by_row(found: list[Comparison]) -> dict:
    """(row key, column) -> Comparison, to find a comparison from any row of the same key (the main table's)."""
    return {(c.row, c.column): c for c in found}


def lookup(table: Table, found: list[Comparison], i: int, column: str) -> Comparison | None:
    key = row_key(table.rows[i])
    for c in found:
        if c.column == column and row_key(table.rows[c.row]) == key:
            return c
    return None


def best_holds(
    table: Table, i: int, outcomes: dict, detail: dict | None = None, columns: list[str] | None = None
) -> tuple[set[str], str | None]:
    """(the best column of row ``i`` where it holds, the kind of claim it rests on): the best by the metric's
    direction, only where the 95 % interval of its difference from the runner-up excludes 0: the method claim where
    both have two seeds or more (neither an ensemble), else the network claim over test images. Never for a
    calibration error (descriptive) or a likelihood / calibration score of a column whose accuracy is more than
    ``ACC_GAP`` points below the best's. ``columns``: among these only (a sweep's values)."""
    from mmix_eval.report.compare import accuracy_gated

    row = table.rows[i]
    pool = [m for m in table.methods if columns is None or m in columns]
    means = {m: c.mean for m in pool if (c := table.cells.get((i, m))) is not None and not math.isnan(c.mean)}
    if row.direction is None or len(means) < 2 or row.metric in CALIBRATION_ERRORS:
        return set(), None
    top = (max if row.direction == "higher" else min)(means.values())
    best = {m for m, v in means.items() if v == top}
    if best & accuracy_gated(table, i):
        return set(), None
    means = sorted(((v, m) for m, v in means.items()), reverse=row.direction == "higher")
    if len(best) != 1 or len(means) < 2 or (row.metric == "auroc" and means[0][0] < 0.5):
        return set(), None  # (an AUROC below 0.5 is never "best": every column ranks OOD images above)
    (_, first), (_, second) = means[0], means[1]
    got = (
        None
        if is_ensemble(table, first) or is_ensemble(table, second)
        else method_claim(table, outcomes, detail or {}, i, first, second)
    )
    if got is not None:
        low, high, kind = got.low, got.high, "method"
    else:
        img = image_pair(table, outcomes, i, first, second, detail=detail)
        if img is None or img[1] is None:
            return set(), None
        low, high, kind = img[1], img[2], "network"
    excludes = low > 0 if row.direction == "higher" else high < 0
    return ({first}, kind) if excludes else (set(), None)
