"""The report's tables as CSV: table.csv (every row x column) and sweep.csv (a swept key's values as columns). Imports no torch."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mmix_eval.evaluate.records import _cell
from mmix_eval.io import atomic_write_text
from mmix_eval.report.sweep import cell, key_of, sweep_views
from mmix_eval.report.table import Table


def write_csv_table(table: Table, path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            _cell(h)
            for h in ["section", "evaluator", "condition", "calibrator", "metric", "label", "direction"]
            + [f"{m} {k}" for m in table.methods for k in ("mean", "std", "n")]
        ]
    )
    for i, r in enumerate(table.rows):
        vals = []
        for m in table.methods:
            c = table.cells.get((i, m))
            vals += [c.mean, c.std, c.n] if c is not None else [None, None, None]
        w.writerow(
            [
                _cell(v)
                for v in [r.section, r.evaluator, r.condition, r.calibrator, r.metric, r.label, r.direction] + vals
            ]
        )
    atomic_write_text(path, buf.getvalue())


SWEEP_HEAD = ("key", "value", "method", "section", "evaluator", "condition", "calibrator", "metric", "label")
SWEEP_TAIL = ("mean", "std", "n", "paper")


def _sweep_row(key: str, value, method: str, r, c, paper) -> list[str]:
    """One sweep.csv line: the swept key and value, the column, the row's identity, its cell and the paper's number."""
    row = [key, value, method, r.section, r.evaluator, r.condition, r.calibrator, r.metric, r.label]
    return [_cell(x) for x in [*row, *(c if c else (None, None, None)), paper]]


def write_sweep_csv(table: Table, path: Path) -> bool:
    """sweep.csv, long format: key, value, method, metric, mean, std, n (and the paper's number). False: no sweep."""
    views = sweep_views(table)
    if not views:
        return False
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*SWEEP_HEAD, *SWEEP_TAIL])
    for view in views:
        for i in view.rows:
            r = table.rows[i]
            for s in view.series:
                for v in view.values:
                    c = cell(table, i, s.columns.get(key_of(v)))
                    paper = view.paper.get((i, s.name), {}).get(key_of(v))
                    w.writerow(_sweep_row(view.key, v, s.name, r, c, paper))
            for m in view.fixed:
                w.writerow(_sweep_row(view.key, "not swept", m, r, cell(table, i, m), None))
    atomic_write_text(path, buf.getvalue())
    return True
