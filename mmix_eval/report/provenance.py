"""What a reader needs to cite the numbers: per run, evaluation options, versions, commit, hardware, wall
times and the training metadata; the evaluators' warnings; thread-count notes. Imports no torch."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mmix_eval.report.load import Results


def provenance(results: Results, extra: dict | None) -> dict:
    """What a reader needs to cite the numbers: per run, the evaluation options, versions, commit, hardware,
    wall time per evaluator, and the training metadata next to the checkpoint when it can be read."""
    runs: dict = {}
    for m in sorted(results.metas, key=lambda m: (str(m.get("run")), str(m.get("evaluator")))):
        r = runs.setdefault(str(m.get("run")), {"checkpoint": m.get("checkpoint"), "evaluations": {}})
        r["evaluations"][str(m.get("evaluator"))] = {
            k: m.get(k) for k in ("options", "n_images", "wall_time_s", "versions", "git_commit", "hardware", "created")
        }
        model_json = Path(str(m.get("checkpoint"))).with_suffix(".json")
        if "training" not in r and model_json.is_file():
            try:
                t = json.loads(model_json.read_text(encoding="utf-8"))
                if not isinstance(t, dict):
                    raise ValueError("not an object")
                data = t.get("data") if isinstance(t.get("data"), dict) else {}
                r["training"] = {
                    k: t.get(k)
                    for k in ("config", "metrics", "wall_time_s", "versions", "git_commit", "hardware", "created")
                }
                r["training"]["data_sizes"] = {
                    k: data.get(k) for k in ("train_size", "val_size", "test_size", "subset_seed")
                }
            except (OSError, ValueError, RecursionError):
                r["training"] = "unreadable model.json"
    return {"result_files": len(results.sources), "runs": runs, **(extra or {})}


def thread_notes(prov: dict) -> list[str]:
    """A report whose runs were trained or evaluated with different CPU thread counts says so: float
    reductions split differently, so such runs can differ in their last digits for that reason alone."""
    counts: dict[str, set] = {"trained": set(), "evaluated": set()}
    for r in (prov.get("runs") or {}).values():
        t = r.get("training")
        if isinstance(t, dict) and isinstance(t.get("hardware"), dict) and t["hardware"].get("device", "cpu") == "cpu":
            counts["trained"].add(_text(t["hardware"].get("torch_threads")))
        for e in (r.get("evaluations") or {}).values():
            hw = e.get("hardware") if isinstance(e, dict) else None
            if isinstance(hw, dict) and str(hw.get("device", "cpu")).startswith("cpu"):
                counts["evaluated"].add(_text(hw.get("torch_threads")))
    out = []
    for what, found in counts.items():
        found.discard(None)
        if len(found) > 1:
            out.append(
                f"Runs were {what} with different CPU thread counts ({', '.join(sorted(found, key=str))}); float "
                f"reductions split differently, so their numbers can differ in the last digits for that reason "
                f"alone (see the provenance; set --threads to match)."
            )
    return out


def _text(v) -> str | None:
    return None if v is None else str(v)[:40]


def evaluation_warnings(rows: list[dict]) -> list[str]:
    """The evaluators' warnings (train-mode model, probabilities for logits, randomised forward, zero input
    gradients), one line per warning with the runs and evaluators that raised it (at 20 columns one warning of
    every run was 30 lines)."""
    seen: dict[str, tuple[set[str], set[str]]] = {}
    for r in rows:
        ws = r.get("warnings")
        for w in ws if isinstance(ws, list) else str(ws or "").split("; "):
            if w and w != "None":
                runs, evs = seen.setdefault(w, (set(), set()))
                runs.add(str(r.get("run")))
                evs.add(str(r.get("evaluator")))
    out = []
    for w, (runs, evs) in sorted(seen.items(), key=lambda kv: (sorted(kv[1][0]), kv[0])):
        names = sorted(runs)
        who = (
            names[0]
            if len(names) == 1
            else (
                f"{len(names)} runs ({', '.join(names[:4])}"
                + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                + ")"
            )
        )
        out.append(f"Warning for {who} ({', '.join(sorted(evs))}): {w}")
    return out


def nonfinite_notes(rows: list[dict], limit: int = 4) -> list[str]:
    """Which runs have values that are not finite (NaN in the records: the evaluator's number was undefined or
    overflowed, written as null), one line per run naming up to ``limit`` of them: the cells they feed read
    'n/a (k of n non-finite)'."""
    per: dict[str, list[str]] = {}
    for r in rows:
        if r["bin"] is None and not math.isfinite(r["value"]):
            per.setdefault(str(r["run"]), []).append(f"{r['evaluator']} {r['condition']} {r['metric']}")
    out = []
    for run, what in sorted(per.items()):
        more = f" and {len(what) - limit} more" if len(what) > limit else ""
        out.append(
            f"Non-finite values in run {run} ({len(what)}): {', '.join(what[:limit])}{more}; the evaluator "
            f"recorded NaN (an undefined or overflowing number), so the cells they feed say n/a and make no claim."
        )
    return out
