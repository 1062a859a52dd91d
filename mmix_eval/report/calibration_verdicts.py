"""Does a calibration advantage under shift survive post-hoc calibration? One generated sentence per shift
evaluator, score and method, with paired intervals: over test images (the stored bootstrap replicates) where
both runs have them, else over seeds. Imports no torch."""

from __future__ import annotations

from mmix_eval.report.compare import boot_pair, reference, seed_pair
from mmix_eval.report.table import Table, signed_text as _num


CALIBRATION_SCORES = ("ece", "nll")  # the scores whose advantage under shift is checked after calibration


def _interval(table: Table, i: int, got: tuple) -> str:
    low, high = got[1], got[2]
    return f"{_num(table, i, got[0])} [{_num(table, i, low)}, {_num(table, i, high)}]"


def _pair(table: Table, detail: dict, i: int, a: str, b: str) -> tuple | None:
    """(difference, 95 % low, high, pairs, kind): the paired bootstrap over images where both have replicates,
    else the t interval over seeds; low/high None without an interval."""
    got = boot_pair(table, detail, i, a, b) if detail else None
    if got is not None and got[1] is not None:
        return got[0], got[1], got[2], got[5], "images"
    got = seed_pair(table, i, a, b)
    if got is None:
        return None
    half = got[1]
    return got[0], None if half is None else got[0] - half, None if half is None else got[0] + half, got[2], "seeds"


def _better(got: tuple | None, direction: str) -> bool:
    """The paired interval excludes 0 on the better side."""
    if got is None or got[1] is None:
        return False
    return got[1] > 0 if direction == "higher" else got[2] < 0


def calibration_verdicts(table: Table, baseline: str | None, detail: dict | None = None) -> list[str]:
    """One sentence per shift evaluator, score and method: under how many shifted conditions the method's
    calibration is better than the baseline's before the post-hoc calibrator, and under how many of those
    it still is after it, with the paired 95 % intervals of the largest raw advantage (over test images from the
    bootstrap replicates where every pair has them, else t over seeds)."""
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
                pairs = {c: (_pair(table, detail, raw[c], m, ref), _pair(table, detail, cal[c], m, ref)) for c in cal}
                if not any(a is not None for a, _ in pairs.values()):
                    continue
                kinds = {x[4] for a, b in pairs.values() for x in (a, b) if x is not None}
                n_pairs = max((a[3] for a, _ in pairs.values() if a is not None), default=0)
                if kinds == {"seeds"} and n_pairs < 2:  # one pair and no replicates: no interval to judge by
                    continue
                ahead = [c for c, (a, _) in pairs.items() if _better(a, direction)]
                kept = [c for c in ahead if _better(pairs[c][1], direction)]
                only_after = [c for c, (a, b) in pairs.items() if c not in ahead and _better(b, direction)]
                text = (f"{key}, {label}: {m} is better than {ref} under {len(ahead)} of {len(pairs)} shifted "
                        f"conditions before {name} scaling")
                text += f", and under {len(kept)} of those {len(ahead)} after it" if ahead else ""
                text += f"; better only after it under {len(only_after)}" if only_after else ""
                if ahead:
                    c = max(ahead, key=lambda c: abs(pairs[c][0][0]))
                    a, b = pairs[c]
                    after = _interval(table, cal[c], b) if b is not None and b[1] is not None else "no interval"
                    text += (f" (largest: {table.rows[raw[c]].label.rsplit(': ', 1)[0]}, {_interval(table, raw[c], a)} raw, "
                             f"{after} after")
                    seeds = [seed_pair(table, k, m, ref) for k in (raw[c], cal[c])]
                    if a[4] == "images" and all(x is not None and x[1] is not None for x in seeds):  # the interval
                        # that covers another training seed, beside the one that holds these networks fixed
                        text += "; over {} seeds {} raw, {} after".format(
                            seeds[0][2], *(f"{_num(table, k, x[0])} ± {table.fmt(k, x[1])}" for k, x in zip((raw[c], cal[c]), seeds)))
                    text += ")"
                how = (f"paired 95 % intervals over test images (bootstrap, {n_pairs} seed pair{'s' if n_pairs != 1 else ''} "
                       f"together)" if kinds == {"images"} else f"paired 95 % t intervals over {n_pairs} seeds"
                       if kinds == {"seeds"} else "paired 95 % intervals over test images where both runs stored "
                       "bootstrap replicates, else t over seeds")
                out.append(text + f"; {how}, not corrected for multiplicity.")
    return out
