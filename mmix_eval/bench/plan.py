"""A bench YAML as a plan: runs (methods × sweep points × seeds), the evaluation plan, the report's baseline and
checks. Everything is checked here, before anything trains."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from mmix_eval.bench.sweeps import apply_point, is_config_axis, short_key, sweep_axes, sweep_points, value_tag
from mmix_eval.config import Config, merge
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.evaluate.base import BUILTIN, DEFAULT_EVALUATORS, EvalOptions, OptionError, get_evaluator, option_fields
from mmix_eval.evaluate.runner import Plan, check_calibrator, make_plan, safe_name
from mmix_eval.io import load_yaml
from mmix_eval.report.labels import sweep_label
from mmix_eval.upgrade import V1_METHOD_KEYS

TOP_KEYS = (
    "name",
    "data",
    "model",
    "train",
    "methods",
    "seeds",
    "sweep",
    "evaluate",
    "report",
    "launcher",
    "ensembles",
)
LAUNCHER_KEYS = (
    "name",
    "jobs",
    "partition",
    "gpus_per_run",
    "cpus_per_run",
    "mem_gb",
    "timeout_min",
    "slurm_extra",
    "max_parallel",
)
COMMON_KEYS = tuple(
    f.name for f in fields(EvalOptions) if f.name not in ("progress", "allow_import", "download", "trusted")
)
REPORT_KEYS = (
    "baseline",
    "checks",
    "title",
    "primary",
    "multiplicity",
    "plot_columns",
    "sections",
    "main",
    "pdf_plots",
    "export",
)
METHOD_KEYS = ("name", "kwargs", *V1_METHOD_KEYS, "label")  # alpha, eligible, loss: shorthand for kwargs


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
    ensembles: bool = False  # also evaluate each method's seeds as one deep ensemble (a column of its own)
    primary: list[str] | None = None  # report.primary: the comparisons claimed (None: the default family)
    multiplicity: str = "holm"  # report.multiplicity
    plot_columns: list[str] | None = None  # report.plot_columns
    sections: dict[str, str] | None = None  # report.sections: evaluator -> "module:Class" of a report section
    main: dict | None = None  # report.main: {columns: [...], rows: [...]}
    exports: list[dict] = field(default_factory=list)  # report.export: [{to, project, dest}], after the report
    # evaluator -> why it cannot take a deep ensemble (found by the preflight): skipped for the ensembles, said in the report
    ensemble_skip: dict = field(default_factory=dict)


def _strict(d, allowed, where):
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a mapping, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise UserError(
                f"{where}: unknown key '{k}'{did_you_mean(str(k), allowed)}; expected one of: {', '.join(allowed)}"
            )
    return d


def load_bench(path: str | Path) -> Bench:
    """A bench YAML as runs (methods × sweep points × seeds, each method built and checked now), the evaluation
    plan and the report's baseline and checks; any mistake is one line naming the key."""
    path = Path(path)
    where = f"bench config '{path}'"
    raw = _strict(load_yaml(path, "bench config"), TOP_KEYS, where)
    methods, seeds = _methods_and_seeds(raw, where)
    # The shared sections first, so a mistake in them is named as theirs, not as the first method's.
    merge(Config(), {"data": raw.get("data"), "model": raw.get("model"), "train": raw.get("train")}, where)
    axes = sweep_axes(raw.get("sweep"), where)
    runs = _runs(raw, methods, seeds, axes, where)
    _check_sweep_used(axes, runs, where)
    plan, options = evaluate_section(raw.get("evaluate"), f"{where} evaluate")
    # The YAML being run is trusted (mmix_eval.trust): its runs' checkpoints may name the plugin models and data
    # sources it names itself.
    options = replace(options, trusted=tuple(sorted({s for r in runs for s in (r.cfg.model.name, r.cfg.data.name)})))
    rep = _strict(raw.get("report"), REPORT_KEYS, f"{where} report")
    checks = rep.get("checks") or []
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        raise UserError(f"{where}: 'report.checks' expected a list of strings, got {checks!r}")
    launcher = dict(_strict(raw.get("launcher"), LAUNCHER_KEYS, f"{where} launcher"))
    baseline = _baseline(runs, rep, checks, where)
    ensembles = raw.get("ensembles", False)
    if not isinstance(ensembles, bool):
        raise UserError(f"{where}: 'ensembles' expected true or false, got {ensembles!r:.80}")
    if ensembles and len(seeds) < 2:
        raise UserError(f"{where}: 'ensembles' expected at least 2 seeds per method to ensemble, got {len(seeds)}")
    family = _report_settings(rep, where)
    name = str(raw.get("name") or path.stem)
    return Bench(
        name,
        runs,
        plan,
        options,
        baseline,
        checks,
        rep.get("title"),
        raw,
        launcher,
        ensembles,
        family.patterns,
        family.multiplicity,
        rep.get("plot_columns"),
        rep.get("sections"),
        _main_spec(rep.get("main"), where),
        exports=_exports(rep.get("export"), where),
    )


def _exports(spec, where: str) -> list[dict]:
    """report.export: trackers the records go to once the report is built, checked (and their packages found)
    before anything trains."""
    import importlib.util

    from mmix_eval.export import check_target  # (no tracker is imported here)

    if spec is None:
        return []
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for i, item in enumerate(items):
        target = check_target(item, f"{where}: 'report.export[{i}]'")
        if importlib.util.find_spec(target["to"]) is None:  # each tracker's package is named as the tracker
            raise UserError(
                f"{where}: 'report.export[{i}]' expected the {target['to']} package, which is not installed; "
                f"pip install 'mmix-eval[{target['to']}]'"
            )
        out.append(target)
    return out


def _methods_and_seeds(raw: dict, where: str) -> tuple[list, list[int]]:
    methods = raw.get("methods") or []
    seeds = raw.get("seeds", [0])
    if not isinstance(methods, list) or not methods:
        raise UserError(
            f"{where}: 'methods' expected a non-empty list like [vanilla, {{name: manifold_mixup, alpha: 2.0}}]"
        )
    if not isinstance(seeds, list) or not seeds or not all(_is_seed(s) for s in seeds):
        raise UserError(f"{where}: 'seeds' expected a non-empty list of integers >= 0, got {seeds!r}")
    return methods, seeds


def _is_seed(s) -> bool:
    return isinstance(s, int) and not isinstance(s, bool) and s >= 0


def _check_sweep_used(axes: dict, runs: list, where: str) -> None:
    """A swept key that is neither a configuration key nor a setting any of the bench's methods takes."""
    unused = [k for k in axes if not is_config_axis(k) and not any(r.sweep and k in r.sweep for r in runs)]
    if not unused:
        return
    from mmix_eval.methods.base import method_arguments  # torch: loaded only when a bench is read

    # by the spec the YAML gives (a plugin's own name, e.g. 'noisy_manifold_mixup', is not a registry name)
    takes = "; ".join(
        f"{n}: {', '.join(method_arguments(n)) or 'none'}" for n in dict.fromkeys(r.cfg.method.name for r in runs)
    )
    raise UserError(
        f"{where} sweep '{unused[0]}': expected a setting of one of the bench's methods or a "
        f"section.key of the configuration, got a key no method takes (their arguments: {takes})"
    )


def _report_settings(rep: dict, where: str):
    """The report's primary family, figure columns, PDF switch and section plugins, checked before anything trains."""
    from mmix_eval.report.claims import Primary

    try:
        family = Primary(rep.get("primary"), rep.get("multiplicity", "holm"))
    except UserError as e:
        raise UserError(f"{where} report.{e}") from None
    plot_columns = rep.get("plot_columns")
    if plot_columns is not None and (
        not isinstance(plot_columns, list) or not all(isinstance(c, str) for c in plot_columns)
    ):
        raise UserError(f"{where}: 'report.plot_columns' expected a list of column labels, got {plot_columns!r:.80}")
    if not isinstance(rep.get("pdf_plots", False), bool):
        raise UserError(f"{where}: 'report.pdf_plots' expected true or false, got {rep.get('pdf_plots')!r:.80}")
    sections = rep.get("sections")
    if sections is not None and (
        not isinstance(sections, dict)
        or not all(isinstance(k, str) and isinstance(v, str) and ":" in v for k, v in sections.items())
    ):
        raise UserError(
            f"{where}: 'report.sections' expected a mapping of evaluator: module:Class (a ReportSection "
            f"subclass), got {sections!r:.80}"
        )
    return family


def _main_spec(main, where: str) -> dict | None:
    """report.main, checked now (before anything trains)."""
    if main is None:
        return None
    from mmix_eval.report.view_main import MainSpec

    if not isinstance(main, dict) or set(main) - {"columns", "rows"}:
        raise UserError(f"{where}: 'report.main' expected a mapping with 'columns' and/or 'rows', got {main!r:.80}")
    try:
        MainSpec(**main)
    except UserError as e:
        raise UserError(f"{where}: 'report.{e}'") from None
    return dict(main)


def _runs(raw: dict, methods: list, seeds: list[int], axes: dict, where: str) -> list[Run]:
    """One Run per method entry × sweep point × seed, named uniquely; each method is built now (fail early)."""
    from mmix_eval.methods.base import create_method, fingerprint  # torch: loaded only when a bench is read

    runs, names = [], {}
    for j, m in enumerate(methods):
        m = {"name": m} if isinstance(m, str) else dict(_strict(m, METHOD_KEYS, f"{where} methods[{j}]"))
        if m.get("kwargs") is not None and not isinstance(m["kwargs"], dict):
            raise UserError(
                f"{where} methods[{j}]: 'kwargs' expected a mapping of the method's arguments, got {m['kwargs']!r:.100}"
            )
        given = m.pop("label", None)
        if given is not None and (not isinstance(given, str) or not given.strip() or not given.isprintable()):
            raise UserError(f"{where} methods[{j}]: 'label' expected a non-empty printable string, got {given!r:.100}")
        label = given or m.get("name")
        for point in sweep_points(axes, m, where, j):
            for s in seeds:
                updates = {
                    "data": raw.get("data"),
                    "model": raw.get("model"),
                    "method": m,
                    "train": {**(raw.get("train") or {}), "seed": s},
                }
                cfg = merge(Config(), apply_point(updates, point), f"{where} methods[{j}]")
                try:
                    method = create_method(cfg.method.name, cfg.method.kwargs)  # fail now
                except UserError as e:
                    raise UserError(f"{where} methods[{j}]: {e}") from None
                name = safe_name(
                    "-".join([label, *(f"{short_key(k)}{value_tag(v)}" for k, v in point.items()), f"s{s}"])
                )
                if name in names and not point:
                    raise UserError(f"{where}: two runs are both named '{name}'; give one method a 'label'")
                if name in names:
                    raise UserError(
                        f"{where}: two runs are both named '{name}' ({names[name]} and methods[{j}] "
                        f"{sweep_label(point)}); give one method a 'label', or sweep values that "
                        f"differ once written as names"
                    )
                names[name] = f"methods[{j}] {sweep_label(point) or 'unswept'}"
                runs.append(Run(name, cfg, fingerprint(method), given, dict(point) or None))
    return runs


def _baseline(runs: list[Run], rep: dict, checks: list[str], where: str) -> str | None:
    """The report's baseline column: named or the default, checked, and one column even for a swept method."""
    names = [n for r in runs for n in (r.label, r.method["name"]) if n]  # a column's label, or its method's name
    names += [f"{r.label or r.method['name']} {sweep_label(r.sweep)}" for r in runs if r.sweep]  # a swept column's
    baseline = baseline_and_checks(rep, checks, names, where)
    columns: dict[str, list[str]] = {}  # a name -> the columns it fits (several for a swept method)
    for r in runs:
        full = f"{r.label or r.method['name']} {sweep_label(r.sweep)}" if r.sweep else (r.label or r.method["name"])
        for n in {r.label, r.method["name"]} - {None}:
            columns.setdefault(n, []).append(full)
    fits = list(dict.fromkeys(columns.get(baseline, [])))
    if len(fits) > 1:
        if "baseline" in rep:
            raise UserError(
                f"{where}: 'report.baseline' {baseline!r} names {len(fits)} swept columns; expected one of "
                + ", ".join(f'"{c}"' for c in fits)
            )
        baseline = fits[0]  # the default (the first method) is its first swept column
    return baseline


def baseline_and_checks(rep: dict, checks: list[str], methods: list[str], where: str) -> str | None:
    """Checked before any training: the report's baseline (default vanilla when the bench has it, else its
    first method) and every --check's syntax and method names."""
    from mmix_eval.report.checks import parse_check  # pandas: loaded when a bench has a report section

    known = list(dict.fromkeys(methods))
    if "baseline" in rep:
        baseline = rep["baseline"]
        if baseline is not None and baseline not in known:
            raise UserError(
                f"{where}: 'report.baseline' expected one of the bench's methods ({', '.join(known)}) "
                f"or null, got {baseline!r}"
            )
    else:
        baseline = "vanilla" if "vanilla" in known else known[0]
    for check in checks:
        for side in parse_check(check)[::2]:
            if not isinstance(side, float) and side[0] not in known:
                raise UserError(
                    f"{where}: report check '{check}': method '{side[0]}' expected one of the bench's "
                    f"methods ({', '.join(known)})"
                )
    return baseline


def evaluate_section(section, where: str) -> tuple[Plan, EvalOptions]:
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
    flat = {opt: name for name in DEFAULT_EVALUATORS for opt, *_ in option_fields(get_evaluator(name).Options)}
    common, per, legacy, listed = {}, {}, set(), section.get("evaluators")
    for key, value in section.items():
        if key == "evaluators":
            continue
        if key in COMMON_KEYS:
            common[key] = value
        elif key in flat and not (
            key in BUILTIN and isinstance(value, dict)
        ):  # 'attack': fgsm's option or an evaluator
            per.setdefault(flat[key], {})[key] = value
            legacy.add(flat[key])
        elif key in BUILTIN or ":" in str(key) or isinstance(value, dict):
            if not isinstance(value, dict):
                raise UserError(f"{where} '{key}': expected a mapping of options, got {value!r}")
            per.setdefault(str(key), {}).update(value)
        else:
            allowed = ["evaluators", *COMMON_KEYS, *BUILTIN]
            raise UserError(
                f"{where}: unknown key '{key}'{did_you_mean(str(key), allowed + list(flat))}; expected one of: "
                f"{', '.join(allowed)}, or an evaluator's name / module:Class with its options"
            )
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
        check_calibrator(options.calibrator)
    except TypeError as e:
        raise UserError(f"{where}: {e}") from None
    except OptionError as e:
        raise UserError(f"{where} '{e.param}': {e.detail}") from None
    try:
        plan = make_plan(specs, per, where)
    except OptionError as e:
        raise UserError(f"{where}: option {e}") from None
    return plan, options
