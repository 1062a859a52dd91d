"""bench: train methods × seeds, evaluate every checkpoint on identical images, write the report.

Idempotent: a run whose checkpoint exists with the same configuration is skipped, a killed run resumes
from its state file, an evaluation whose checkpoint hash and options are unchanged is not redone.

Layout of --out:  runs/<method>-s<seed>/   results/<run>/<evaluator>.*   report.html report.md table.csv
                  records.csv records.jsonl plots/ bench.yaml
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from mmix_eval import threads as thread_setting
from mmix_eval.bench.launch import LAUNCHERS, Launch
from mmix_eval.bench.launchers import auto_jobs, launch, launcher_resources
from mmix_eval.bench.plan import Bench, load_bench
from mmix_eval.bench.slurm import require_submitit
from mmix_eval.bench.status import complete, finished, stale
from mmix_eval.bench.status import epochs_done as read_epochs_done
from mmix_eval.errors import UserError
from mmix_eval.export import export_target
from mmix_eval.io import FolderLock, atomic_write_text


def run_bench(
    config: str | Path,
    out: str | Path,
    progress: bool = True,
    device: str | None = None,
    echo=print,
    launcher: str | None = None,
    wait: bool = True,
    report_only: bool = False,
    submitit_cluster: str | None = None,
    threads: int | str | None = None,
    **resources,
) -> dict | None:
    """Run every run of the bench with a launcher, then build the report from what is finished.

    auto (default): local when more than one run can go at a time (``auto_jobs``), else inline. inline: one after
    the other in this process. local: worker processes, ``jobs`` at a time (GPUs shared round-robin). slurm: one submitit job per run. Finished runs are skipped by every launcher;
    with ``report_only`` nothing runs and the report says which runs are missing."""
    bench = load_bench(config)
    if device is not None:  # the override is part of each run's configuration, as the jobs record it
        for r in bench.runs:
            r.cfg.train.device = device
        bench.options = replace(bench.options, device=device)
    out = Path(out)
    launcher = launcher or bench.launcher.get("name") or "auto"
    if launcher not in (*LAUNCHERS, "auto"):
        raise UserError(f"launcher: expected one of {', '.join(LAUNCHERS)}, got '{launcher}'")
    res = launcher_resources(bench.launcher, resources)
    if launcher in ("auto", "local") and not report_only:
        why = "--jobs or the YAML's launcher.jobs"
        if res["jobs"] is None:
            res["jobs"], why = auto_jobs(bench, device)
        echo(
            f"bench {bench.name}: {res['jobs']} run{'s' if res['jobs'] != 1 else ''} at a time ({why}; each run's "
            f"numbers are the same at any count)"
        )
    if launcher == "auto":  # several at a time: worker processes; one: in this process
        launcher = "local" if (res["jobs"] or 1) > 1 and spawn_safe() else "inline"
    pool = None
    if launcher == "local" and not report_only and any(not complete(Path(out), bench, r) for r in bench.runs):
        from mmix_eval.bench.launchers import start_pool

        pool = start_pool(max(1, min(res["jobs"], len(bench.runs))), device)  # workers start while the preflight runs
    thread_setting.prepare_torch(threads)  # before this process runs torch (the preflight, ensembles, an inline run)
    try:
        if launcher == "slurm" and not report_only:
            require_submitit()  # a missing package fails before anything is written
        if not report_only:
            preflight(bench)
        out.mkdir(parents=True, exist_ok=True)
        if report_only:  # reads what is finished; never trains, so it needs no lock
            atomic_write_text(out / "bench.yaml", yaml.safe_dump(bench.raw, sort_keys=False))
            return _report(bench, out, {}, {}, time.perf_counter(), echo)
        with FolderLock(out):  # a second bench on this --out would train the same runs twice
            return _run_locked(bench, config, out, device, progress, launcher, res, wait, submitit_cluster, echo, pool)
    finally:
        if pool is not None:  # every run and figure is written (or the bench stopped): the workers may go
            pool.shutdown(wait=False, cancel_futures=True)


def _preload_report(started: threading.Event) -> None:
    """The report's modules, the built-in evaluators' report sections and scipy.stats (1 s alone), loaded beside
    the runs once the workers' own start-up is over (``started``): loaded after the runs, they held up the
    report; loaded at the very start, they slowed the workers' start-up. Imports are thread-safe: the report
    waits for any still loading."""
    import importlib
    import pkgutil

    started.wait()
    import scipy.stats  # noqa: F401  (the report's t quantiles and binomial tests)

    import mmix_eval.report.build  # noqa: F401
    import mmix_eval.report.sections as sections

    for mod in pkgutil.iter_modules(sections.__path__):
        importlib.import_module(f"{sections.__name__}.{mod.name}")


def spawn_safe() -> bool:
    """Whether worker processes can be spawned from here: a spawned worker re-imports the main module by its file
    or module name, which a script read from stdin or ``python -c`` does not have (then runs go one by one, inline)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(main, "__file__", None)
    return spec is not None or path is None or Path(path).is_file()


def _run_locked(
    bench, config, out, device, progress, launcher, res, wait, submitit_cluster, echo, pool=None
) -> dict | None:
    atomic_write_text(out / "bench.yaml", yaml.safe_dump(bench.raw, sort_keys=False))
    t_all = time.perf_counter()
    stages: dict[str, float] = {}
    todo = [r for r in bench.runs if not complete(out, bench, r)]
    for r in bench.runs:
        if r not in todo:
            echo(f"{r.name}: done already")
    ctx = Launch(
        bench, config, out, device, progress, res, wait, submitit_cluster, echo, stages, pool, threading.Event()
    )
    if pool is not None:  # this process waits on the workers: it loads the report's code meanwhile (about 1.8 s)
        threading.Thread(target=_preload_report, args=(ctx.started,), daemon=True).start()
    failed = launch(launcher, ctx, todo)
    if failed is None:  # submitted, not waited for
        return None
    if bench.ensembles:
        t0 = time.perf_counter()
        bench.options = replace(
            bench.options, progress=bench.options.progress and progress
        )  # --no-progress covers the ensembles too
        evaluate_ensembles(bench, out, echo)
        stages["ensembles"] = round(time.perf_counter() - t0, 3)
    return _report(bench, out, stages, failed, t_all, echo, pool)  # the idle workers draw the figures


def ensemble_groups(bench: Bench, out: Path) -> list[tuple[str, str, dict | None, list[Path]]]:
    """(name, column label, swept values, member checkpoints) per method column with at least two finished
    and evaluated seeds: what ``ensembles: true`` evaluates as one model each."""
    groups: dict = {}
    for r in bench.runs:
        label = r.label or r.method["name"]
        key = (label, json.dumps(r.sweep, sort_keys=True, default=str))
        groups.setdefault(key, (label, r.sweep, []))[2].append(r)
    out_groups = []
    for (label, _), (_, sweep, runs) in groups.items():
        done = [out / "runs" / r.name / "model.safetensors" for r in runs if complete(out, bench, r)]
        if len(done) >= 2:
            stem = runs[0].name.rsplit("-s", 1)[0]  # the run name without its seed: the column's name
            out_groups.append((f"{stem}-ensemble", f"{label} ensemble of {len(done)}", sweep, done))
    return out_groups


def evaluate_ensembles(bench: Bench, out: Path, echo) -> None:
    """Each method column's finished seeds evaluated as one deep ensemble (skipped where stored and unchanged)."""
    from mmix_eval.evaluate.runner import EvalJob, run_evaluation

    for name, label, sweep, members in ensemble_groups(bench, out):
        t0 = time.perf_counter()
        for ev, opts in bench.plan:  # one evaluator at a time: one that fails on an ensemble is skipped with a note
            if ev.name in bench.ensemble_skip:
                continue
            try:
                run_evaluation(
                    members,
                    [(ev, opts)],
                    out / "results",
                    bench.options,
                    EvalJob(
                        echo=lambda *_: None,
                        skip_done=True,
                        names=[name],
                        labels=[label],
                        sweeps=[sweep],
                        ensemble=True,
                    ),
                )
            except UserError as e:
                bench.ensemble_skip[ev.name] = str(e)
                echo(f"mmix-eval: warning: {ev.name} skipped for the deep ensembles: {e}")
        echo(f"{name}: {len(members)} members evaluated as one ensemble ({time.perf_counter() - t0:.1f} s)")


def preflight(bench: Bench) -> None:
    """Before the first training step, every distinct (data, model, method) of the bench: the data loads (its
    test split), the model builds on the meta device and takes the method's eligible layers, and a 2-image probe
    step gives a scalar loss and (batch, classes) logits. A mistake in the last run fails now, not hours in."""
    from mmix_eval.data import load_data  # torch: loaded when a bench runs
    from mmix_eval.evaluate.base import Preflight
    from mmix_eval.training import preflight as check_run

    seen, data_cache = set(), {}
    for r in bench.runs:
        d = r.cfg.data
        key = json.dumps([d.name, d.root, r.cfg.model.name, r.cfg.model.kwargs, r.method], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        dkey = (d.name, str(d.root), d.download)
        if dkey not in data_cache:
            data_cache[dkey] = load_data(d.name, d.root, d.download, test_limit=2, need_train=False)
        try:
            model = check_run(r.cfg, data_cache[dkey])
            ctx = Preflight(
                d.name,
                d.root,
                data_cache[dkey].in_channels,
                data_cache[dkey].num_classes,
                model,
                bench.options,
                tuple(data_cache[dkey].test.x.shape[1:]),
            )
            for ev, opts in bench.plan:  # what each evaluator would refuse after training, refused now
                ev.preflight(opts, ctx)
        except UserError as e:
            raise UserError(f"bench {bench.name}, run {r.name}: {e}") from None
        if bench.ensembles:  # and what it would refuse on a deep ensemble of such models: skipped there, not an abort
            from mmix_eval.evaluate.ensemble import Ensemble

            ens = Preflight(
                d.name, d.root, ctx.channels, ctx.num_classes, Ensemble([model, model]), bench.options, ctx.image_shape
            )
            for ev, opts in bench.plan:
                try:
                    ev.preflight(opts, ens)
                except UserError as e:
                    bench.ensemble_skip.setdefault(ev.name, str(e))


def dry_run(config: str | Path, out: str | Path, device: str | None = None, echo=print, steps: int = 3) -> list[dict]:
    """What a bench would do, without doing it: each run trained, resumed, evaluated only or skipped, and an
    estimate of the training time from ``steps`` timed training steps per distinct (data, model, method,
    batch size), times the steps per epoch and the epochs still to go. Evaluation time is not estimated."""
    from mmix_eval.training import prepare  # torch: loaded when a bench runs

    bench = load_bench(config)
    if device is not None:
        for r in bench.runs:
            r.cfg.train.device = device
    preflight(bench)
    out, plans, timed = Path(out), [], {}
    for r in bench.runs:
        run_dir = out / "runs" / r.name
        epochs_done = read_epochs_done(run_dir)
        if complete(out, bench, r):
            action, todo = "skip (finished and evaluated)", 0
        elif finished(run_dir, r.cfg, r.method):
            action, todo = "evaluate only (trained)", 0
        elif (run_dir / "config.yaml").exists() and not stale(run_dir, r.cfg, r.method).startswith(
            "the method changed"
        ):
            action, todo = f"resume (epoch {epochs_done} of {r.cfg.train.epochs})", r.cfg.train.epochs - epochs_done
        else:
            action, todo = "train", r.cfg.train.epochs
        seconds = None
        if todo:
            key = json.dumps(
                [
                    r.cfg.data.name,
                    r.cfg.data.train_limit,
                    r.cfg.model.name,
                    r.cfg.model.kwargs,
                    r.method,
                    r.cfg.train.batch_size,
                    r.cfg.train.device,
                ],
                sort_keys=True,
                default=str,
            )
            if key not in timed:
                p = prepare(r.cfg)
                timed[key] = _time_steps(p, r.cfg.train.batch_size, steps) * math.ceil(
                    len(p.data.train) / r.cfg.train.batch_size
                )
            seconds = timed[key] * todo
        plans.append({"run": r.name, "action": action, "train_s": seconds})
        echo(f"{r.name}: {action}" + (f", about {seconds:.0f} s of training" if seconds is not None else ""))
    total = sum(p["train_s"] or 0 for p in plans)
    echo(
        f"bench {bench.name}: {sum(1 for p in plans if p['train_s'])} of {len(plans)} runs to train, about {total:.0f} s "
        f"of training (estimated from {steps} timed steps per configuration; evaluation not included); nothing "
        f"was written"
    )
    return plans


def _time_steps(p, batch_size: int, steps: int) -> float:
    """Seconds per training step of a prepared run: one warm-up step, then the median of ``steps``."""
    import torch  # loaded when a bench runs

    from mmix_eval.data.augment import to_float

    model, device = p.model.to(p.device).train(), p.device
    opt = torch.optim.SGD(model.parameters(), lr=p.cfg.train.lr, momentum=p.cfg.train.momentum)
    x = to_float(p.data.train.x[:batch_size]).to(device)
    y = p.data.train.y[:batch_size].to(device)
    rng, times = np.random.default_rng(0), []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        p.method.step(model, x, y, rng).loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bench_notes(bench: Bench, missing: list[str]) -> list:
    """What the report says at its top about the bench itself: evaluators skipped on the ensembles, runs missing,
    and the baseline where the YAML did not name one."""
    notes = [f"{ev} was not run on the deep ensembles: {why}" for ev, why in sorted(bench.ensemble_skip.items())]
    if missing:
        notes.append(
            f"Incomplete bench: {len(missing)} of {len(bench.runs)} runs are not in this report "
            f"(not finished or not evaluated): {', '.join(missing)}."
        )
    if bench.baseline is not None and "baseline" not in (bench.raw.get("report") or {}):
        from mmix_eval.report.sections import Note

        why = (
            "vanilla is in the bench)."
            if bench.baseline == "vanilla"
            else "the bench has no vanilla, so its first method; set report.baseline to choose)."
        )
        notes.append(Note(f"Baseline for the differences: {bench.baseline} ({why}", "info"))
    return notes


def _report(bench: Bench, out: Path, stages: dict, failed: dict, t_all: float, echo, pool=None) -> dict:
    from mmix_eval.report import build_report  # matplotlib and pandas: loaded for the report only

    missing = [r.name for r in bench.runs if not complete(out, bench, r)]
    for rn, why in failed.items():
        echo(f"mmix-eval: warning: run {rn} failed: {why}")
    if len(missing) == len(bench.runs):
        raise UserError(
            f"bench {bench.name}: expected at least one finished run to report, got none of "
            f"{len(bench.runs)} ({', '.join(missing)})"
        )
    if missing:
        echo(
            f"mmix-eval: warning: report built without {len(missing)} of {len(bench.runs)} runs "
            f"(not finished or not evaluated): {', '.join(missing)}"
        )
    results = out / "results"
    notes = _bench_notes(bench, missing)
    extra = {
        "bench": bench.raw,
        "command": " ".join(sys.argv) if sys.argv else None,
        "stage_wall_time_s": stages,
        "missing_runs": missing,
        "failed_runs": failed,
    }
    order = list(dict.fromkeys(r.label or r.method["name"] for r in bench.runs))  # the YAML's method order
    result = build_report(
        [results],
        out,
        bench.baseline,
        bench.checks,
        bench.title or f"mmix-eval bench: {bench.name}",
        extra_provenance=extra,
        notes=notes,
        order=order,
        strict_checks=False,
        primary=bench.primary,
        multiplicity=bench.multiplicity,
        plot_columns=bench.plot_columns,
        evaluators=[ev.name for ev, _ in bench.plan],
        sections=bench.sections,
        main=bench.main,
        pdf_plots=bool((bench.raw.get("report") or {}).get("pdf_plots")),
        pool=pool,
    )
    result["missing"] = missing
    result["failed"] = failed
    for target in bench.exports:  # report.export: a tracker, loaded when the bench asks for one
        export_target(target, results, bench.name, out, echo)
    partly = [rn for rn in failed if rn not in missing]  # in the report, though a step of theirs failed
    echo(
        f"bench {bench.name}: {len(bench.runs) - len(missing)} of {len(bench.runs)} runs in the report"
        f"{f', {len(partly)} of them with a failed step (warnings above)' if partly else ''} "
        f"({time.perf_counter() - t_all:.1f} s)"
    )
    return result
