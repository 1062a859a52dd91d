"""``bench --verify REPORT``: did retraining and re-evaluating reproduce a committed report, cell by cell, bitwise?
Imports no torch.

Every record of the committed report (its records.jsonl or records.jsonl.gz) is matched with the one the bench just
wrote by (run, evaluator, condition, metric, calibrator, bin), and its value compared exactly (two NaNs are equal).
Training and evaluation are deterministic on one CPU type with the same package versions and thread count (1 per
process by default, ``threads.py``), so on an idle and on a busy machine alike every cell must come back equal.
"""

from __future__ import annotations

import math
from pathlib import Path

from mmix_eval.errors import ParamError

MAX_SHOWN = 10  # differing cells listed by name


def record_file(report: Path) -> Path:
    for name in ("records.jsonl", "records.jsonl.gz"):
        if (report / name).is_file():
            return report / name
    raise ParamError("verify", "expected a report folder with records.jsonl or records.jsonl.gz, got none", report)


def _cells(path: Path) -> dict:
    from mmix_eval.report.load import load_results  # pandas-free reader of records (gzipped too)

    got = load_results([path])
    if got.bad:
        raise ParamError("verify", f"the records of '{path}' are unreadable ({got.bad[0][1]})")
    return {
        (
            str(r["run"]),
            str(r["evaluator"]),
            str(r["condition"]),
            str(r["metric"]),
            str(r.get("calibrator") or "none"),
            r["bin"],
        ): r["value"]
        for r in got.rows
    }


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def verify(committed: str | Path, produced: str | Path) -> tuple[bool, list[str]]:
    """(every committed cell reproduced bitwise, the lines that say so): ``committed`` a report folder, ``produced``
    the bench's output folder (its report's records)."""
    old, new = _cells(record_file(Path(committed))), _cells(record_file(Path(produced)))
    missing = sorted(set(old) - set(new), key=str)
    extra = sorted(set(new) - set(old), key=str)
    differ = sorted((k for k in set(old) & set(new) if not _same(old[k], new[k])), key=str)
    equal = len(set(old) & set(new)) - len(differ)
    lines = [
        f"verify: {equal:,} of {len(old):,} committed cells reproduced bitwise"
        + (f"; {len(differ):,} differ" if differ else "")
        + (f"; {len(missing):,} not produced" if missing else "")
        + (f"; {len(extra):,} new cells not in the committed report" if extra else "")
    ]
    for k in differ[:MAX_SHOWN]:
        run, ev, cond, metric, cal, b = k
        where = (
            f"{run} {ev} {cond} {metric}"
            + (f" ({cal})" if cal != "none" else "")
            + (f" bin {b}" if b is not None else "")
        )
        lines.append(f"  differs: {where}: committed {old[k]!r}, now {new[k]!r}")
    if len(differ) > MAX_SHOWN:
        lines.append(f"  ... and {len(differ) - MAX_SHOWN:,} more")
    for k in missing[:MAX_SHOWN]:
        lines.append(f"  not produced: {' '.join(str(x) for x in k if x is not None)}")
    if differ:
        worst = max(
            differ,
            key=lambda k: (
                abs(new[k] - old[k])
                if all(isinstance(v, float) and math.isfinite(v) for v in (old[k], new[k]))
                else math.inf
            ),
        )
        lines.append(f"  largest difference: {' '.join(str(x) for x in worst if x is not None)}")
    return not differ and not missing, lines
