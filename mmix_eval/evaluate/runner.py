"""Run evaluators over checkpoints and write the records:
out/<run>/<evaluator>.{jsonl,csv,meta.json,outcomes.npz}. Knows no evaluator by name: it iterates what it
is given (``plan``: evaluator instances with their parsed options), those whose pass yields the clean logits
as a by-product first."""

from __future__ import annotations

import json
import math
import time
import traceback
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import DEFAULT_EVALUATORS, EvalOptions, Evaluator, OptionError, get_evaluator, run_evaluator
from mmix_eval.evaluate.outcomes import write_outcomes
from mmix_eval.evaluate.records import FIELDS, REQUIRED, read_records, record_problem, summary_table, write_records
from mmix_eval.io import atomic_write_json, atomic_write_text, safe_name  # noqa: F401  (safe_name: re-exported)
from mmix_eval.provenance import git_commit, hardware, versions

Plan = list[tuple[Evaluator, object]]  # (evaluator, its options), in run order


def file_stem(evaluator: Evaluator, options=None) -> str:
    """The file name records of an evaluator get (a plugin's name may hold any character), with the suffix its
    options ask for (``fgsm --attack pgd`` writes fgsm-pgd7.*, never over an FGSM result)."""
    suffix = evaluator.file_suffix(options) if options is not None else ""
    return safe_name(f"{evaluator.name}-{suffix}" if suffix else evaluator.name)


def _run_names(ckpts: list[Path], by_stem: bool = False) -> list[str]:
    """A run per checkpoint: its folder's name (a run folder holds model.safetensors), or with ``by_stem``
    its file name (plain state dicts, often many in one folder)."""
    names, seen = [], {}
    for c in ckpts:
        name = safe_name(c.stem if by_stem else (c.resolve().parent.name or c.stem))
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def make_plan(specs: list[str] | None = None, options: dict | None = None, where: str = "evaluate") -> Plan:
    """Evaluators by name / import path with their options (a mapping per evaluator spec), checked now:
    an unknown evaluator, an unknown option key, a value of the wrong type or out of range fails here,
    before any checkpoint is loaded."""
    specs = list(specs or DEFAULT_EVALUATORS)
    options = dict(options or {})
    if len(set(specs)) != len(specs):
        raise UserError(f"{where}: an evaluator is named twice in {', '.join(specs)}")
    for key in options:
        if key not in specs:
            raise UserError(f"{where}: options given for evaluator '{key}', which is not run (evaluators: {', '.join(specs)})")
    plan, names, stems = [], set(), {}
    for spec in specs:
        ev = get_evaluator(spec)
        if ev.name in names:
            raise UserError(f"{where}: two evaluators are both named '{ev.name}'")
        names.add(ev.name)
        raw = options.get(spec) or {}
        if not isinstance(raw, dict):
            raise UserError(f"{where} '{spec}': expected a mapping of options, got {type(raw).__name__}")
        opts = ev.options(raw, f"{where} '{spec}'")
        stem = file_stem(ev, opts)
        if stem in stems:  # two names that sanitise alike would overwrite each other's files
            raise UserError(f"{where}: evaluators '{stems[stem]}' and '{ev.name}' would both write {stem}.jsonl; "
                            f"expected names that differ in [A-Za-z0-9._-] (rename one)")
        stems[stem] = ev.name
        plan.append((ev, opts))
    return plan


def check_calibrator(spec: str) -> None:
    """The calibrator exists and has the interface (a one-line error with a suggestion otherwise)."""
    from mmix_eval.calibrators import get_calibrator

    try:
        get_calibrator(spec)
    except UserError as e:
        raise OptionError("calibrator", str(e)) from None


def run_order(plan: Plan) -> Plan:
    """The plan in the order it runs on a checkpoint: an evaluator whose own pass yields the clean logits
    (FGSM's input gradients) first, so the others reuse them and no checkpoint pays a clean pass of its own
    beside it; otherwise as given. Results and files do not depend on the order."""
    return sorted(plan, key=lambda p: not p[0].clean_by_product(p[1]))


def option_record(ev: Evaluator, opts, common: EvalOptions, device: str) -> dict:
    """What decides whether a stored result is still valid: the evaluator's options and the shared ones."""
    shared = {k: v for k, v in asdict(common).items() if k not in ("progress", "device", "allow_import", "download", "trusted")}
    return {"evaluator": ev.name, "evaluator_version": ev.version, **asdict(opts), **shared, "device": device}


def run_evaluation(ckpts: list[str | Path], plan: Plan, out: str | Path, common: EvalOptions,
                   echo=print, skip_done: bool = False, names: list[str] | None = None,
                   labels: list[str | None] | None = None, sweeps: list[dict | None] | None = None,
                   foreign=None, ensemble: bool = False) -> list[dict]:
    """Evaluate each checkpoint with each evaluator of ``plan``. ``skip_done``: keep results whose
    checkpoint hash and options are unchanged (bench uses this to continue where it stopped). ``labels``:
    each checkpoint's method label (a bench method's ``label:``), written to its records' ``method_label``
    so that a report names the column by it. ``sweeps``: each checkpoint's values of a bench's swept keys
    ({"alpha": 0.5, "train.epochs": 10}), written to its records' ``sweep``. ``foreign``: a
    ``mmix_eval.foreign.Foreign`` when the files are plain state dicts (the model and data named by it); each
    file's column is then labelled by its file name. ``ensemble``: the checkpoints are the members of one deep
    ensemble, evaluated as one model (``evaluate/ensemble.py``), named '<method>-ensemble' and labelled
    '<method> ensemble of k' unless ``names`` / ``labels`` say otherwise."""
    # torch: loaded when an evaluation runs (bench and the CLI import this module for --help)
    from mmix_eval import distributed
    from mmix_eval.checkpoint import read_metadata
    from mmix_eval.device import resolve_device
    from mmix_eval.evaluate.target import load_target

    # Everything that can be checked cheaply is checked before the first result is written.
    check_calibrator(common.calibrator)
    ckpts = [Path(c) for c in ckpts]
    if not ckpts:
        raise UserError("ckpt: expected at least one checkpoint, got none")
    if foreign is not None:
        from mmix_eval.foreign import metadata

        metas = [metadata(c, foreign) for c in ckpts]
        labels = labels or [c.stem for c in ckpts]
        names = names or _run_names(ckpts, by_stem=True)
    else:
        metas = [read_metadata(c) for c in ckpts]  # headers only; kept for the hashes below
    groups: list = [None] * len(ckpts)  # each unit's ensemble members (None: a single checkpoint)
    if ensemble:
        from mmix_eval.evaluate.ensemble import check_members, ensemble_method, ensemble_sha

        if foreign is not None:
            raise UserError("ensemble: expected mmix-eval checkpoints, got plain state dicts (--model); evaluate them one by one")
        check_members(ckpts, metas)  # before anything is loaded or written
        method = ensemble_method(metas)
        groups, metas = [ckpts], [{**metas[0], "data_sha256": ensemble_sha(metas)}]
        names = names or [safe_name(f"{method}-ensemble")]
        labels = labels or [f"{method} ensemble of {len(ckpts)}"]
        ckpts = ckpts[:1]
    device = resolve_device(distributed.device_for(common.device))
    main = distributed.is_main()  # under torchrun every rank evaluates its shard; rank 0 alone writes
    run_common = replace(common, device=str(device), progress=common.progress and main)

    plan = run_order(plan)
    out = Path(out)
    all_rows = []
    for ckpt, meta, name, label, sweep, members in zip(ckpts, metas, names or _run_names(ckpts),
                                                       labels or [None] * len(ckpts), sweeps or [None] * len(ckpts), groups):
        sha = meta.get("data_sha256")
        target = None
        folder = out / name
        for ev, opts in plan:
            stem = file_stem(ev, opts)
            options = option_record(ev, opts, common, str(device))
            if skip_done and distributed.agree(lambda: evaluation_done(folder, stem, sha, options, label, sweep)):
                all_rows += read_records(folder / f"{stem}.jsonl")
                continue
            if target is None:
                target = load_target(ckpt, device, common.data, common.data_root, common.limit, common.seed, name,
                                     common.allow_import, with_val=common.calibrator != "none",
                                     class_map=common.class_map, foreign=foreign, meta=meta if foreign else None,
                                     download=common.download, calibration_split=common.calibration_split,
                                     members=members, trusted=common.trusted)
            t0 = time.perf_counter()
            rows, outcomes, detail = _evaluate(ev, opts, target, run_common, name, label, sweep,
                                       folder / f"{stem}.error.log" if main else None)
            wall = time.perf_counter() - t0
            all_rows += rows
            if not main:
                continue
            _write(folder / stem, rows, outcomes, detail, target, {
                "checkpoint": str(ckpt) if members is None else [str(m) for m in members], "checkpoint_sha256": sha, "run": name, "evaluator": ev.name,
                "options": options, "method_label": label, "sweep": sweep, "metrics": {k: asdict(v) for k, v in ev.metrics.items()},
                "n_images": len(target.test), "wall_time_s": round(wall, 3)}, str(device))
            echo(f"{name}  {ev.name}  (n={len(target.test)}, {wall:.1f} s) -> {folder / stem}.csv")
            echo(summary_table(rows, f"{folder / stem}.csv"))
    return all_rows


def _evaluate(ev: Evaluator, opts, target, common: EvalOptions, name: str, label, sweep,
              log: Path | None = None) -> tuple[list[dict], dict, dict]:
    """One evaluator on one target: its rows (private keys dropped, label and sweep set), per-image outcomes
    (condition -> correctness bits) and probability detail ((condition, calibrator) -> (bootstrap replicates,
    reliability bins))."""
    try:
        rows = run_evaluator(ev, target, opts, common)
    except UserError:
        raise
    except Exception as e:  # a plugin's bug: one line naming it, its traceback in a file for its author; what
        where = ""  # other evaluators wrote stays
        if log is not None:
            try:
                atomic_write_text(log, traceback.format_exc())
                where = f" (traceback: {log})"
            except OSError:
                pass
        raise UserError(f"evaluator '{ev.name}' failed on run '{name}': {type(e).__name__}: {e}{where}") from None
    # a condition on other images than the test subset (a natural-shift set) brings its own image indices
    outcomes = {r["condition"]: ((r.pop("_indices"), r.pop("_correct")) if "_indices" in r else r.pop("_correct"))
                for r in rows if "_correct" in r}
    detail = {(r["condition"], r.get("calibrator") or "none"): (r.pop("_boot"), r.pop("_bins")) for r in rows if "_boot" in r}
    for i, r in enumerate(rows):
        for k in [k for k in r if k.startswith("_")]:
            del r[k]
        r["method_label"], r["sweep"] = label, sweep
        for f in FIELDS:  # a plugin's row built by hand without an optional field (bin, label, ...): null, as record() gives
            r.setdefault(f, None)
        if r["value"] is None:
            r["value"] = math.nan  # written as null, read back as NaN
        missing = [f for f in REQUIRED if r.get(f) is None]
        why = f"it lacks {', '.join(missing)}" if missing else record_problem(r)
        if why:  # refused before anything is written (it was written, then a traceback)
            raise UserError(f"evaluator '{ev.name}' on run '{name}': row {i + 1} expected a record as "
                            f"evaluate.records.record builds it, got one where {why}")
    return rows, outcomes, detail


def _write(stem: Path, rows: list[dict], outcomes: dict, detail: dict, target, meta: dict, device: str) -> None:
    """The records (jsonl, csv), the outcomes and, last, the meta file that marks the result done."""
    write_records(rows, stem)
    if outcomes or detail:
        write_outcomes(stem.parent / f"{stem.name}.outcomes.npz", outcomes, target.indices, detail)
    atomic_write_json(stem.parent / f"{stem.name}.meta.json", {
        **meta, "versions": versions(), "git_commit": git_commit(), "hardware": hardware(device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def evaluation_done(folder: Path, stem: str, sha: str | None, options: dict, label: str | None = None,
                    sweep: dict | None = None) -> bool:
    """The one notion of "already evaluated" (``--skip-done`` here and a bench's runs): this evaluator's result
    files exist for the same checkpoint (hash), the same options on any device, and the same column label and
    swept values."""
    try:
        meta = json.loads((folder / f"{stem}.meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    drop_device = lambda o: {k: v for k, v in (o or {}).items() if k != "device"}  # noqa: E731
    return (sha is not None and meta.get("checkpoint_sha256") == sha and drop_device(meta.get("options")) == drop_device(options)
            and meta.get("method_label") == label and meta.get("sweep") == sweep and (folder / f"{stem}.jsonl").exists())
