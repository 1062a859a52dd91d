"""bench: train methods × seeds, evaluate every checkpoint on identical images, write the report.

Idempotent: a run whose checkpoint exists with the same configuration is skipped, a killed run resumes
from its state file, an evaluation whose checkpoint hash and options are unchanged is not redone.

Layout of --out:  runs/<method>-s<seed>/   results/<run>/<evaluator>.*   report.html report.md table.csv
                  records.csv records.jsonl plots/ bench.yaml
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from mmix_eval.config import Config, merge
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.evaluate.base import BUILTIN, DEFAULT_EVALUATORS, EvalOptions, OptionError, option_fields
from mmix_eval.evaluate.runner import Plan, file_stem, make_plan, option_record, run_evaluation, safe_name
from mmix_eval.io import FolderLock, atomic_write_text

TOP_KEYS = ("name", "data", "model", "train", "methods", "seeds", "sweep", "evaluate", "report", "launcher")
LAUNCHERS = ("inline", "local", "slurm")
LAUNCHER_KEYS = ("name", "jobs", "partition", "gpus_per_run", "cpus_per_run", "mem_gb", "timeout_min", "slurm_extra",
                 "max_parallel")
COMMON_KEYS = tuple(f.name for f in fields(EvalOptions) if f.name not in ("progress", "allow_import", "download"))
REPORT_KEYS = ("baseline", "checks", "title")
METHOD_KEYS = ("name", "kwargs", "alpha", "eligible", "loss", "label")  # alpha, eligible, loss: shorthand for kwargs


@dataclass
class Run:
    name: str
    cfg: Config
    method: dict | None = None  # the method's fingerprint (settings, plugin source hash) its checkpoint must carry
    label: str | None = None  # the YAML method's 'label:', the report's column name for it
    sweep: dict | None = None  # this run's value of each swept key ({"alpha": 0.5, "train.epochs": 10})


@dataclass
class Bench:
    name: str
    runs: list[Run]
    plan: Plan
    options: EvalOptions
    baseline: str | None
    checks: list[str]
    title: str | None
    raw: dict
    launcher: dict


def _strict(d, allowed, where):
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a mapping, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise UserError(f"{where}: unknown key '{k}'{did_you_mean(str(k), allowed)}; expected one of: {', '.join(allowed)}")
    return d


def load_bench(path: str | Path) -> Bench:
    from mmix_eval.io import load_yaml

    path = Path(path)
    raw = load_yaml(path, "bench config")
    where = f"bench config '{path}'"
    raw = _strict(raw, TOP_KEYS, where)
    methods = raw.get("methods") or []
    seeds = raw.get("seeds", [0])
    if not isinstance(methods, list) or not methods:
        raise UserError(f"{where}: 'methods' expected a non-empty list like [vanilla, {{name: manifold_mixup, alpha: 2.0}}]")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise UserError(f"{where}: 'seeds' expected a non-empty list of integers >= 0, got {seeds!r}")
    # The shared sections first, so a mistake in them is named as theirs, not as the first method's.
    merge(Config(), {"data": raw.get("data"), "model": raw.get("model"), "train": raw.get("train")}, where)
    axes = _sweep_axes(raw.get("sweep"), where)
    runs, names = [], {}
    for j, m in enumerate(methods):
        m = {"name": m} if isinstance(m, str) else dict(_strict(m, METHOD_KEYS, f"{where} methods[{j}]"))
        if m.get("kwargs") is not None and not isinstance(m["kwargs"], dict):
            raise UserError(f"{where} methods[{j}]: 'kwargs' expected a mapping of the method's arguments, got {m['kwargs']!r:.100}")
        given = m.pop("label", None)
        if given is not None and (not isinstance(given, str) or not given.strip() or not given.isprintable()):
            raise UserError(f"{where} methods[{j}]: 'label' expected a non-empty printable string, got {given!r:.100}")
        label = given or m.get("name")
        for point in _sweep_points(axes, m, where, j):
            for s in seeds:
                updates = {"data": raw.get("data"), "model": raw.get("model"), "method": m,
                           "train": {**(raw.get("train") or {}), "seed": s}}
                cfg = merge(Config(), _apply_point(updates, point), f"{where} methods[{j}]")
                from mmix_eval.methods import create_method
                from mmix_eval.methods.base import fingerprint

                from mmix_eval.report.labels import sweep_label

                try:
                    method = create_method(cfg.method.name, cfg.method.kwargs)  # fail now
                except UserError as e:
                    raise UserError(f"{where} methods[{j}]: {e}") from None
                name = safe_name("-".join([label, *(f"{_short(k)}{_value_tag(v)}" for k, v in point.items()), f"s{s}"]))
                if name in names and not point:
                    raise UserError(f"{where}: two runs are both named '{name}'; give one method a 'label'")
                if name in names:
                    raise UserError(f"{where}: two runs are both named '{name}' ({names[name]} and methods[{j}] "
                                    f"{sweep_label(point)}); give one method a 'label', or sweep values that "
                                    f"differ once written as names")
                names[name] = f"methods[{j}] {sweep_label(point) or 'unswept'}"
                runs.append(Run(name, cfg, fingerprint(method), given, dict(point) or None))
    unused = [k for k in axes if not _is_config_axis(k) and not any(r.sweep and k in r.sweep for r in runs)]
    if unused:
        from mmix_eval.methods.base import method_arguments

        takes = "; ".join(f"{n}: {', '.join(method_arguments(n)) or 'none'}" for n in dict.fromkeys(r.method["name"] for r in runs))
        raise UserError(f"{where} sweep '{unused[0]}': expected a setting of one of the bench's methods or a "
                        f"section.key of the configuration, got a key no method takes (their arguments: {takes})")
    plan, options = _evaluate_section(raw.get("evaluate"), f"{where} evaluate")
    rep = _strict(raw.get("report"), REPORT_KEYS, f"{where} report")
    checks = rep.get("checks") or []
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        raise UserError(f"{where}: 'report.checks' expected a list of strings, got {checks!r}")
    launcher = dict(_strict(raw.get("launcher"), LAUNCHER_KEYS, f"{where} launcher"))
    from mmix_eval.report.labels import sweep_label

    names = [n for r in runs for n in (r.label, r.method["name"]) if n]  # a column's label, or its method's name
    names += [f"{r.label or r.method['name']} {sweep_label(r.sweep)}" for r in runs if r.sweep]  # a swept column's
    baseline = _baseline_and_checks(rep, checks, names, where)
    columns: dict[str, list[str]] = {}  # a name -> the columns it fits (several for a swept method)
    for r in runs:
        full = f"{r.label or r.method['name']} {sweep_label(r.sweep)}" if r.sweep else (r.label or r.method["name"])
        for n in {r.label, r.method["name"]} - {None}:
            columns.setdefault(n, []).append(full)
    fits = list(dict.fromkeys(columns.get(baseline, [])))
    if len(fits) > 1:
        if "baseline" in rep:
            raise UserError(f"{where}: 'report.baseline' {baseline!r} names {len(fits)} swept columns; expected one of "
                            + ", ".join(f'"{c}"' for c in fits))
        baseline = fits[0]  # the default (the first method) is its first swept column
    return Bench(str(raw.get("name") or path.stem), runs, plan, options, baseline, checks, rep.get("title"), raw, launcher)


SWEEP_SECTIONS = ("data", "model", "train")


def _is_config_axis(key: str) -> bool:
    return key.split(".", 1)[0] in SWEEP_SECTIONS


def _sweep_axes(sweep, where: str) -> dict[str, list]:
    """The bench's ``sweep:``: key -> the values it takes. A key is a method setting (alpha, eligible, a
    plugin's prob; swept for every method that takes it) or a section.key of the configuration (train.epochs,
    model.kwargs.width; swept for every method). Several keys: every combination."""
    if sweep is None:
        return {}
    if not isinstance(sweep, dict) or not sweep:
        raise UserError(f"{where}: 'sweep' expected a mapping of key: [values], e.g. {{alpha: [0.5, 1.0, 2.0]}}, got {sweep!r:.100}")
    axes = {}
    for key, values in sweep.items():
        key = str(key)
        if not isinstance(values, list) or not values:
            raise UserError(f"{where} sweep '{key}': expected a non-empty list of values, got {values!r:.100}")
        if key.startswith("method."):
            rest = key.removeprefix("method.")
            key = rest.removeprefix("kwargs.")
            if rest == "name" or not key:
                raise UserError(f"{where} sweep '{key}': expected a method setting or section.key; list methods under 'methods'")
        if key == "train.seed":
            raise UserError(f"{where} sweep 'train.seed': expected seeds under 'seeds', not swept")
        section = key.split(".", 1)[0]
        if "." in key and section not in SWEEP_SECTIONS:
            raise UserError(f"{where} sweep '{key}': expected a method setting or a key of "
                            f"{', '.join(SWEEP_SECTIONS)}{did_you_mean(section, list(SWEEP_SECTIONS))}")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise UserError(f"{where} sweep '{key}': expected distinct values, got {values!r:.100}")
        if _is_config_axis(key):  # a key that does not exist fails here, naming the sweep
            merge(Config(), _apply_point({"method": {}}, {key: values[0]}), f"{where} sweep '{key}'")
        axes[key] = values
    return axes


def _sweep_points(axes: dict[str, list], m: dict, where: str, j: int) -> list[dict]:
    """Every combination of the swept values that apply to method entry ``m`` ([{}] when none apply)."""
    import itertools

    from mmix_eval.methods import METHODS
    from mmix_eval.methods.base import method_signature

    params, takes_any, _ = method_signature(METHODS.get(str(m.get("name"))))
    own = {**(m.get("kwargs") or {}), **{k: v for k, v in m.items() if k in ("alpha", "eligible", "loss")}}
    keys = []
    for k in axes:
        if _is_config_axis(k):
            keys.append(k)
        elif k in params or takes_any:
            if k in own:
                raise UserError(f"{where} methods[{j}]: sets '{k}', which the sweep sweeps; give it in one place")
            keys.append(k)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def _apply_point(updates: dict, point: dict) -> dict:
    """The run's configuration updates with one combination of swept values set."""
    import copy

    out = copy.deepcopy(updates)
    for key, value in point.items():
        if not _is_config_axis(key):
            method = dict(out["method"])
            method["kwargs"] = {**(method.get("kwargs") or {}), key: value}
            out["method"] = method
            continue
        section, _, rest = key.partition(".")
        target = out[section] = out.get(section) or {}  # a deep copy already: updated in place
        parts = rest.split(".")
        for p in parts[:-1]:
            nxt = target.get(p)
            if nxt is None:
                nxt = target[p] = {}
            elif not isinstance(nxt, dict):
                raise UserError(f"sweep '{key}': '{section}.{p}' is not a mapping")
            target = nxt
        target[parts[-1]] = value
    return out


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _value_tag(v) -> str:
    if isinstance(v, list):
        return "_".join(_value_tag(x) for x in v) or "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v) if v != "" else "input"


def _baseline_and_checks(rep: dict, checks: list[str], methods: list[str], where: str) -> str | None:
    """Checked before any training: the report's baseline (default vanilla when the bench has it, else its
    first method) and every --check's syntax and method names."""
    from mmix_eval.report.checks import parse_check

    known = list(dict.fromkeys(methods))
    if "baseline" in rep:
        baseline = rep["baseline"]
        if baseline is not None and baseline not in known:
            raise UserError(f"{where}: 'report.baseline' expected one of the bench's methods ({', '.join(known)}) "
                            f"or null, got {baseline!r}")
    else:
        baseline = "vanilla" if "vanilla" in known else known[0]
    for check in checks:
        for side in parse_check(check)[::2]:
            if not isinstance(side, float) and side[0] not in known:
                raise UserError(f"{where}: report check '{check}': method '{side[0]}' expected one of the bench's "
                                f"methods ({', '.join(known)})")
    return baseline


def _evaluate_section(section, where: str) -> tuple[Plan, EvalOptions]:
    """The bench YAML's ``evaluate:``: shared keys (limit, seed, bins, ...), an optional ``evaluators:`` list,
    and one mapping of options per evaluator, keyed by its name or import path:

        evaluate:
          limit: 2000
          deformations: {grid: table4, interpolation: nearest}
          fgsm: {eps: [1, 2, 4, 8], attack: pgd, pgd_steps: 7}
          "my_evals:Occlusion": {patch: 8}

    Without ``evaluators:`` the built-ins run, plus every plugin given a section. The flat keys of the
    first version (grid, eps, ...) are still read, as options of the built-in that has them."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise UserError(f"{where}: expected a mapping, got {type(section).__name__}")
    from mmix_eval.evaluate.base import get_evaluator

    flat = {opt: name for name in DEFAULT_EVALUATORS for opt, *_ in option_fields(get_evaluator(name).Options)}
    common, per, legacy, listed = {}, {}, set(), section.get("evaluators")
    for key, value in section.items():
        if key == "evaluators":
            continue
        if key in COMMON_KEYS:
            common[key] = value
        elif key in flat and not (key in BUILTIN and isinstance(value, dict)):  # 'attack': fgsm's option or an evaluator
            per.setdefault(flat[key], {})[key] = value
            legacy.add(flat[key])
        elif key in BUILTIN or ":" in str(key) or isinstance(value, dict):
            if not isinstance(value, dict):
                raise UserError(f"{where} '{key}': expected a mapping of options, got {value!r}")
            per.setdefault(str(key), {}).update(value)
        else:
            allowed = ["evaluators", *COMMON_KEYS, *BUILTIN]
            raise UserError(f"{where}: unknown key '{key}'{did_you_mean(str(key), allowed + list(flat))}; expected one of: "
                            f"{', '.join(allowed)}, or an evaluator's name / module:Class with its options")
    if listed is not None:
        if not isinstance(listed, list) or not listed or not all(isinstance(e, str) for e in listed):
            raise UserError(f"{where}: 'evaluators' expected a non-empty list of evaluator names, got {listed!r}")
        specs = listed
    else:
        specs = [*DEFAULT_EVALUATORS, *(k for k in per if k not in DEFAULT_EVALUATORS)]
    # A flat key of an evaluator that does not run is dropped (the first version wrote them all); an explicit
    # section for one is an error (make_plan says so).
    per = {k: v for k, v in per.items() if k in specs or k not in legacy or k in section}
    try:
        options = EvalOptions(**common)
        options.check()
    except TypeError as e:
        raise UserError(f"{where}: {e}") from None
    except OptionError as e:
        raise UserError(f"{where} '{e.param}': {e.detail}") from None
    try:
        plan = make_plan(specs, per, where)
    except OptionError as e:
        raise UserError(f"{where}: option {e}") from None
    return plan, options


def _stale(run_dir: Path, cfg: Config, method: dict | None = None) -> str | None:
    """Why the checkpoint in ``run_dir`` is not this run's (None: it is): missing, another configuration,
    or the method's settings or plugin source changed since it was trained."""
    from mmix_eval.checkpoint import read_metadata

    ckpt = run_dir / "model.safetensors"
    if not ckpt.exists():
        return "no checkpoint yet"
    try:
        meta = read_metadata(ckpt)
    except UserError as e:
        return f"unreadable checkpoint ({e})"
    from mmix_eval.checkpoint import legacy_fingerprint

    try:  # a checkpoint written by an earlier version has its configuration in that version's layout
        saved = merge(Config(), meta.get("config") or {}, "checkpoint configuration").to_dict()
    except UserError:
        saved = meta.get("config")
    if saved != cfg.to_dict():
        return "its configuration changed"
    if method is not None and legacy_fingerprint(meta.get("method")) != method:
        old, new = legacy_fingerprint(meta.get("method") or {}), method
        old, new = {**old.get("settings", {}), **old}, {**new.get("settings", {}), **new}
        keys = sorted(k for k in {*old, *new} if k != "settings" and old.get(k) != new.get(k))
        return f"the method changed since it was trained ({', '.join(keys)})"
    return None


def _finished(run_dir: Path, cfg: Config, method: dict | None = None) -> bool:
    return _stale(run_dir, cfg, method) is None


def run_one(config: str | Path, out: str | Path, name: str, device: str | None = None) -> str:
    """Train and evaluate one run of a bench, idempotently: the unit of work every launcher runs.
    Returns 'done already', 'resumed' or 'trained'. Under a multi-GPU Slurm job (several tasks) it joins
    the job's process group first, as torchrun would."""
    from mmix_eval import distributed
    from mmix_eval.train import train

    bench = load_bench(config)
    runs = {r.name: r for r in bench.runs}
    if name not in runs:
        raise UserError(f"--only: expected a run of bench '{bench.name}' ({', '.join(runs)}), got '{name}'{did_you_mean(name, list(runs))}")
    r, out = runs[name], Path(out)
    _slurm_torch_env()
    distributed.init_from_env(device or r.cfg.train.device)
    if device is not None:
        r.cfg.train.device = device
        bench.options.device = device
    bench.options.progress = False
    run_dir = out / "runs" / r.name
    why = _stale(run_dir, r.cfg, r.method)
    if why is None:
        status = "done already"
    elif why.startswith("the method changed"):  # its old state files are of the old method: start over
        print(f"{r.name}: re-training, {why}", file=sys.stderr)
        train(r.cfg, run_dir, overwrite=True, progress=False)
        status = f"re-trained ({why})"
    else:
        resume = (run_dir / "config.yaml").exists()
        train(r.cfg, run_dir, resume=resume, progress=False)
        status = "resumed" if resume else "trained"
    run_evaluation([run_dir / "model.safetensors"], bench.plan, out / "results", bench.options,
                   echo=lambda *_: None, skip_done=True, names=[r.name], labels=[r.label],
                   sweeps=[r.sweep])
    return status


def _slurm_torch_env() -> None:
    """Inside a submitit job with several tasks (gpus_per_run > 1), export RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR and MASTER_PORT as torchrun would, so the run trains with DDP across the job's tasks."""
    import os

    if "WORLD_SIZE" in os.environ:
        return
    try:
        import submitit

        env = submitit.JobEnvironment()
        tasks = env.num_tasks
    except Exception:  # not inside a submitit job (inline or local launcher), or no submitit
        return
    if tasks > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _complete(out: Path, bench: Bench, r: Run) -> bool:
    """Trained with this configuration and evaluated by every evaluator of the bench (any device)."""
    import json

    from mmix_eval.checkpoint import read_metadata

    ckpt = out / "runs" / r.name / "model.safetensors"
    if not _finished(ckpt.parent, r.cfg, r.method):
        return False
    sha = read_metadata(ckpt).get("data_sha256")
    for ev, opts in bench.plan:
        want = {k: v for k, v in option_record(ev, opts, bench.options, "").items() if k != "device"}
        try:
            meta = json.loads((out / "results" / r.name / f"{file_stem(ev, opts)}.meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        got = {k: v for k, v in (meta.get("options") or {}).items() if k != "device"}
        if meta.get("checkpoint_sha256") != sha or got != want:
            return False
    return True


def _resources(bench: Bench, overrides: dict) -> dict:
    res = {"jobs": 1, "partition": None, "gpus_per_run": 0, "cpus_per_run": None, "mem_gb": None,
           "timeout_min": 24 * 60, "slurm_extra": {}, "max_parallel": None}
    res.update({k: v for k, v in bench.launcher.items() if k != "name"})
    res.update({k: v for k, v in overrides.items() if v is not None})
    for k in ("jobs", "gpus_per_run", "cpus_per_run", "mem_gb", "timeout_min", "max_parallel"):
        v = res[k]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if k != "gpus_per_run" else 0)):
            raise UserError(f"launcher '{k}': expected an integer >= {1 if k != 'gpus_per_run' else 0}, got {v!r}")
    if not isinstance(res["slurm_extra"], dict):
        raise UserError(f"launcher 'slurm_extra': expected a mapping of sbatch options, got {res['slurm_extra']!r}")
    return res


def run_bench(config: str | Path, out: str | Path, progress: bool = True, device: str | None = None, echo=print,
              launcher: str | None = None, wait: bool = True, report_only: bool = False,
              submitit_cluster: str | None = None, **resources) -> dict | None:
    """Run every run of the bench with a launcher, then build the report from what is finished.

    inline (default): one after the other in this process. local: subprocesses, ``jobs`` at a time (GPUs
    shared round-robin). slurm: one submitit job per run. Finished runs are skipped by every launcher;
    with ``report_only`` nothing runs and the report says which runs are missing."""
    bench = load_bench(config)
    if device is not None:  # the override is part of each run's configuration, as the jobs record it
        for r in bench.runs:
            r.cfg.train.device = device
        bench.options.device = device
    out = Path(out)
    launcher = launcher or bench.launcher.get("name") or "inline"
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher: expected one of {', '.join(LAUNCHERS)}, got '{launcher}'")
    res = _resources(bench, resources)
    if launcher == "slurm" and not report_only:
        _submitit()  # a missing package fails before anything is written
    if not report_only:
        preflight(bench)
    out.mkdir(parents=True, exist_ok=True)
    if report_only:  # reads what is finished; never trains, so it needs no lock
        atomic_write_text(out / "bench.yaml", yaml.safe_dump(bench.raw, sort_keys=False))
        return _report(bench, out, {}, {}, time.perf_counter(), echo)
    with FolderLock(out):  # a second bench on this --out would train the same runs twice
        return _run_locked(bench, config, out, device, progress, launcher, res, wait, submitit_cluster, echo)


def _run_locked(bench, config, out, device, progress, launcher, res, wait, submitit_cluster, echo) -> dict | None:
    atomic_write_text(out / "bench.yaml", yaml.safe_dump(bench.raw, sort_keys=False))
    t_all = time.perf_counter()
    stages: dict[str, float] = {}
    failed: dict[str, str] = {}
    todo = [r for r in bench.runs if not _complete(out, bench, r)]
    for r in bench.runs:
        if r not in todo:
            echo(f"{r.name}: done already")
    if launcher == "inline":
        failed = _inline(config, out, todo, device, progress, stages, bench.name)
    elif launcher == "local":
        failed = _local(config, out, todo, device, progress, res, stages, bench.name)
    else:
        failed = _slurm(config, out, todo, device, progress, res, wait, submitit_cluster, bench, echo)
        if not wait:
            return None
    return _report(bench, out, stages, failed, t_all, echo)


def preflight(bench: Bench) -> None:
    """Before the first training step, every distinct (data, model, method) of the bench: the data loads (its
    test split), the model builds on the meta device and takes the method's eligible layers, and a 2-image probe
    step gives a scalar loss and (batch, classes) logits. A mistake in the last run fails now, not hours in."""
    from mmix_eval.data import load_data
    from mmix_eval.train import preflight as check_run

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
            check_run(r.cfg, data_cache[dkey])
        except UserError as e:
            raise UserError(f"bench {bench.name}, run {r.name}: {e}") from None


def dry_run(config: str | Path, out: str | Path, device: str | None = None, echo=print, steps: int = 3) -> list[dict]:
    """What a bench would do, without doing it: each run trained, resumed, evaluated only or skipped, and an
    estimate of the training time from ``steps`` timed training steps per distinct (data, model, method,
    batch size), times the steps per epoch and the epochs still to go. Evaluation time is not estimated."""
    from mmix_eval.train import prepare

    bench = load_bench(config)
    if device is not None:
        for r in bench.runs:
            r.cfg.train.device = device
    preflight(bench)
    out, plans, timed = Path(out), [], {}
    for r in bench.runs:
        run_dir = out / "runs" / r.name
        epochs_done = _epochs_done(run_dir)
        if _complete(out, bench, r):
            action, todo = "skip (finished and evaluated)", 0
        elif _finished(run_dir, r.cfg, r.method):
            action, todo = "evaluate only (trained)", 0
        elif (run_dir / "config.yaml").exists() and not _stale(run_dir, r.cfg, r.method).startswith("the method changed"):
            action, todo = f"resume (epoch {epochs_done} of {r.cfg.train.epochs})", r.cfg.train.epochs - epochs_done
        else:
            action, todo = "train", r.cfg.train.epochs
        seconds = None
        if todo:
            key = json.dumps([r.cfg.data.name, r.cfg.data.train_limit, r.cfg.model.name, r.cfg.model.kwargs, r.method,
                              r.cfg.train.batch_size, r.cfg.train.device], sort_keys=True, default=str)
            if key not in timed:
                p = prepare(r.cfg)
                timed[key] = _time_steps(p, r.cfg.train.batch_size, steps) * math.ceil(len(p.data.train) / r.cfg.train.batch_size)
            seconds = timed[key] * todo
        plans.append({"run": r.name, "action": action, "train_s": seconds})
        echo(f"{r.name}: {action}" + (f", about {seconds:.0f} s of training" if seconds is not None else ""))
    total = sum(p["train_s"] or 0 for p in plans)
    echo(f"bench {bench.name}: {sum(1 for p in plans if p['train_s'])} of {len(plans)} runs to train, about {total:.0f} s "
         f"of training (estimated from {steps} timed steps per configuration; evaluation not included); nothing "
         f"was written")
    return plans


def _epochs_done(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError:
        return 0


def _time_steps(p, batch_size: int, steps: int) -> float:
    """Seconds per training step of a prepared run: one warm-up step, then the median of ``steps``."""
    import statistics

    import numpy as np
    import torch

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


def _inline(config, out, todo, device, progress, stages, name) -> dict[str, str]:
    from tqdm.auto import tqdm

    with tqdm(total=len(todo), desc=f"bench {name}", unit="run", disable=not progress, dynamic_ncols=True) as bar:
        for r in todo:
            bar.set_postfix_str(r.name)
            t0 = time.perf_counter()
            status = run_one(config, out, r.name, device)
            stages[r.name] = round(time.perf_counter() - t0, 3)
            bar.write(f"{r.name}: {status}, evaluated ({stages[r.name]:.1f} s)")
            bar.update(1)
    return {}


def _local(config, out, todo, device, progress, res, stages, name) -> dict[str, str]:
    """Subprocesses (``python -m mmix_eval bench CONFIG --only RUN``), ``jobs`` at a time; each writes
    OUT/logs/RUN.log. CPU threads are divided between the jobs; visible GPUs are dealt round-robin."""
    import os
    import subprocess

    import torch
    from tqdm.auto import tqdm

    jobs = res["jobs"]
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    gpus = torch.cuda.device_count() if device != "cpu" else 0
    from mmix_eval.threads import resolve

    threads, _ = resolve(None, jobs)  # MMIX_EVAL_THREADS / OMP_NUM_THREADS if set, else usable cores / jobs
    pending, running, failed = list(todo), {}, {}
    free_slots = list(range(jobs))
    with tqdm(total=len(todo), desc=f"bench {name} (local, {jobs} at a time)", unit="run", disable=not progress,
              dynamic_ncols=True) as bar:
        while pending or running:
            while pending and free_slots:
                r, slot = pending.pop(0), free_slots.pop(0)
                cmd = [sys.executable, "-m", "mmix_eval", "bench", str(config), "--out", str(out), "--only", r.name,
                       "--no-progress"] + (["--device", device] if device else [])
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MMIX_EVAL_THREADS": str(threads)}
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
                log = open(logs / f"{r.name}.log", "w", encoding="utf-8")
                running[r.name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, slot,
                                   time.perf_counter())
            time.sleep(0.2)
            for rn, (proc, log, slot, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[rn]
                free_slots.append(slot)
                stages[rn] = round(time.perf_counter() - t0, 3)
                if proc.returncode != 0:
                    failed[rn] = f"exit code {proc.returncode}: {_last_line(logs / f'{rn}.log')} (log: {logs / f'{rn}.log'})"
                bar.write(f"{rn}: {'failed, ' + failed[rn] if rn in failed else 'trained and evaluated'} ({stages[rn]:.1f} s)")
                bar.update(1)
    return failed


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm: expected the submitit package, which is not installed; "
                        "pip install 'mmix-eval[slurm]'") from None
    return submitit


def _slurm(config, out, todo, device, progress, res, wait, cluster, bench, echo) -> dict[str, str]:
    """One submitit job per run. ``cluster``: None (Slurm), or 'local'/'debug' to run the same jobs on this
    machine through submitit's own executors."""
    submitit = _submitit()
    from tqdm.auto import tqdm

    gpus = res["gpus_per_run"]
    if not todo:
        return {}
    executor = submitit.AutoExecutor(folder=out / "slurm", cluster=cluster)
    params = {"name": f"mmix-{bench.name}", "timeout_min": res["timeout_min"], "nodes": 1,
              "tasks_per_node": max(1, gpus), "cpus_per_task": res["cpus_per_run"] or 4}
    if gpus:
        params["gpus_per_node"] = gpus
    if res["mem_gb"]:
        params["mem_gb"] = res["mem_gb"]
    if executor.cluster == "slurm":
        if res["partition"]:
            params["slurm_partition"] = res["partition"]
        if res["slurm_extra"]:
            params["slurm_additional_parameters"] = dict(res["slurm_extra"])
    if executor.cluster == "slurm" and res["max_parallel"]:
        params["slurm_array_parallelism"] = res["max_parallel"]  # at most this many of the array's jobs at once
    executor.update_parameters(**params)
    jobs = []
    with executor.batch():
        for r in todo:
            jobs.append((r.name, executor.submit(RunJob(), str(Path(config).resolve()), str(out.resolve()), r.name, device)))
    ids = {rn: str(j.job_id) for rn, j in jobs}
    atomic_write_text(out / "jobs.yaml", yaml.safe_dump({"executor": executor.cluster, "jobs": ids}, sort_keys=False))
    echo(f"submitted {len(jobs)} job(s) to {executor.cluster}: {', '.join(f'{k}={v}' for k, v in ids.items()) or 'none'}")
    if not wait:
        echo(f"not waiting; when they are done (or to see what is missing): mmix-eval bench {config} --out {out} --report-only")
        return {}
    failed, pending, runs = {}, dict(jobs), {r.name: r for r in bench.runs}
    with tqdm(total=len(jobs), desc=f"bench {bench.name} ({executor.cluster})", unit="run", disable=not progress,
              dynamic_ncols=True) as bar:
        while pending:
            for rn, job in list(pending.items()):
                if not job.done():  # the job's state from the scheduler (sacct) or its process; no result file read
                    continue
                del pending[rn]
                # What a job did is read from the records and checkpoint it wrote, never from submitit's result
                # pickle (nothing is unpickled); a failed job is explained by the last error line of its log.
                if _complete(out, bench, runs[rn]):
                    status = "trained and evaluated"
                else:
                    failed[rn] = f"job {job.job_id} failed: {_job_error_from_log(job)} (logs: {job.paths.stderr})"
                    status = "failed"
                bar.write(f"{rn}: {status}")
                bar.update(1)
            if pending:
                time.sleep(0.5)
    return failed


class RunJob:
    """What each Slurm job runs: ``run_one``, made checkpointable for submitit. When Slurm preempts the job or
    its time limit nears, submitit calls ``checkpoint`` and requeues the same call; the requeued job resumes
    the run from its last state file (bitwise: every RNG is in it) and skips evaluations already written."""

    def __call__(self, config: str, out: str, name: str, device: str | None = None) -> str:
        return run_one(config, out, name, device)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(RunJob(), *args, **kwargs)


def _job_error_from_log(job) -> str:
    """The job's own error line from its stderr log (submitit writes the traceback there)."""
    try:
        text = Path(job.paths.stderr).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    return _job_error(Exception(text)) if text.strip() else "no error in its log (killed?)"


def _job_error(e: Exception) -> str:
    """The job's own exception line out of submitit's error text (its traceback, then log paths)."""
    import re

    lines = [ln.strip() for ln in str(e).splitlines()]
    cause = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*", ln)]
    return (cause[-1] if cause else type(e).__name__ + (f": {lines[0]}" if lines and lines[0] else ""))[:300]


def _report(bench: Bench, out: Path, stages: dict, failed: dict, t_all: float, echo) -> dict:
    from mmix_eval.report import build_report

    missing = [r.name for r in bench.runs if not _complete(out, bench, r)]
    for rn, why in failed.items():
        echo(f"mmix-eval: warning: run {rn} failed: {why}")
    if len(missing) == len(bench.runs):
        raise UserError(f"bench {bench.name}: expected at least one finished run to report, got none of "
                        f"{len(bench.runs)} ({', '.join(missing)})")
    if missing:
        echo(f"mmix-eval: warning: report built without {len(missing)} of {len(bench.runs)} runs "
             f"(not finished or not evaluated): {', '.join(missing)}")
    results = out / "results"
    notes = [f"Incomplete bench: {len(missing)} of {len(bench.runs)} runs are not in this report "
             f"(not finished or not evaluated): {', '.join(missing)}."] if missing else []
    if bench.baseline is not None and "baseline" not in (bench.raw.get("report") or {}):
        notes.append(f"Baseline for the differences: {bench.baseline} ("
                     + ("vanilla is in the bench)." if bench.baseline == "vanilla" else
                        "the bench has no vanilla, so its first method; set report.baseline to choose)."))
    extra = {"bench": bench.raw, "command": " ".join(sys.argv) if sys.argv else None, "stage_wall_time_s": stages,
             "missing_runs": missing, "failed_runs": failed}
    order = list(dict.fromkeys(r.label or r.method["name"] for r in bench.runs))  # the YAML's method order
    result = build_report([results], out, bench.baseline, bench.checks, bench.title or f"mmix-eval bench: {bench.name}",
                          extra_provenance=extra, notes=notes, order=order, strict_checks=False)
    result["missing"] = missing
    result["failed"] = failed
    echo(f"bench {bench.name}: {len(bench.runs) - len(missing)} of {len(bench.runs)} runs in the report "
         f"({time.perf_counter() - t_all:.1f} s)")
    return result
