"""Does a calibration advantage under shift survive post-hoc calibration? Verdicts rest on the proper scores, NLL
and Brier, raw and after the calibrator, as method claims (the training run as the unit); a calibration error
(ECE and its kin) is never the basis of one: its estimate is biased by each model's own amount. Imports no torch.

Per shift evaluator, score and column, one sentence: under how many shifted conditions the column's raw score is
better than the baseline's, under how many of those it still is after the calibrator, and the calibration gap: the
part of the score the calibrator removes (raw − calibrated), compared between the two. A smaller gap with the
method claim holding is "better calibrated, as the calibrator measures it". Two perfectly calibrated models of
different sharpness have gaps near 0 and are declared different at most at the nominal rate
(``benchmarks/bench_claims.py``), while their raw NLL differs: sharpness, which the sentence keeps apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mmix_eval.evaluate.boot import BOOT_STATS
from mmix_eval.report import stats
from mmix_eval.report.claims import ALPHA, Comparison, Primary, lookup
from mmix_eval.report.compare import _detail, _same_images, is_ensemble, reference
from mmix_eval.report.table import Table
from mmix_eval.report.table import signed_text as _num

PROPER_SCORES = ("nll", "brier")  # what a calibration verdict rests on


class Verdict(str):
    """A calibration sentence with its counts (``facts``), so a compact table can be drawn from the same verdicts."""

    def __new__(cls, text: str, **facts):
        obj = super().__new__(cls, text)
        obj.facts = facts
        return obj


def gap_claim(table: Table, detail: dict, raw: int, cal: int, a: str, b: str) -> stats.MethodTest | None:
    """The method claim on the calibration gap (raw − calibrated score) of column ``a`` minus that of ``b``: per seed
    pair, the difference of the two gaps, with the image terms from the bootstrap replicates (the same resamples
    for the raw and calibrated scores of every run); seeds alone where a run lacks them."""
    cells = [table.cells.get((i, m)) for i in (raw, cal) for m in (a, b)]
    if any(c is None for c in cells) or a not in table.runs or b not in table.runs:
        return None
    seeds = sorted(set.intersection(*(set(c.values) for c in cells)) & set(table.runs[a]) & set(table.runs[b]), key=str)
    ra, rb, ca, cb = cells[0], cells[1], cells[2], cells[3]
    diffs = [(ra.values[s] - ca.values[s]) - (rb.values[s] - cb.values[s]) for s in seeds]
    if len(diffs) < 2 or not all(math.isfinite(d) for d in diffs):
        return None
    k = BOOT_STATS.index(table.rows[raw].metric)
    reps = []
    for s in seeds:
        parts = [_detail(detail, table.runs[m][s], table.rows[i]) for i in (raw, cal) for m in (a, b)]
        if any(x is None or x[1] is None for x in parts) or not all(
            _same_images(parts[0][0], x[0], table.rows[raw], a, b, s, None) for x in parts[1:]
        ):
            reps = None
            break
        (xra, xrb, xca, xcb) = (x[1][:, k].astype(np.float64) for x in parts)
        reps.append((xra - xca) - (xrb - xcb))
    if reps is None:
        return stats.method_test(diffs)
    return stats.method_test(diffs, *stats.replicate_terms(np.stack(reps)), images=len(parts[0][0]))


def _holds(c: Comparison | None, network: bool = False) -> bool:
    """The claim holds in the better direction (a method claim; the network claim for an ensemble)."""
    if c is None:
        return False
    return (c.network_holds if network else c.holds) and c.better


@dataclass(frozen=True)
class _Score:
    """One shift evaluator's proper score: its raw and calibrated rows per condition, the calibrator's name, the
    score's label, and each column's calibration-gap test (raw − calibrated against the reference's, Holm-adjusted)."""

    key: str
    label: str
    calibrator: str
    raw: dict
    cal: dict
    gaps: dict
    adjusted: dict


def calibration_verdicts(
    table: Table,
    baseline: str | None,
    found: list[Comparison],
    detail: dict | None = None,
    primary: Primary | None = None,
) -> list[str]:
    """One sentence per shift evaluator, proper score and column (see the module's docstring)."""
    primary = primary or Primary()
    detail = detail or {}
    if baseline not in table.methods:
        return []
    out = []
    for key, _, idx in table.sections:
        if key == "comparison":
            continue
        for calibrator in calibrators_of(table, idx):
            for metric in PROPER_SCORES:
                score = _score(table, detail, baseline, key, idx, metric, primary, calibrator)
                if score is None:
                    continue
                for m in table.methods:
                    verdict = _column_verdict(table, found, score, m, reference(table, m, baseline))
                    if verdict is not None:
                        out.append(verdict)
    return out


def calibrators_of(table: Table, idx: list[int]) -> list[str]:
    """The calibrators with rows among ``idx``, in the order they first appear ('none' left out)."""
    return list(dict.fromkeys(table.rows[i].calibrator for i in idx if table.rows[i].calibrator != "none"))


def _score(
    table: Table,
    detail: dict,
    baseline: str,
    key: str,
    idx: list[int],
    metric: str,
    primary: Primary,
    calibrator: str,
) -> _Score | None:
    """A section's raw rows and one calibrator's rows of one proper score, and the gap tests; None without
    calibrated rows."""
    raw = {
        table.rows[i].condition: i
        for i in idx
        if table.rows[i].metric == metric and table.rows[i].calibrator == "none" and table.rows[i].condition != "clean"
    }
    cal = {
        table.rows[i].condition: i
        for i in idx
        if table.rows[i].metric == metric and table.rows[i].calibrator == calibrator and table.rows[i].condition in raw
    }
    if not cal:
        return None
    name = calibrator
    label = table.rows[next(iter(raw.values()))].label.rsplit(": ", 1)[-1]
    gaps = {}
    for m in table.methods:
        ref = reference(table, m, baseline)
        if m != ref and not is_ensemble(table, m):
            for c in cal:
                gaps[m, c] = gap_claim(table, detail, raw[c], cal[c], m, ref)
    tested = [k for k, g in gaps.items() if g is not None]
    adjusted = dict(zip(tested, stats.adjust([gaps[k].p for k in tested], primary.multiplicity)))
    return _Score(key, label, name, raw, cal, gaps, adjusted)


def _column_verdict(table: Table, found: list[Comparison], s: _Score, m: str, ref: str) -> Verdict | None:
    """One column's sentence against its reference: lower raw, kept after the calibrator, lower only after it, and
    (a single model) whether its calibration gap is smaller or larger. None where there is nothing to say."""
    if m == ref:
        return None
    ens = is_ensemble(table, m)
    pairs = {c: (lookup(table, found, s.raw[c], m), lookup(table, found, s.cal[c], m)) for c in s.cal}
    if not any(a is not None and (a.network if ens else a.method) is not None for a, _ in pairs.values()):
        return None
    if ens and not any(_holds(a, True) or _holds(b, True) for a, b in pairs.values()):
        return None  # an ensemble's sentence only where one of its network claims holds
    ahead = [c for c, (a, _) in pairs.items() if _holds(a, ens)]
    kept = [c for c in ahead if _holds(pairs[c][1], ens)]
    only_after = [c for c, (a, b) in pairs.items() if c not in ahead and _holds(b, ens)]
    kind = "network claims: these ensembles, per image" if ens else f"method claims, {_basis(pairs)}"
    text = f"{s.key}, {s.label}: {m} lower than {ref} under {len(ahead)} of {len(pairs)} raw"
    text += f", {len(kept)} of those after {s.calibrator} scaling" if ahead else ""
    text += f"; lower only after it under {len(only_after)}" if only_after else ""
    if ahead:
        c = max(ahead, key=lambda c: abs(pairs[c][0].diff))
        a, b = pairs[c]
        text += (
            f" (largest: {table.rows[s.raw[c]].label.rsplit(': ', 1)[0]}, {_iv(table, a, ens)} raw, "
            f"{_iv(table, b, ens) if b is not None else 'no interval'} after)"
        )
    facts = {
        "section": s.key,
        "score": s.label,
        "column": m,
        "calibrator": s.calibrator,
        "n": len(pairs),
        "raw": len(ahead),
        "after": len(kept),
        "ensemble": ens,
    }
    if not ens:
        gap_text, smaller, larger = _gap_text(table, s, m)
        text += gap_text
        facts.update(smaller=smaller, larger=larger)
    return Verdict(text + f" ({kind}).", **facts)


def _gap_text(table: Table, s: _Score, m: str) -> tuple[str, int, int]:
    """'; calibration gap smaller under k, larger under j (largest: ...)' and the two counts."""
    smaller = [c for c in s.cal if s.adjusted.get((m, c), 1.0) < ALPHA and s.gaps[m, c].diff < 0]
    larger = [c for c in s.cal if s.adjusted.get((m, c), 1.0) < ALPHA and s.gaps[m, c].diff > 0]
    text = f"; calibration gap smaller under {len(smaller)}, larger under {len(larger)}"
    shown = smaller + larger or [c for c in s.cal if s.gaps.get((m, c)) is not None]
    if shown:
        c = max(shown, key=lambda c: abs(s.gaps[m, c].diff))
        g = s.gaps[m, c]
        text += (
            f" ({'largest' if smaller + larger else 'largest, not holding'}: "
            f"{table.rows[s.raw[c]].label.rsplit(': ', 1)[0]}, {_num(table, s.raw[c], g.diff)} "
            f"[{_num(table, s.raw[c], g.low)}, {_num(table, s.raw[c], g.high)}])"
        )
    return text, len(smaller), len(larger)


def _basis(pairs: dict) -> str:
    tests = [a.method for a, _ in pairs.values() if a is not None and a.method is not None]
    k = sorted({t.pairs for t in tests})
    n = sorted({t.images for t in tests if t.images})
    return f"{'/'.join(map(str, k))} seed pairs" + (f" × {'/'.join(f'{x:,}' for x in n)} images" if n else "")


def _iv(table: Table, c: Comparison | None, network: bool) -> str:
    if c is None:
        return "no interval"
    if network:
        d = c.network
        if d is None or d[1] is None:
            return "no interval"
        return f"{_num(table, c.row, d[0])} [{_num(table, c.row, d[1])}, {_num(table, c.row, d[2])}]"
    t = c.method
    if t is None:
        return "no interval"
    return f"{_num(table, c.row, t.diff)} [{_num(table, c.row, t.low)}, {_num(table, c.row, t.high)}]"
