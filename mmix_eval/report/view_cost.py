"""The report's training-cost table and the runs that had not converged. Imports no torch."""

from __future__ import annotations

import math
import statistics

from mmix_eval.report.compare import is_ensemble
from mmix_eval.report.table import Table
from mmix_eval.report.view_text import NA
from mmix_eval.report.view_types import CostTable

STILL_FALLING = 0.10  # a run whose last tenth of epochs has a mean training loss this much below the tenth before


def still_falling(curve: list[float] | None) -> float | None:
    """The relative fall of the mean training loss from the second-to-last tenth of the epochs to the last tenth (at
    least 3 epochs each: one epoch's noise is not a trend), when it is more than ``STILL_FALLING``: the run had not
    converged. None otherwise, or without a curve of 6 epochs or more."""
    k = max(3, len(curve or []) // 10)
    if not curve or len(curve) < 2 * k:
        return None
    start, end = statistics.fmean(curve[-2 * k : -k]), statistics.fmean(curve[-k:])
    if not (math.isfinite(start) and math.isfinite(end)) or start <= 0:
        return None
    fall = (start - end) / start
    return fall if fall > STILL_FALLING else None


def not_converged(table: Table, costs: dict) -> dict[str, list[str]]:
    """column -> its runs whose training loss was still falling at the end (``still_falling``)."""
    out: dict[str, list[str]] = {}
    for m in table.methods:
        for _seed, run in sorted(table.runs.get(m, {}).items(), key=lambda kv: str(kv[0])):
            fall = still_falling((costs.get(run) or {}).get("loss_curve"))
            if fall is not None:
                out.setdefault(m, []).append(f"{run} (−{100 * fall:.0f} %)")
    return out


def cost_table(table: Table, costs: dict) -> CostTable | None:
    """Training cost per column: forward passes per step, images/s as the median and range over its seeds, wall
    time, the final training loss and whether it had stopped falling, and the CPU threads and other runnable tasks
    each run saw when it started (a busy machine slows a run: images/s without them cannot be compared)."""

    def over_seeds(m, k):
        return [costs[r][k] for r in table.runs.get(m, {}).values() if (costs.get(r) or {}).get(k) is not None]

    falling = not_converged(table, costs)
    rows, any_value = [], False
    for m in table.methods:
        passes, rate, wall = (
            over_seeds(m, "forward_passes_per_step"),
            over_seeds(m, "train_images_per_s"),
            over_seeds(m, "train_wall_time_s"),
        )
        loss, threads, busy = (
            over_seeds(m, "final_train_loss"),
            over_seeds(m, "train_threads"),
            over_seeds(m, "busy_tasks_at_start"),
        )
        any_value |= bool(passes or rate or wall)
        cells = [
            f"{statistics.fmean(passes):g}" if passes else NA,
            (f"{statistics.median(rate):,.0f}" + (f" ({min(rate):,.0f}–{max(rate):,.0f})" if len(rate) > 1 else ""))
            if rate
            else NA,
            f"{statistics.fmean(wall):,.1f}" if wall else NA,
            (
                f"{statistics.fmean(loss):.4g}"
                + (f" [{len(falling[m])} of {len(table.runs.get(m, {}))} still falling]" if m in falling else "")
            )
            if loss
            else NA,
            ", ".join(f"{x:g}" for x in sorted(set(threads))) if threads else NA,
            ", ".join(f"{x:g}" for x in sorted(set(busy))) if busy else NA,
        ]
        rows.append({"label": m, "cells": cells})
    if not any_value:
        return None
    head = [
        "forward passes per step",
        "training images/s, median (range)",
        "training wall time (s)",
        "final training loss",
        "CPU threads",
        "other runnable tasks at start",
    ]
    return {
        "head": head,
        "rows": rows,
        "caption": "Training cost per method (over its seeds, from each run's training metadata; n/a where a run "
        "predates the record). Images/s counts training images through the method's steps, so a method "
        "with two forward passes per step shows it twice: in the passes and in the rate; it depends on "
        "the threads and on what else ran (the last two columns). Final training loss: the mean over "
        f"seeds of the last epoch's; 'still falling': the mean over its last tenth of epochs (3 at least) is more "
        f"than {100 * STILL_FALLING:.0f} % below the tenth before (the training curves are in plots/training-curves.png)."
        + (
            " A deep ensemble trains nothing of its own: n/a, its members' cost is in their method's row."
            if any(is_ensemble(table, m) for m in table.methods)
            else ""
        ),
    }
