"""Tidy result records: one row per checkpoint × evaluator × condition × metric. Imports no torch.

Rows carry the checkpoint's metadata (model, method, α, eligible layers, loss, training seed, data set)
and the evaluation's settings (grid, seed, interpolation, ε, attack, bins, edge rule, n images), so a
report can be rebuilt from the record files alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from mmix_eval.io import atomic_write_text

FIELDS = [
    "run", "checkpoint", "model", "method", "alpha", "eligible", "loss", "train_seed", "data",
    "evaluator", "condition", "label", "metric", "value", "higher_is_better", "n",
    "eval_seed", "grid", "interpolation", "eps_255", "attack", "bins", "edge_rule", "bin", "warnings",
]

# Every metric knows its direction, so a report never guesses which value is better (None: not a score).
HIGHER_IS_BETTER = {"acc": True, "nll": False, "ece": False, "mce": False, "brier": False,
                    "temperature": None, "bin_count": None, "bin_acc": None, "bin_conf": None}


def record(base: dict[str, Any], condition: str, metric: str, value: float, **extra) -> dict[str, Any]:
    row = {f: None for f in FIELDS}
    row.update(base)
    row.update(extra)
    row.update(condition=condition, metric=metric, value=value, higher_is_better=HIGHER_IS_BETTER.get(metric))
    return row


def _cell(v: Any) -> str:
    """A CSV cell that a spreadsheet cannot run: formula-like strings get a leading apostrophe."""
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, (list, dict)):
        v = json.dumps(v)
    s = str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(s) else s


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def write_records(rows: list[dict], stem: Path) -> tuple[Path, Path]:
    """Write ``stem``.jsonl and ``stem``.csv atomically."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    jsonl = "".join(json.dumps({f: r.get(f) for f in FIELDS}, allow_nan=True) + "\n" for r in rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FIELDS)
    for r in rows:
        w.writerow([_cell(r.get(f)) for f in FIELDS])
    paths = stem.with_suffix(".jsonl"), stem.with_suffix(".csv")
    atomic_write_text(paths[0], jsonl)
    atomic_write_text(paths[1], buf.getvalue())
    return paths


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def summary_table(rows: list[dict]) -> str:
    """A short terminal table: conditions down, the headline metrics across (acc %, nll, ece)."""
    rows = [r for r in rows if r["bin"] is None and r["metric"] in ("acc", "nll", "ece", "mce", "brier", "temperature")]
    conditions: list[str] = []
    metrics: list[str] = []
    cell: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["condition"] not in conditions:
            conditions.append(r["condition"])
        if r["metric"] not in metrics:
            metrics.append(r["metric"])
        cell[r["condition"], r["metric"]] = r["value"]
    width = max([len(c) for c in conditions] + [9])
    lines = [f"  {'condition':<{width}}" + "".join(f"{m:>10}" for m in metrics)]
    for c in conditions:
        vals = [cell.get((c, m)) for m in metrics]
        lines.append(f"  {c:<{width}}" + "".join(f"{'' if v is None else (f'{v:.2f}' if m == 'acc' else f'{v:.4f}'):>10}"
                                               for m, v in zip(metrics, vals)))
    return "\n".join(lines)
