"""Which calibrator keeps each method calibrated under shift: per shift evaluator and proper score (NLL, Brier), each
run's score averaged over the evaluator's shifted conditions, raw and after each calibrator fitted on clean
held-out images, then mean ± std over the column's training seeds. Drawn only where a report has more than one
calibrator. Descriptive: which differences hold is said by the calibration verdicts and claims.md (the training run
as the unit). Imports no torch."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from mmix_eval.report.calibration_verdicts import PROPER_SCORES, calibrators_of
from mmix_eval.report.table import Table


@dataclass(frozen=True)
class CalibratorMeans:
    """One shift evaluator's proper score: (calibrator, column) -> (mean, std, seeds) over the column's runs of each
    run's mean over ``conditions`` shifted conditions; 'none' is the raw score."""

    section: str
    metric: str
    label: str
    conditions: int
    calibrators: list[str]
    columns: list[str]
    cells: dict

    def text(self, calibrator: str, column: str) -> str:
        got = self.cells.get((calibrator, column))
        if got is None:
            return "n/a"
        mean, std, n = got
        return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def calibrator_means(table: Table) -> list[CalibratorMeans]:
    """Every shift evaluator's tables of proper scores by calibrator, where more than one calibrator was fitted."""
    out = []
    for key, _, idx in table.sections:
        cals = calibrators_of(table, idx)
        if key == "comparison" or len(cals) < 2:
            continue
        for metric in PROPER_SCORES:
            got = _means(table, key, idx, metric, ["none", *cals])
            # a shift evaluator's: calibrated rows under the same conditions (the calibration evaluator's calibrated
            # rows are conditions of their own)
            if got is not None and any(c != "none" for c, _ in got.cells):
                out.append(got)
    return out


def _means(
    table: Table, key: str, idx: list[int], metric: str, cals: list[str], clean: bool = False
) -> CalibratorMeans | None:
    """Each calibrator's per-run mean over the shifted conditions (``clean``: the clean condition alone)."""
    rows = {
        cal: [
            i
            for i in idx
            if table.rows[i].metric == metric
            and table.rows[i].calibrator == cal
            and (table.rows[i].condition == "clean") == clean
        ]
        for cal in cals
    }
    conditions = {table.rows[i].condition for i in rows["none"]}
    if not conditions:
        return None
    cells = {}
    for cal, found in rows.items():
        if {table.rows[i].condition for i in found} != conditions:
            continue  # a calibrator without every condition is not averaged over the same ones
        for m in table.methods:
            got = [table.cells.get((i, m)) for i in found]
            if any(c is None for c in got):
                continue
            seeds = set.intersection(*(set(c.values) for c in got))
            per_run = [statistics.fmean(c.values[s] for c in got) for s in seeds]
            per_run = [v for v in per_run if math.isfinite(v)]
            if per_run:
                std = statistics.stdev(per_run) if len(per_run) > 1 else 0.0
                cells[cal, m] = (statistics.fmean(per_run), std, len(per_run))
    label = table.rows[rows["none"][0]].label.rsplit(": ", 1)[-1]
    return CalibratorMeans(key, metric, label, len(conditions), cals, list(table.methods), cells)


CONFORMAL = ("thr", "aps", "raps")


@dataclass(frozen=True)
class ConformalMeans:
    """One shift evaluator's conformal method: coverage (%) and mean set size per calibrator and column, on the
    clean images (exchangeable with the held-out ones: coverage ≥ 1 − α expected) and averaged over the shifted
    conditions."""

    section: str
    method: str
    alpha: float | None
    calibrators: list[str]
    columns: list[str]
    clean: tuple  # (coverage, size) CalibratorMeans
    shifted: tuple

    def text(self, which: tuple, calibrator: str, column: str) -> str:
        cov, size = (m.cells.get((calibrator, column)) for m in which)
        return "n/a" if cov is None or size is None else f"{cov[0]:.1f} % ({size[0]:.2f})"


def conformal_means(table: Table) -> list[ConformalMeans]:
    """Every shift evaluator's conformal coverage and set size by calibrator, where it recorded them."""
    out = []
    for key, _, idx in table.sections:
        if key == "comparison":
            continue
        cals = ["none", *calibrators_of(table, idx)]
        for m in CONFORMAL:
            parts = [
                _means(table, key, idx, f"{kind}_{m}", cals, clean)
                for clean in (True, False)
                for kind in ("coverage", "set_size")
            ]
            if any(p is None for p in parts):
                continue
            alpha = next(
                (table.rows[i].settings.get("conformal_alpha") for i in idx if table.rows[i].metric == f"coverage_{m}"),
                None,
            )
            cals_here = [c for c in cals if any(k[0] == c for k in parts[2].cells)]
            out.append(
                ConformalMeans(key, m, alpha, cals_here, list(table.methods), tuple(parts[:2]), tuple(parts[2:]))
            )
    return out
