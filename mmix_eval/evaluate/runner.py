"""Run evaluators over checkpoints and write the records:
out/<run>/<evaluator>.{jsonl,csv,meta.json,outcomes.npz}. Knows no evaluator by name: it iterates what it
is given (``plan``: evaluator instances with their parsed options), those whose pass yields the clean logits
as a by-product first."""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import (
    DEFAULT_EVALUATORS,
    EvalOptions,
    Evaluator,
    OptionError,
    get_evaluator,
    run_evaluator,
)
from mmix_eval.evaluate.console import summary_table
from mmix_eval.evaluate.outcomes import write_outcomes
from mmix_eval.evaluate.records import FIELDS, REQUIRED, detach, read_records, record_problem, write_records
from mmix_eval.evaluate.units import Unit, evaluation_units  # noqa: F401  (re-exported)
from mmix_eval.io import atomic_write_json, atomic_write_text, safe_name  # noqa: F401  (safe_name: re-exported)
from mmix_eval.provenance import git_commit, hardware, versions

Plan = list[tuple[Evaluator, object]]  # (evaluator, its options), in run order


def file_stem(evaluator: Evaluator, options=None) -> str:
    """The file name records of an evaluator get (a plugin's name may hold any character), with the suffix its
    options ask for (``fgsm --attack pgd`` writes fgsm-pgd7.*, never over an FGSM result)."""
    suffix = evaluator.file_suffix(options) if options is not None else ""
    return safe_name(f"{evaluator.name}-{suffix}" if suffix else evaluator.name)


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
            raise UserError(
                f"{where}: options given for evaluator '{key}', which is not run (evaluators: {', '.join(specs)})"
            )
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
            raise UserError(
                f"{where}: evaluators '{stems[stem]}' and '{ev.name}' would both write {stem}.jsonl; "
                f"expected names that differ in [A-Za-z0-9._-] (rename one)"
            )
        stems[stem] = ev.name
        plan.append((ev, opts))
    return plan


def check_calibrator(spec: str) -> None:
    """Each calibrator of the (comma-separated) list exists and has the interface (a one-line error with a
    suggestion otherwise)."""
    from mmix_eval.calibrators import get_calibrator

    for name in [s.strip() for s in spec.split(",")]:
        try:
            get_calibrator(name)
        except UserError as e:
            raise OptionError("calibrator", str(e)) from None


def run_order(plan: Plan) -> Plan:
    """The plan in the order it runs on a checkpoint: an evaluator whose own pass yields the clean logits
    (FGSM's input gradients) first, so the others reuse them and no checkpoint pays a clean pass of its own
    beside it; otherwise as given. Results and files do not depend on the order."""
    return sorted(plan, key=lambda p: not p[0].clean_by_product(p[1]))


def option_record(ev: Evaluator, opts, common: EvalOptions, device: str) -> dict:
    """What decides whether a stored result is still valid: the evaluator's options and the shared ones."""
    shared = {
        k: v
        for k, v in asdict(common).items()
        if k not in ("progress", "device", "allow_import", "download", "trusted")
    }
    return {"evaluator": ev.name, "evaluator_version": ev.version, **asdict(opts), **shared, "device": device}


@dataclass(frozen=True)
class EvalJob:
    """How one ``run_evaluation`` call treats its checkpoints and results (every field optional).

    ``names``: each checkpoint's run folder (default: its folder's name). ``labels``: each checkpoint's method label
    (a bench method's ``label:``), written to its records' ``method_label`` so that a report names the column by
    it. ``sweeps``: each checkpoint's values of a bench's swept keys ({"alpha": 0.5, "train.epochs": 10}), written
    to its records' ``sweep``. ``foreign``: a ``mmix_eval.foreign.Foreign`` when the files are plain state dicts
    (the model and data named by it); each file's column is then labelled by its file name. ``ensemble``: the
    checkpoints are the members of one deep ensemble, evaluated as one model (``evaluate/ensemble.py``), named
    '<method>-ensemble' and labelled '<method> ensemble of k' unless ``names`` / ``labels`` say otherwise.
    ``skip_done``: keep results whose checkpoint hash and options are unchanged (a bench continues where it
    stopped). ``echo``: where each result's summary goes."""

    names: list[str] | None = None
    labels: list[str | None] | None = None
    sweeps: list[dict | None] | None = None
    foreign: Any = None
    ensemble: bool = False
    skip_done: bool = False
    echo: Callable[[str], Any] = print
    origins: dict[str, str] | None = None  # a checkpoint's local path -> where it was fetched from (hf://...)


@dataclass(frozen=True)
class Context:
    """What every unit of one call shares: the shared options as given (what a stored result is compared with)
    and as run (the resolved device; progress on the main rank only), whether this rank writes, and the job."""

    common: EvalOptions
    run_common: EvalOptions
    device: Any  # a torch.device
    main: bool
    job: EvalJob


def run_evaluation(
    ckpts: list[str | Path], plan: Plan, out: str | Path, common: EvalOptions, job: EvalJob | None = None
) -> list[dict]:
    """Evaluate each checkpoint (or the one ensemble of them) with each evaluator of ``plan``; write each result
    under ``out/<run>/`` and return every row."""
    # torch: loaded when an evaluation runs (bench and the CLI import this module for --help)
    from mmix_eval import distributed
    from mmix_eval.device import resolve_device

    job = job or EvalJob()
    check_calibrator(common.calibrator)  # everything cheap is checked before the first result is written
    units = evaluation_units([Path(c) for c in ckpts], job)
    device = resolve_device(distributed.device_for(common.device))
    main = distributed.is_main()  # under torchrun every rank evaluates its shard; rank 0 alone writes
    ctx = Context(common, replace(common, device=str(device), progress=common.progress and main), device, main, job)
    plan = run_order(plan)
    rows = []
    for unit in units:
        rows += _run_unit(unit, plan, Path(out) / unit.name, ctx)
    return rows


def _run_unit(unit: Unit, plan: Plan, folder: Path, ctx: Context) -> list[dict]:
    """Every evaluator of the plan on one unit: a stored result still valid is read back, the target loaded once
    at the first evaluator that runs."""
    from mmix_eval import distributed

    sha, rows, target = unit.meta.get("data_sha256"), [], None
    for ev, opts in plan:
        stem = file_stem(ev, opts)
        options = option_record(ev, opts, ctx.common, str(ctx.device))
        done = lambda: evaluation_done(folder, stem, sha, options, unit.label, unit.sweep)  # noqa: B023 (called now)
        if ctx.job.skip_done and distributed.agree(done):
            rows += read_records(folder / f"{stem}.jsonl")
            if ctx.main:  # a run killed after writing the result, before removing its journal
                discard_journal(folder, stem)
            continue
        if target is None:
            target = _load(unit, ctx)
        target.journal = _journal(folder / f"{stem}.partial", options, sha, ctx)
        t0 = time.perf_counter()
        got, outcomes, detail = _evaluate(
            ev,
            opts,
            target,
            ctx.run_common,
            unit.name,
            unit.label,
            unit.sweep,
            folder / f"{stem}.error.log" if ctx.main else None,
        )
        wall = time.perf_counter() - t0
        rows += got
        if ctx.main:
            _write(
                folder / stem,
                got,
                outcomes,
                detail,
                target,
                _result_meta(unit, ev, options, target, wall),
                str(ctx.device),
            )
            if target.journal is not None:
                target.journal.close()
            resumed = (
                f", {len(target.journal.reused)} condition(s) resumed"
                if target.journal and target.journal.reused
                else ""
            )
            ctx.job.echo(
                f"{unit.name}  {ev.name}  (n={len(target.test)}, {wall:.1f} s{resumed}) -> {folder / stem}.csv"
            )
            ctx.job.echo(summary_table(got, f"{folder / stem}.csv"))
    return rows


def _result_meta(unit: Unit, ev: Evaluator, options: dict, target, wall: float) -> dict:
    """What a result's meta file says of it besides versions and hardware."""
    return {
        "checkpoint": str(unit.ckpt) if unit.members is None else [str(m) for m in unit.members],
        "checkpoint_sha256": unit.meta.get("data_sha256"),
        "checkpoint_origin": unit.origin,
        "run": unit.name,
        "evaluator": ev.name,
        "options": options,
        "method_label": unit.label,
        "sweep": unit.sweep,
        "metrics": {k: asdict(v) for k, v in ev.metrics.items()},
        "n_images": len(target.test),
        "wall_time_s": round(wall, 3),
        # conditions read back from a killed run's journal instead of taken again
        "conditions_resumed": len(target.journal.reused) if target.journal is not None else 0,
    }


def discard_journal(folder: Path, stem: str) -> None:
    """The journal of a result already written, if a killed run left it."""
    import shutil

    shutil.rmtree(folder / f"{stem}.partial", ignore_errors=True)


def _journal(folder: Path, options: dict, sha: str | None, ctx: Context):
    """Where this evaluator keeps each condition's logits as it goes (``evaluate.journal``): read back when the job
    resumes (``skip_done``), cleared otherwise. None under torchrun (each rank holds a shard; a condition's logits
    are gathered, and a rank's view of the files is not checked to agree) and for a result with no checkpoint hash."""
    from mmix_eval import distributed
    from mmix_eval.evaluate.journal import Journal, journal_key

    if distributed.active() or sha is None:
        return None
    return Journal(folder, journal_key(options, sha), resume=ctx.job.skip_done, write=ctx.main)


def _load(unit: Unit, ctx: Context):
    """The unit's evaluation target: model, test subset, held-out split where a calibrator is fitted."""
    from mmix_eval.evaluate.target import load_target

    c, foreign = ctx.common, ctx.job.foreign
    return load_target(
        unit.ckpt,
        ctx.device,
        c.data,
        c.data_root,
        c.limit,
        c.seed,
        unit.name,
        c.allow_import,
        with_val=c.calibrator != "none",
        class_map=c.class_map,
        foreign=foreign,
        meta=unit.meta if foreign else None,
        download=c.download,
        calibration_split=c.calibration_split,
        members=unit.members,
        trusted=c.trusted,
    )


def _evaluate(
    ev: Evaluator, opts, target, common: EvalOptions, name: str, label, sweep, log: Path | None = None
) -> tuple[list[dict], dict, dict]:
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
    outcomes, detail = {}, {}
    for r in rows:
        got = detach(r)  # the per-image data: stored beside the records, not in them
        if got is not None and got.correct is not None:  # a condition on other images than the test subset (a
            # natural-shift set) brings its own image indices
            outcomes[r["condition"]] = got.correct if got.indices is None else (got.indices, got.correct)
        if got is not None and got.boot is not None:
            detail[r["condition"], r.get("calibrator") or "none"] = (got.boot, got.bins)
    for i, r in enumerate(rows):
        for k in [k for k in r if k.startswith("_")]:  # a plugin's own private keys are not record columns either
            del r[k]
        r["method_label"], r["sweep"] = label, sweep
        for f in (
            FIELDS
        ):  # a plugin's row built by hand without an optional field (bin, label, ...): null, as record() gives
            r.setdefault(f, None)
        if r["value"] is None:
            r["value"] = math.nan  # written as null, read back as NaN
        missing = [f for f in REQUIRED if r.get(f) is None]
        why = f"it lacks {', '.join(missing)}" if missing else record_problem(r)
        if why:  # refused before anything is written (it was written, then a traceback)
            raise UserError(
                f"evaluator '{ev.name}' on run '{name}': row {i + 1} expected a record as "
                f"evaluate.records.record builds it, got one where {why}"
            )
    return rows, outcomes, detail


def _write(stem: Path, rows: list[dict], outcomes: dict, detail: dict, target, meta: dict, device: str) -> None:
    """The records (jsonl, csv), the outcomes and, last, the meta file that marks the result done."""
    write_records(rows, stem)
    if outcomes or detail:
        write_outcomes(stem.parent / f"{stem.name}.outcomes.npz", outcomes, target.indices, detail)
    atomic_write_json(
        stem.parent / f"{stem.name}.meta.json",
        {
            **meta,
            "versions": versions(),
            "git_commit": git_commit(),
            "hardware": hardware(device),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def evaluation_done(
    folder: Path, stem: str, sha: str | None, options: dict, label: str | None = None, sweep: dict | None = None
) -> bool:
    """The one notion of "already evaluated" (``--skip-done`` here and a bench's runs): this evaluator's result
    files exist for the same checkpoint (hash), the same options on any device, and the same column label and
    swept values."""
    try:
        meta = json.loads((folder / f"{stem}.meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    drop_device = lambda o: {k: v for k, v in (o or {}).items() if k != "device"}  # noqa: E731
    return (
        sha is not None
        and meta.get("checkpoint_sha256") == sha
        and drop_device(meta.get("options")) == drop_device(options)
        and meta.get("method_label") == label
        and meta.get("sweep") == sweep
        and (folder / f"{stem}.jsonl").exists()
    )
