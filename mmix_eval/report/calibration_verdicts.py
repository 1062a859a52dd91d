"""Does a calibration advantage under shift survive post-hoc calibration? One generated sentence per shift
evaluator, score and method, with paired intervals over seeds. Imports no torch."""

from __future__ import annotations

from mmix_eval.report.compare import reference, seed_pair
from mmix_eval.report.table import Table, signed_text as _num


CALIBRATION_SCORES = ("ece", "nll")  # the scores whose advantage under shift is checked after calibration


def _interval(table: Table, i: int, got: tuple) -> str:
    mean, half = got[0], got[1]
    return f"{_num(table, i, mean)} [{_num(table, i, mean - half)}, {_num(table, i, mean + half)}]"


def _better(got: tuple | None, direction: str) -> bool:
    """The paired t interval excludes 0 on the better side."""
    if got is None or got[1] is None:
        return False
    return got[0] - got[1] > 0 if direction == "higher" else got[0] + got[1] < 0


def calibration_verdicts(table: Table, baseline: str | None) -> list[str]:
    """One sentence per shift evaluator, score and method: under how many shifted conditions the method's
    calibration is better than the baseline's before the post-hoc calibrator, and under how many of those
    it still is after it, with the paired 95 % t intervals (over seeds) of the largest raw advantage."""
    if baseline not in table.methods:
        return []
    out = []
    for key, _, idx in table.sections:
        if key == "comparison":
            continue
        for metric in CALIBRATION_SCORES:
            raw = {table.rows[i].condition: i for i in idx if table.rows[i].metric == metric
                   and table.rows[i].calibrator == "none" and table.rows[i].condition != "clean"}
            cal = {table.rows[i].condition: i for i in idx if table.rows[i].metric == metric
                   and table.rows[i].calibrator != "none" and table.rows[i].condition in raw}
            if len(cal) < 1:
                continue
            name = next(iter({table.rows[i].calibrator for i in cal.values()}))
            label = table.rows[next(iter(raw.values()))].label.rsplit(": ", 1)[-1]
            direction = table.rows[next(iter(raw.values()))].direction
            for m in table.methods:
                ref = reference(table, m, baseline)
                if m == ref:
                    continue
                pairs = {c: (seed_pair(table, raw[c], m, ref), seed_pair(table, cal[c], m, ref)) for c in cal}
                if not any(a is not None for a, _ in pairs.values()):
                    continue
                ahead = [c for c, (a, _) in pairs.items() if _better(a, direction)]
                kept = [c for c in ahead if _better(pairs[c][1], direction)]
                only_after = [c for c, (a, b) in pairs.items() if c not in ahead and _better(b, direction)]
                n_seeds = max((a[2] for a, _ in pairs.values() if a is not None), default=0)
                if n_seeds < 2:  # one pair (an ensemble against an ensemble): no interval over seeds to judge by
                    continue
                text = (f"{key}, {label}: {m} is better than {ref} under {len(ahead)} of {len(pairs)} shifted "
                        f"conditions before {name} scaling")
                text += f", and under {len(kept)} of those {len(ahead)} after it" if ahead else ""
                text += f"; better only after it under {len(only_after)}" if only_after else ""
                if ahead:
                    c = max(ahead, key=lambda c: abs(pairs[c][0][0]))
                    a, b = pairs[c]
                    after = _interval(table, cal[c], b) if b is not None and b[1] is not None else "no interval"
                    text += (f" (largest: {table.rows[raw[c]].label.rsplit(': ', 1)[0]}, {_interval(table, raw[c], a)} raw, "
                             f"{after} after)")
                out.append(text + f"; paired 95 % t intervals over {n_seeds} seeds, not corrected for multiplicity.")
    return out
