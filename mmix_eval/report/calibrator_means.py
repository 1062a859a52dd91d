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
            if got is not None:
                out.append(got)
    return out


def _means(table: Table, key: str, idx: list[int], metric: str, cals: list[str]) -> CalibratorMeans | None:
    rows = {
        cal: [
            i
            for i in idx
            if table.rows[i].metric == metric and table.rows[i].calibrator == cal and table.rows[i].condition != "clean"
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
