"""The short table an evaluation prints per result: conditions down, summary metrics across. Imports no torch."""

from __future__ import annotations

import math

from mmix_eval.evaluate.records import SCHEMA, calibrator_of, is_scaled_condition


def fmt_value(v: float | None, format_spec: str | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    try:
        return format(v, format_spec or ".4f")
    except (TypeError, ValueError):
        return format(v, ".4f")


# Scores every condition records that the terminal table leaves to the files (it stays readable at 80-120 columns).
CONSOLE_LEFT_OUT = {"ece_em", "cw_ece", "signed_ce", "aurc", "risk80", "risk90"}


MAX_CONSOLE_CONDITIONS = 30  # a screenful; the files hold every condition


def summary_table(rows: list[dict], where: str | None = None, max_conditions: int = MAX_CONSOLE_CONDITIONS) -> str:
    """A short terminal table: conditions down, the evaluator's summary metrics across (a calibrated score as
    'nll@temperature'; the finer estimators are in the files, said in the last line). At most
    ``max_conditions`` conditions, then one line saying how many more and where they are (``where``).
    Linear in the rows."""
    rows = [r for r in rows if r["bin"] is None]
    per: dict[str, dict[str, None]] = {}  # condition -> its metric columns (dicts: ordered sets)
    cell: dict[tuple[str, str], dict] = {}
    left_out = False
    for r in rows:
        if r["metric"] in CONSOLE_LEFT_OUT:
            left_out = True
            continue
        cal = calibrator_of(r)
        column = r["metric"] if cal == "none" or is_scaled_condition(r) else f"{r['metric']}@{cal}"
        per.setdefault(r["condition"], {})[column] = None
        cell[r["condition"], column] = r
    conditions = list(per)
    metrics: dict[str, None] = {}
    for c in sorted(per, key=lambda c: -len(per[c])):  # the fullest condition's metric order first
        for m in per[c]:
            metrics.setdefault(m, None)
    not_scores = {m for (c, m), r in cell.items() if r.get("direction") is None and r.get("schema") == SCHEMA}
    ordered = [m for m in metrics if m not in not_scores] + [m for m in metrics if m in not_scores]
    shown = conditions[:max_conditions]
    text = {
        (c, m): fmt_value(cell[c, m]["value"], cell[c, m]["format"]) if (c, m) in cell else ""
        for c in shown
        for m in ordered
    }
    width = max([len(c) for c in shown] + [9])
    # every column at least two spaces wider than its header and its widest value: never 'briertemperature'
    cols = [max([8, len(m)] + [len(text[c, m]) for c in shown]) + 2 for m in ordered]
    lines = [f"  {'condition':<{width}}" + "".join(f"{m:>{w}}" for m, w in zip(ordered, cols))]
    for c in shown:
        lines.append(f"  {c:<{width}}" + "".join(f"{text[c, m]:>{w}}" for m, w in zip(ordered, cols)))
    if len(conditions) > len(shown):
        lines.append(
            f"  … and {len(conditions) - len(shown):,} more conditions, every one in {where or 'the .csv and .jsonl'}"
        )
    if left_out:
        lines.append(
            "  (equal-mass and classwise ECE, signed error, AURC and risk at coverage: in the .csv and .jsonl)"
        )
    return "\n".join(lines)
