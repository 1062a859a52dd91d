"""Reading result records for a report: every *.jsonl record file under the given folders (or the files
themselves, gzipped or not), with the per-image outcomes and provenance beside them. Imports no torch."""

from __future__ import annotations

import json
import math
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.evaluate.outcomes import read_many_detail, read_outcome_file
from mmix_eval.evaluate.records import MAX_RECORD_BYTES, read_jsonl
from mmix_eval.report.reportset import set_problem


@dataclass
class Results:
    rows: list[dict]
    metas: list[dict]
    bad: list[tuple[str, str]]  # (path, why) for files that could not be read
    sources: list[str] = field(default_factory=list)
    outcomes: dict = field(default_factory=dict)  # (run, evaluator, condition) -> (indices, bool array)
    outcome_files: dict = field(default_factory=dict)  # record file -> its outcomes (the same mapping)
    costs: dict = field(default_factory=dict)  # run -> training cost (frame.COST keys)
    # (run, evaluator, condition, calibrator) -> (indices, bootstrap replicates or None, reliability bins)
    detail: dict = field(default_factory=dict)
    detail_files: dict = field(default_factory=dict)  # record file -> its detail (the same mapping)


MAX_RESULT_FILE = MAX_RECORD_BYTES


def load_results(paths: list[str | Path]) -> Results:
    """Every *.jsonl record file under the given folders (or the files themselves); bad ones are listed."""
    files = _record_files(paths)
    rows, metas, bad, outcomes, found, detail, found_detail = [], [], [], {}, {}, {}, {}
    share: dict = {}  # equal strings and settings of all files held once (records.read_jsonl)
    for f in files:
        new = _read_record_file(f, share, bad)
        if new is None:
            continue
        rows += new
        try:
            found[str(f)], found_detail[str(f)] = _read_outcomes(f, new)
            outcomes.update(found[str(f)])
            detail.update(found_detail[str(f)])
        except (OSError, ValueError, KeyError) as e:
            bad.append((str(f.with_suffix(".outcomes.npz")), f"unreadable per-image outcomes ({e})"))
        metas += _read_meta(f.with_suffix(".meta.json"), bad)
    if not rows:
        raise UserError(
            f"results {', '.join(map(str, paths))}: expected mmix-eval record files (*.jsonl), found "
            f"{'none' if not files else 'only unreadable ones: ' + '; '.join(f'{p} ({why})' for p, why in bad[:3])}"
        )
    costs = {}
    for f in files:
        costs.update(_read_costs(f, bad))
    for m in metas:
        cost = training_cost(Path(str(m.get("checkpoint"))).with_suffix(".json"))
        if cost and m.get("run") is not None:
            costs.setdefault(str(m["run"]), cost)
    return Results(rows, metas, bad, [str(f) for f in files], outcomes, found, costs, detail, found_detail)


def _record_files(paths: list[str | Path]) -> list[Path]:
    """The record files under the given folders or given themselves, each once (by resolved path)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # Training logs (log.jsonl) and a report's own copy of the records (records.jsonl) are not inputs.
            files += sorted(f for f in p.rglob("*.jsonl") if f.name not in ("records.jsonl", "log.jsonl"))
        elif p.is_file() or p.exists():
            files.append(p)
        else:
            raise UserError(
                f"results '{p}': expected a folder or a .jsonl (.jsonl.gz) file, got a path that does not exist"
            )
    return list({f.resolve(): f for f in files}.values())  # a file given twice (or by two paths) is read once


def _read_record_file(f: Path, share: dict, bad: list) -> list[dict] | None:
    """One file's records, each marked with its file; None (and the reason in ``bad``) where it cannot be read."""
    if f.name in ("records.jsonl", "records.jsonl.gz"):  # a report's own records: one build's set, or refused
        problem = set_problem(f.parent)
        if problem:
            bad.append((str(f), problem))
            return None
    try:
        st = f.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device named *.jsonl would block or never end
            raise ValueError("not a regular file")
        if st.st_size > MAX_RESULT_FILE:
            raise ValueError(
                f"{st.st_size:,} bytes, larger than a result file may be ({MAX_RESULT_FILE:,} bytes at "
                f"most: about 120,000 records; split the evaluation over several files)"
            )
        new = read_jsonl(f, MAX_RESULT_FILE, share)
    except (OSError, UnicodeDecodeError, ValueError, EOFError, zlib.error) as e:  # EOFError: a truncated .gz
        bad.append((str(f), str(e)))
        return None
    for r in new:
        r["_source"] = str(f)  # for naming the file of a duplicate; never written
    return new


def _read_meta(meta: Path, bad: list) -> list[dict]:
    """A result's provenance file as a one-item list; none where it is missing, too large or unreadable (said)."""
    if not meta.is_file() or meta.stat().st_size > MAX_RESULT_FILE:
        return []
    try:
        got = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(got, dict):
            raise ValueError("not an object")
        return [got]
    except (OSError, ValueError, RecursionError) as e:
        bad.append((str(meta), f"unreadable provenance ({type(e).__name__}: {str(e)[:120]})"))
        return []


def training_cost(model_json: Path) -> dict | None:
    """A run's training cost from the model.json beside its checkpoint: images/s through the training epochs,
    the run's wall time, forward passes per step (as the method declares it); None when unreadable."""
    try:
        if not model_json.is_file() or model_json.stat().st_size > MAX_RESULT_FILE:
            return None
        t = json.loads(model_json.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(t, dict):
        return None
    train, split = (x if isinstance(x, dict) else {} for x in (t.get("train"), t.get("time_split_s")))
    steps, bs, secs = train.get("steps"), train.get("batch_size"), split.get("training")
    nums = all(_number(v) for v in (steps, bs, secs))
    cost = t.get("cost") if isinstance(t.get("cost"), dict) else {}
    hw = t.get("hardware") if isinstance(t.get("hardware"), dict) else {}
    metrics = t.get("metrics") if isinstance(t.get("metrics"), dict) else {}
    threads = str(hw.get("torch_threads")) if hw.get("torch_threads") is not None else None
    busy = str(hw.get("threads_busy_tasks") or "").split(" ")[0]
    return {
        "train_images_per_s": steps * bs / secs if nums and secs > 0 else None,
        "train_wall_time_s": t.get("wall_time_s") if _number(t.get("wall_time_s")) else None,
        "forward_passes_per_step": cost.get("forward_passes_per_step")
        if _number(cost.get("forward_passes_per_step"))
        else None,
        "final_train_loss": metrics.get("train_loss") if _number(metrics.get("train_loss")) else None,
        "val_nll": metrics.get("val_nll") if _number(metrics.get("val_nll")) else None,  # the held-out split's,
        "val_acc": metrics.get("val_acc") if _number(metrics.get("val_acc")) else None,  # what sweeps are chosen by
        "train_threads": float(threads) if threads and threads.isdigit() else None,
        "busy_tasks_at_start": float(busy) if _is_float(busy) else None,
        "loss_curve": loss_curve(model_json.with_name("log.jsonl")),
    }


MAX_CURVE_EPOCHS = 100_000


def loss_curve(log: Path) -> list[float] | None:
    """The training loss of each epoch, from the run's log.jsonl (None when absent or unreadable): what the
    report's training-curve figure draws and its convergence check reads."""
    try:
        if not log.is_file() or log.stat().st_size > MAX_RESULT_FILE:
            return None
        out = {}
        for line in log.read_text(encoding="utf-8").splitlines()[:MAX_CURVE_EPOCHS]:
            e = json.loads(line)
            if isinstance(e, dict) and _number(e.get("epoch")) and _number(e.get("train_loss")):
                out[int(e["epoch"])] = float(e["train_loss"])  # a resumed run logs an epoch again: the last one counts
        return [out[k] for k in sorted(out)] or None
    except (OSError, ValueError, RecursionError):
        return None


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _read_costs(f: Path, bad: list) -> dict:
    """cost.json beside a report's own records: the training costs a rebuild from those records keeps."""
    if f.name not in ("records.jsonl", "records.jsonl.gz"):
        return {}
    path = f.with_name("cost.json")
    try:
        if not path.is_file() or path.stat().st_size > MAX_RESULT_FILE:
            return {}
        got = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(got, dict) or not all(isinstance(v, dict) for v in got.values()):
            raise ValueError("not a mapping of runs to costs")
        return {
            str(k): {
                c: x
                for c, x in v.items()
                if _number(x) or (c == "loss_curve" and isinstance(x, list) and all(_number(y) for y in x))
            }
            for k, v in got.items()
        }
    except (OSError, ValueError, RecursionError) as e:
        bad.append((str(path), f"unreadable training costs ({type(e).__name__})"))
        return {}


def _read_outcomes(f: Path, rows: list[dict]) -> tuple[dict, dict]:
    """Per-image outcomes and probability detail beside a record file: ``<evaluator>.outcomes.npz`` for an
    evaluation's records, ``outcomes.npz`` for a report's own ``records.jsonl`` (or ``records.jsonl.gz``)."""
    if f.name in ("records.jsonl", "records.jsonl.gz"):
        return read_many_detail(f.with_name("outcomes.npz"))
    path = f.with_suffix(".outcomes.npz")
    if not path.exists() or not rows or path.stat().st_size > MAX_RESULT_FILE:  # a FIFO: refused by the reader
        return {}, {}
    indices, per, own, detail = read_outcome_file(path)
    run, evaluator = rows[0]["run"], rows[0]["evaluator"]
    return (
        {(run, evaluator, c): (own.get(c, indices), v) for c, v in per.items()},
        {(run, evaluator, c, cal): (own.get(c, indices), boot, bins) for (c, cal), (boot, bins) in detail.items()},
    )
