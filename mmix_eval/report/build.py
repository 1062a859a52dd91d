"""Aggregate result records into the comparison a paper needs, then render it (see render.py).

Rows come from the records' typed fields (evaluator, condition, metric and the metric's spec), never from
display labels: a main comparison of every evaluator's headline metric (accuracy under each shift) with
clean NLL / ECE / Brier, then one section per evaluator with its other metrics (calibration under every
shift, relative accuracy), in the evaluators' order; an evaluator the report has never heard of gets a
section like any other. Columns are methods; a cell is mean ± sample std over training seeds, with n.
Differences against a baseline are paired by training seed (t interval over seeds) and, where per-image
outcomes exist, by test image (bootstrap interval and McNemar's exact test; see stats.py).
"""

from __future__ import annotations

import gzip
import json
import math
import stat
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import BUILTIN
from mmix_eval.evaluate.records import V1_RENDERER, fmt_value, upgrade
from mmix_eval.report import stats
from mmix_eval.report.corruption import corruption_errors, is_detail

METHOD_ORDER = ("vanilla", "input_mixup", "manifold_mixup")
REQUIRED = ("run", "method", "evaluator", "condition", "metric", "value")


@dataclass
class Results:
    rows: list[dict]
    metas: list[dict]
    bad: list[tuple[str, str]]  # (path, why) for files that could not be read
    sources: list[str] = field(default_factory=list)
    outcomes: dict = field(default_factory=dict)  # (run, evaluator, condition) -> (indices, bool array)
    outcome_files: dict = field(default_factory=dict)  # record file -> its outcomes (the same mapping)


MAX_RESULT_FILE = 64 * 1024 * 1024  # bytes; a 100-condition grid x 3 evaluators is well under 1 MB


def _read_jsonl(path: Path) -> list[dict]:
    """Records of a .jsonl file, or of a gzipped one (.jsonl.gz, as a committed report keeps them), whose
    decompressed size is held to the same cap as a plain file's."""
    rows, size = [], 0
    opened = gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
    with opened as f:
        for i, line in enumerate(f, 1):
            size += len(line)
            if size > MAX_RESULT_FILE:
                raise ValueError(f"more than {MAX_RESULT_FILE} bytes of records once decompressed")
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"line {i} is not JSON") from None
            if not isinstance(r, dict) or any(k not in r for k in REQUIRED):
                raise ValueError(f"line {i} lacks the record fields {', '.join(REQUIRED)}")
            if r["value"] is None:  # NaN, written as null by strict JSON
                r["value"] = math.nan
            if not isinstance(r["value"], (int, float)) or isinstance(r["value"], bool):
                raise ValueError(f"line {i}: 'value' is not a number")
            r = upgrade(r)
            r["_source"] = str(path)  # for naming the file of a duplicate; never written
            rows.append(r)
    return rows


def load_results(paths: list[str | Path]) -> Results:
    """Every *.jsonl record file under the given folders (or the files themselves); bad ones are listed."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # Training logs (log.jsonl) and a report's own copy of the records (records.jsonl) are not inputs.
            files += sorted(f for f in p.rglob("*.jsonl") if f.name not in ("records.jsonl", "log.jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"results '{p}': expected a folder or a .jsonl (.jsonl.gz) file, got a path that does not exist")
    rows, metas, bad, outcomes, found = [], [], [], {}, {}
    for f in files:
        try:
            st = f.stat()
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device named *.jsonl would block or never end
                raise ValueError("not a regular file")
            if st.st_size > MAX_RESULT_FILE:
                raise ValueError(f"{st.st_size} bytes, larger than any result file ({MAX_RESULT_FILE} bytes at most)")
            new = _read_jsonl(f)
            rows += new
        except (OSError, UnicodeDecodeError, ValueError, EOFError) as e:  # EOFError: a truncated .gz
            bad.append((str(f), str(e)))
            continue
        try:
            found[str(f)] = _read_outcomes(f, new)
            outcomes.update(found[str(f)])
        except (OSError, ValueError, KeyError) as e:
            bad.append((str(f.with_suffix(".outcomes.npz")), f"unreadable per-image outcomes ({type(e).__name__})"))
        meta = f.with_suffix(".meta.json")
        if meta.is_file() and meta.stat().st_size <= MAX_RESULT_FILE:
            try:
                metas.append(json.loads(meta.read_text(encoding="utf-8")))
            except (OSError, ValueError) as e:
                bad.append((str(meta), f"unreadable provenance ({type(e).__name__})"))
    if not rows:
        raise UserError(f"results {', '.join(map(str, paths))}: expected mmix-eval record files (*.jsonl), found "
                        f"{'none' if not files else 'only unreadable ones: ' + '; '.join(p for p, _ in bad[:3])}")
    return Results(rows, metas, bad, [str(f) for f in files], outcomes, found)


def _read_outcomes(f: Path, rows: list[dict]) -> dict:
    """Per-image outcomes beside a record file: ``<evaluator>.outcomes.npz`` for an evaluation's records,
    ``outcomes.npz`` for a report's own ``records.jsonl`` (or ``records.jsonl.gz``)."""
    from mmix_eval.evaluate.outcomes import read_many, read_outcomes

    if f.name in ("records.jsonl", "records.jsonl.gz"):
        return read_many(f.with_name("outcomes.npz"))
    path = f.with_suffix(".outcomes.npz")
    if not path.is_file() or not rows or path.stat().st_size > MAX_RESULT_FILE:
        return {}
    indices, per = read_outcomes(path)
    run, evaluator = rows[0]["run"], rows[0]["evaluator"]
    return {(run, evaluator, c): (indices, v) for c, v in per.items()}


# Method settings shown in a column label where one method's runs differ in them (display only).
_SETTING_LABEL = {"alpha": lambda v: f"α={v:g}" if isinstance(v, (int, float)) else f"α={v}",
                  "eligible": lambda v: f"S={json.dumps(v)}", "loss": lambda v: str(v)}


def setting_text(key: str, value) -> str:
    """A method setting or swept key as a column label shows it: α=0.5, S=[0,1], epochs=10, prob=0.5."""
    short = key.rsplit(".", 1)[-1]
    if short in _SETTING_LABEL and "." not in key:
        return _SETTING_LABEL[short](value)
    text = json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else (
        f"{value:g}" if isinstance(value, float) else str(value))
    return f"{short}={text}"


def sweep_label(point: dict | None) -> str:
    """A run's swept values as they follow its method's name in a column label ('α=0.5 epochs=10')."""
    return " ".join(setting_text(k, v) for k, v in (point or {}).items())


def method_labels(rows: list[dict]) -> dict[str, str]:
    """run -> column label: the run's own label where it has one (a bench method's ``label:``), else the
    method name plus the settings (α, eligible layers, loss, …) in which the runs of that method differ; a
    bench sweep's values follow ('manifold_mixup α=0.5', 'MM epochs=10'). One label naming two different
    methods (or settings) is an error, never one merged column."""
    given = {r["run"]: r.get("method_label") for r in rows if r.get("method_label")}
    per_run = {r["run"]: (r["method"], r["method_settings"] or {}, r.get("sweep") or {}) for r in rows}
    by_method: dict[str, list[dict]] = {}
    for method, settings, _ in per_run.values():
        by_method.setdefault(method, []).append(settings)
    labels = {}
    for run, (method, settings, sweep) in per_run.items():
        variants = by_method[method]
        present = {k for v in variants for k in v} - set(sweep)
        keys = [k for k in _SETTING_LABEL if k in present] + sorted(present - set(_SETTING_LABEL))
        parts = [str(method)]
        for k in keys:
            if len({json.dumps(v.get(k), sort_keys=True) for v in variants}) > 1 and settings.get(k) is not None:
                parts.append(_SETTING_LABEL.get(k, lambda v, k=k: f"{k}={v}")(settings[k]))
        base = given.get(run) or " ".join(parts)
        labels[run] = f"{base} {sweep_label(sweep)}" if sweep else base
    owner: dict[str, tuple] = {}
    for run, label in labels.items():
        method, settings, sweep = per_run[run]
        what = (method, json.dumps([settings, sweep], sort_keys=True, default=str))
        if owner.setdefault(label, (what, run))[0] != what:
            raise UserError(f"results: label '{label}' names two different methods, run '{owner[label][1]}' and run "
                            f"'{run}' ({method} {json.dumps(settings, sort_keys=True, default=str)}); expected one "
                            f"label per method and settings")
    return labels


def resolve_baseline(rows: list[dict], labels: dict[str, str], baseline: str | None) -> str | None:
    """The column a baseline names: a column label, else the first column of a swept method's label, else the
    first column of that method (by name); unchanged when nothing matches (the differences then say so)."""
    columns = order_methods(labels, rows, None)
    if baseline is None or baseline in columns:
        return baseline
    bases = sweep_bases(rows, labels)
    method = {labels[r["run"]]: r["method"] for r in rows}
    return next((m for m in columns if bases.get(m, (None,))[0] == baseline), None) or \
        next((m for m in columns if method[m] == baseline), baseline)


def sweep_bases(rows: list[dict], labels: dict[str, str]) -> dict[str, tuple[str, dict]]:
    """column label -> (its label without the swept values, its swept values) for the columns of a sweep."""
    out = {}
    for r in rows:
        sweep = r.get("sweep") or {}
        if sweep:
            text = sweep_label(sweep)
            out.setdefault(labels[r["run"]], (labels[r["run"]].removesuffix(" " + text), dict(sweep)))
    return out


def order_methods(labels: dict[str, str], rows: list[dict], baseline: str | None) -> list[str]:
    """Columns: the baseline first, then vanilla / input mixup / manifold mixup, then the rest by name; a swept
    method's columns stay together, in the order of the swept values."""
    methods = {labels[r["run"]]: r["method"] for r in rows}
    sweeps = sweep_bases(rows, labels)

    def value_key(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, float(v), "")
        if isinstance(v, list):
            return (1, float(len(v)), json.dumps(v))
        return (2, 0.0, json.dumps(v, default=str))

    def rank(lab):
        base, point = sweeps.get(lab, (lab, {}))
        group = next((i for i, k in enumerate(METHOD_ORDER) if methods[lab] == k), 99)
        first = lab == baseline or base == sweeps.get(baseline, (baseline,))[0]  # the baseline's sweep group
        return (not first, group, base, [value_key(v) for v in point.values()], lab)

    return sorted(set(labels.values()), key=rank)


@dataclass
class Row:
    evaluator: str | None  # None: the clean condition, shared by every evaluator's records
    condition: str
    metric: str
    label: str
    direction: str | None  # higher | lower | None (not a score)
    format: str
    section: str  # "comparison", or the evaluator's name
    strength: float | None = None  # a numeric shift strength (an ε), for plots
    settings: dict = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool | None:
        return None if self.direction is None else self.direction == "higher"


@dataclass
class Cell:
    values: dict  # train seed -> value

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values.values())

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values.values()) if self.n > 1 else None


@dataclass
class Table:
    rows: list[Row]
    methods: list[str]
    cells: dict  # (row index, method) -> Cell
    context: dict  # data, model, evaluation settings
    runs: dict = field(default_factory=dict)  # method label -> {train seed: run}
    info: dict = field(default_factory=dict)  # method label -> (method name, method settings)
    sections: list = field(default_factory=list)  # (section key, title, row indices)
    sweeps: dict = field(default_factory=dict)  # method label -> (label without the swept values, swept values)

    def best(self, i: int) -> set[str]:
        row = self.rows[i]
        means = {m: self.cells[i, m].mean for m in self.methods if (i, m) in self.cells}
        means = {m: v for m, v in means.items() if not math.isnan(v)}
        if row.direction is None or len(means) < 2:
            return set()
        target = (max if row.direction == "higher" else min)(means.values())
        return {m for m, v in means.items() if v == target}

    def fmt(self, i: int, v) -> str:
        return fmt_value(v, self.rows[i].format)


MASKING_POINTS = 10.0  # FGSM accuracy this many points above a strong attack's at the same ε: flagged


def masking_notes(records: list[dict], labels: dict[str, str]) -> list[str]:
    """The gradient-masking check (RobustBench's guidance, Carlini et al. 2019): per method and Linf ε, FGSM's
    accuracy (mean over seeds) against the strongest iterative attack's (PGD or AutoAttack, any evaluator);
    more than MASKING_POINTS above it says FGSM overstates the robustness. Also PGD accuracy that rises with
    more steps. Returns the report's notes (none when there is nothing to compare)."""
    acc: dict = {}  # (method, ε) -> attack tag -> [values]
    for r in records:
        s = r["settings"] or {}
        e, tag = s.get("eps_255"), s.get("attack")
        if r["metric"] != "acc" or r["bin"] is not None or e is None or tag is None or r["value"] is None:
            continue
        if s.get("norm", "Linf") != "Linf":
            continue
        acc.setdefault((labels[r["run"]], float(e)), {}).setdefault(str(tag), []).append(r["value"])
    flags, compared = [], 0
    for (m, e), per in sorted(acc.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        mean = {t: sum(v) / len(v) for t, v in per.items()}
        strong = {t: v for t, v in mean.items() if t != "fgsm"}
        if "fgsm" in mean and strong:
            compared += 1
            t, v = min(strong.items(), key=lambda kv: kv[1])
            if mean["fgsm"] - v > MASKING_POINTS:
                flags.append(f"{m} at ε = {e:g}/255: FGSM {mean['fgsm']:.2f} % vs {t} {v:.2f} %")
        pgd = sorted(((int(t[3:]), v) for t, v in mean.items() if t.startswith("pgd") and t[3:].isdigit()))
        for (k1, v1), (k2, v2) in zip(pgd, pgd[1:]):
            if v2 > v1 + 1.0:
                flags.append(f"{m} at ε = {e:g}/255: PGD-{k2} accuracy {v2:.2f} % above PGD-{k1}'s {v1:.2f} %")
    if not compared:
        return []
    if not flags:
        return [f"Gradient-masking check passed: at every ε compared ({compared}), FGSM accuracy is within "
                f"{MASKING_POINTS:g} points of the strongest iterative attack's."]
    return [f"Gradient-masking check (FGSM more than {MASKING_POINTS:g} points above an iterative attack at the same "
            f"ε, or PGD gaining accuracy with more steps, flags robustness that a strong attack removes): "
            + "; ".join(flags) + "."]


def add_corruption_rows(table: Table, records: list[dict], baseline: str) -> list[str]:
    """mCE, relative mCE and each corruption's CE against ``baseline`` (see report/corruption.py), as table rows:
    mCE and relative mCE in the comparison after the corruption headline, every CE in the evaluator's section."""
    res = corruption_errors(records, method_labels(records), baseline)
    if res is None:
        return []
    e = next(iter(res.values()))["evaluator"]
    missing = [m for m in table.methods if m not in res]

    def add(section: str, condition: str, metric: str, label: str, values: dict, after: int | None = None):
        table.rows.append(Row(e, condition, metric, label, "lower", ".1f", section))
        i = len(table.rows) - 1
        for m, v in values.items():
            table.cells[i, m] = Cell(v)
        for k, (key, title, idx) in enumerate(table.sections):
            if key == section:
                idx.insert(idx.index(after) + 1 if after is not None and after in idx else len(idx), i)
                return i
        table.sections.append((section, section_title(section), [i]))
        return i

    head = next((i for i, r in enumerate(table.rows) if r.section == "comparison" and r.evaluator == e
                 and r.condition == "mean" and r.metric == "acc"), None)
    i = add("comparison", "mean", "mce", f"{e}: mCE (% of {baseline}'s errors)", {m: r["mce"] for m, r in res.items()}, head)
    add("comparison", "mean", "rel_mce", f"{e}: relative mCE (% of {baseline}'s degradation)",
        {m: r["rel_mce"] for m, r in res.items()}, i)
    last = None
    for c in next(iter(res.values()))["ce"]:
        last = add(e, c, "ce", f"{c}: CE (% of {baseline}'s errors)", {m: r["ce"][c] for m, r in res.items()}, last)
    note = (f"Corruption errors: CE_c = Σ_s E_c,s / Σ_s E_c,s of {baseline} (its mean over seeds), mCE = mean over "
            f"corruptions, relative mCE from the drop below clean accuracy (Hendrycks & Dietterich 2019, with "
            f"{baseline} in place of AlexNet).")
    return [note] + ([f"No corruption errors for {', '.join(missing)} (no corruption records)."] if missing else [])


def evaluator_order(records: list[dict]) -> list[str]:
    present = {r["evaluator"] for r in records}
    return [e for e in BUILTIN if e in present] + sorted(str(e) for e in present - set(BUILTIN))


def section_title(evaluator: str) -> str:
    return f"{evaluator}: every metric per condition"


def _rows(records: list[dict]) -> tuple[list[Row], list]:
    """The table's rows and its sections, in order. Keys are (evaluator, condition, metric) from typed
    fields; the clean condition's rows are one row whatever evaluator wrote them."""
    rows: list[Row] = []
    seen: set = set()
    sections: dict[str, list[int]] = {}

    def add(r, evaluator, section, label):
        key = (section, evaluator, r["condition"], r["metric"])
        if key in seen:
            return
        seen.add(key)
        s = r["settings"] or {}
        rows.append(Row(evaluator, r["condition"], r["metric"], label, r["direction"], r["format"] or ".4f", section,
                        s.get("strength") if isinstance(s.get("strength"), (int, float)) else None, s))
        sections.setdefault(section, []).append(len(rows) - 1)

    table_rows = [r for r in records if r["bin"] is None and not is_detail(r)]  # detail rows: plots and files
    by_eval = {e: [r for r in table_rows if r["evaluator"] == e] for e in evaluator_order(table_rows)}
    clean = [r for r in table_rows if r["condition"] == "clean"]
    name = lambda r: f"{r['label'] or r['condition']}: {r['metric_label'] or r['metric']}"
    for r in clean:  # the comparison opens with clean accuracy (every headline metric at the clean condition)
        if r["headline"]:
            add(r, None, "comparison", name(r))
    for e, rs in by_eval.items():
        for r in rs:
            if r["headline"] and r["condition"] != "clean":
                add(r, e, "comparison", name(r))
    for r in clean:  # and closes with the clean likelihood and calibration scores
        if not r["headline"] and r["direction"] is not None:
            add(r, None, "comparison", name(r))
    for e, rs in by_eval.items():  # then each evaluator's other metrics, grouped by metric: how ECE (say)
        shifted = [r["metric"] for r in rs if not r["headline"] and r["condition"] != "clean"]
        for m in dict.fromkeys(shifted + [r["metric"] for r in rs if not r["headline"]]):  # moves from clean through every shift
            group = [r for r in rs if r["metric"] == m and not r["headline"]]
            if any(r["condition"] != "clean" for r in group):
                for r in group:
                    add(r, None if r["condition"] == "clean" else e, e, name(r))
    order = ["comparison", *by_eval]
    titled = [(k, "Comparison" if k == "comparison" else section_title(k), sections[k]) for k in order if k in sections]
    return rows, titled


def aggregate(records: list[dict], baseline: str | None = None) -> Table:
    labels = method_labels(records)
    info = {}
    for r in records:
        info.setdefault(labels[r["run"]], (r["method"], r["method_settings"] or {}))
    rows, sections = _rows(records)
    index: dict = {}
    for i, row in enumerate(rows):
        index.setdefault((row.evaluator, row.condition, row.metric), []).append(i)
    cells: dict = {}
    runs: dict = {}
    for r in records:  # first record per (run, condition, metric) wins: clean rows repeat across evaluators
        if r["bin"] is not None:
            continue
        key = (None if r["condition"] == "clean" else r["evaluator"], r["condition"], r["metric"])
        seed = r["train_seed"] if r["train_seed"] is not None else r["run"]
        runs.setdefault(labels[r["run"]], {}).setdefault(seed, r["run"])
        for i in index.get(key, []):
            cells.setdefault((i, labels[r["run"]]), Cell({})).values.setdefault(seed, r["value"])
    methods = order_methods(labels, records, baseline)
    context = {"data": sorted({str(r["data"]) for r in records}), "model": sorted({str(r["model"]) for r in records}),
               "n_images": sorted({r["n"] for r in records if r["n"] is not None}),
               "eval_seed": sorted({r["eval_seed"] for r in records if r["eval_seed"] is not None}),
               "settings": evaluator_settings(records), "schemas": sorted({r["schema"] for r in records if r["schema"]})}
    return Table(rows, methods, cells, context, runs, info, sections, sweep_bases(records, labels))


_ROW_SETTINGS = ("strength", "eps_255", "eps", "after", "target_classes", "deformation", "magnitude", "corruption",
                 "severity", "ood", "score", "n_ood", "layer", "width", "projected",  # differ by condition
                 "eps_255_per_channel", "pixels_outside_01")  # and by model (its normalisation, its gradients)


def evaluator_settings(records: list[dict]) -> dict[str, dict[str, list]]:
    """evaluator -> setting -> the distinct values its rows hold (what the report's header states)."""
    out: dict[str, dict[str, set]] = {}
    for r in records:
        for k, v in (r["settings"] or {}).items():
            if k not in _ROW_SETTINGS and v is not None:
                out.setdefault(str(r["evaluator"]), {}).setdefault(k, set()).add(json.dumps(v) if not isinstance(v, str) else v)
    return {e: {k: sorted(v) for k, v in s.items()} for e, s in out.items()}


def comparability_key(r: dict) -> str:
    """What must be equal for two runs' rows of one evaluator to be compared (and paired): the data, the
    evaluated test subset, the evaluation seed and image count, and the evaluator's settings."""
    settings = {k: v for k, v in (r["settings"] or {}).items() if k not in _ROW_SETTINGS}
    return json.dumps([str(r["evaluator"]), str(r["data"]), r["subset"], r["eval_seed"], r["n"], settings],
                      sort_keys=True, default=str)


def _run_id(r: dict) -> tuple[str, str]:
    """A run is its name and where its records lie: results/<run>/<evaluator>.jsonl, or one report's records."""
    src = Path(str(r.get("_source") or ""))
    return str(r["run"]), str(src if src.name == "records.jsonl" or not src.name else src.parent)


def comparable_groups(rows: list[dict]) -> list[list[dict]]:
    """The records split into groups of runs that can share one report: two runs conflict when an evaluator
    both have gives them different comparability keys (a run without some evaluator conflicts with none).
    Within a group, one run name from two places is an error naming both files."""
    per_run: dict[tuple, dict[str, set]] = {}
    for r in rows:
        per_run.setdefault(_run_id(r), {}).setdefault(str(r["evaluator"]), set()).add(comparability_key(r))
    groups: list[list[tuple]] = []
    for rid in sorted(per_run):
        mine = per_run[rid]
        home = next((g for g in groups if all(per_run[o].get(e, k) == k for o in g for e, k in mine.items())), None)
        if home is None:
            groups.append([rid])
        else:
            home.append(rid)
    out = []
    for g in groups:
        names: dict[str, tuple] = {}
        for rid in g:
            if names.setdefault(rid[0], rid) != rid:
                raise UserError(f"results: run '{rid[0]}' is in two places, {names[rid[0]][1]} and {rid[1]}, with "
                                f"comparable records; expected one (a duplicate run: report one of them)")
        ids = set(g)
        out.append([r for r in rows if _run_id(r) in ids])
    return out


def describe_group(rows: list[dict]) -> str:
    r = rows[0]
    runs = sorted({x["run"] for x in rows})
    return (f"{len(runs)} run(s) like '{runs[0]}': data {r['data']}, {r['n']} test images (subset {r['subset']}), "
            f"evaluation seed {r['eval_seed']}")


def check_duplicates(rows: list[dict], labels: dict[str, str]) -> None:
    seen: dict[tuple, str] = {}
    for r in rows:
        key = (labels[r["run"]], r["train_seed"] if r["train_seed"] is not None else r["run"])
        if seen.setdefault(key, r["run"]) != r["run"]:
            other = seen[key]
            raise UserError(f"results: {key[0]} seed {key[1]} is both run '{other}' and run '{r['run']}' "
                            f"({_run_id(r)[1]}); expected one run per method and seed (a duplicate: drop one)")


def paired_differences(table: Table, baseline: str) -> dict:
    """(row index, method) -> (mean difference, 95 % CI half-width or None, n pairs), paired by seed."""
    if baseline not in table.methods:
        raise UserError(f"--baseline: expected one of the methods in the results ({', '.join(table.methods)}), got '{baseline}'")
    out = {}
    for i in range(len(table.rows)):
        base = table.cells.get((i, baseline))
        if base is None:
            continue
        for m in table.methods:
            cell = table.cells.get((i, m))
            if m == baseline or cell is None:
                continue
            seeds = sorted(set(cell.values) & set(base.values), key=str)
            d = [cell.values[s] - base.values[s] for s in seeds]
            if not d or any(math.isnan(x) for x in d):
                continue
            mean, half = stats.t_interval(d)
            out[i, m] = (mean, half, len(d))
    return out


def image_differences(table: Table, outcomes: dict, baseline: str) -> tuple[dict, list[str]]:
    """(row index, method) -> (difference in points, bootstrap low, high, McNemar p, images, seed pairs) for
    the accuracy rows whose per-image outcomes exist for both methods on the very same test images.
    Returns the notes on pairs that could not be made (different test subsets)."""
    out, notes = {}, []
    for i, row in enumerate(table.rows):
        if row.metric != "acc" or row.direction != "higher":
            continue
        for m in table.methods:
            if m == baseline or m not in table.runs or baseline not in table.runs:
                continue
            a, b = [], []
            for seed in sorted(set(table.runs[m]) & set(table.runs[baseline]), key=str):
                oa = _outcome(outcomes, table.runs[m][seed], row)
                ob = _outcome(outcomes, table.runs[baseline][seed], row)
                if oa is None or ob is None:
                    continue
                if not np.array_equal(oa[0], ob[0]):
                    notes.append(f"{row.label}: {m} and {baseline} (seed {seed}) were evaluated on different test "
                                 f"images; no per-image interval")
                    continue
                a.append(oa[1])
                b.append(ob[1])
            if not a:
                continue
            ma, mb = np.stack(a), np.stack(b)
            diff, lo, hi = stats.paired_image_bootstrap(ma, mb)
            p = stats.mcnemar_exact(*stats.discordant(ma, mb))
            out[i, m] = (diff, lo, hi, p, ma.shape[1], ma.shape[0])
    return out, sorted(set(notes))


def _outcome(outcomes: dict, run: str, row: Row):
    if row.evaluator is not None:
        return outcomes.get((run, row.evaluator, row.condition))
    return next((v for (r, _, c), v in sorted(outcomes.items(), key=lambda kv: tuple(map(str, kv[0])))
                 if r == run and c == row.condition), None)


OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
       "==": lambda a, b: a == b}


def parse_check(check: str) -> tuple[object, str, object]:
    """'manifold_mixup.rotation20 >= vanilla.rotation20' -> (side, op, side), a side being a number or
    (method, condition, metric); metric acc unless 'method.condition:metric'. A method (or label) holding dots,
    spaces or operators is quoted: '"manifold_mixup α=0.2".rotation20 >= vanilla.rotation20' (double or single
    quotes). Syntax only: what the methods and conditions are is checked against the results (or, by bench,
    against its methods)."""
    expected = f"--check '{check}': expected 'LEFT OP RIGHT' with OP one of >=, <=, >, <, =="
    i, quote, found = 0, None, None
    while i < len(check):  # the first operator outside quotes
        c = check[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "<>=!":
            found = i
            break
        i += 1
    if quote or found is None:
        raise UserError(expected + ("" if not quote else f" (an unclosed {quote} quote)"))
    op = check[found:found + 2] if check[found:found + 2] in OPS else check[found]
    if op not in OPS or check[found + len(op):].lstrip().startswith(("=", "<", ">")):
        raise UserError(expected)
    left, right = check[:found].strip(), check[found + len(op):].strip()
    if not left or not right:
        raise UserError(expected)

    def side(text: str):
        try:
            return float(text)
        except ValueError:
            pass
        if text[0] in "\"'":
            end = text.find(text[0], 1)
            method, rest = text[1:end], text[end + 1:]
            dot = rest[:1] == "."
            rest = rest[1:]
        else:
            method, dot, rest = text.partition(".")
        condition, _, metric = rest.partition(":")
        if not dot or not condition or not method:
            raise UserError(f"--check '{check}': expected METHOD.CONDITION[:METRIC] or a number, got '{text}' "
                            f"(quote a method holding dots or spaces: \"my method α=0.2\".rotation20)")
        return method, condition, metric or "acc"

    return side(left), op, side(right)


def run_checks(table: Table, checks: list[str]) -> list[tuple[str, bool, str]]:
    """Evaluate gates like 'manifold_mixup.rotation20 >= vanilla.rotation20' (means; metric acc unless
    'method.condition:metric'; either side may be a number). Returns (check, passed, explanation)."""
    index: dict = {}
    for i, r in enumerate(table.rows):
        index.setdefault((r.condition, r.metric), i)

    def value(side, check: str) -> float:
        if isinstance(side, float):
            return side
        method, condition, metric = side
        matches = [m for m in table.methods if m == method] or [m for m in table.methods if table.info[m][0] == method]
        if len(matches) != 1:
            raise UserError(f"--check '{check}': method '{method}' expected one of {', '.join(table.methods)}")
        i = index.get((condition, metric))
        if i is None or (i, matches[0]) not in table.cells:
            known = ", ".join(dict.fromkeys(f"{r.condition}:{r.metric}" for r in table.rows))
            raise UserError(f"--check '{check}': no value for {condition}:{metric} of '{matches[0]}'; known: {known}")
        return table.cells[i, matches[0]].mean

    out = []
    for check in checks:
        left, op, right = parse_check(check)
        try:
            a, b = value(left, check), value(right, check)
        except UserError as e:  # a check that names nothing in these results fails; the report is still written
            out.append((check, False, str(e).removeprefix(f"--check '{check}': ")))
            continue
        out.append((check, OPS[op](a, b), f"{a:.4f} {op} {b:.4f}"))
    return out


def provenance(results: Results, extra: dict | None) -> dict:
    """What a reader needs to cite the numbers: per run, the evaluation options, versions, commit, hardware,
    wall time per evaluator, and the training metadata next to the checkpoint when it can be read."""
    runs: dict = {}
    for m in sorted(results.metas, key=lambda m: (str(m.get("run")), str(m.get("evaluator")))):
        r = runs.setdefault(str(m.get("run")), {"checkpoint": m.get("checkpoint"), "evaluations": {}})
        r["evaluations"][str(m.get("evaluator"))] = {k: m.get(k) for k in ("options", "n_images", "wall_time_s", "versions",
                                                                           "git_commit", "hardware", "created")}
        model_json = Path(str(m.get("checkpoint"))).with_suffix(".json")
        if "training" not in r and model_json.is_file():
            try:
                t = json.loads(model_json.read_text(encoding="utf-8"))
                r["training"] = {k: t.get(k) for k in ("config", "metrics", "wall_time_s", "versions", "git_commit", "hardware", "created")}
                r["training"]["data_sizes"] = {k: t.get("data", {}).get(k) for k in ("train_size", "val_size", "test_size", "subset_seed")}
            except (OSError, ValueError):
                r["training"] = "unreadable model.json"
    return {"result_files": len(results.sources), "runs": runs, **(extra or {})}


def thread_notes(prov: dict) -> list[str]:
    """A report whose runs were trained or evaluated with different CPU thread counts says so: float
    reductions split differently, so such runs can differ in their last digits for that reason alone."""
    counts: dict[str, set] = {"trained": set(), "evaluated": set()}
    for r in (prov.get("runs") or {}).values():
        t = r.get("training")
        if isinstance(t, dict) and isinstance(t.get("hardware"), dict) and t["hardware"].get("device", "cpu") == "cpu":
            counts["trained"].add(t["hardware"].get("torch_threads"))
        for e in (r.get("evaluations") or {}).values():
            hw = e.get("hardware") if isinstance(e, dict) else None
            if isinstance(hw, dict) and str(hw.get("device", "cpu")).startswith("cpu"):
                counts["evaluated"].add(hw.get("torch_threads"))
    out = []
    for what, found in counts.items():
        found.discard(None)
        if len(found) > 1:
            out.append(f"Runs were {what} with different CPU thread counts ({', '.join(sorted(found, key=str))}); float "
                       f"reductions split differently, so their numbers can differ in the last digits for that reason "
                       f"alone (see the provenance; set --threads to match).")
    return out


def evaluation_warnings(rows: list[dict]) -> list[str]:
    """The evaluators' warnings (train-mode model, probabilities for logits, randomised forward, zero input
    gradients), one line per run and warning, with the evaluators that raised it."""
    seen: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        for w in str(r.get("warnings") or "").split("; "):
            if w and w != "None":
                seen.setdefault((str(r.get("run")), w), set()).add(str(r.get("evaluator")))
    return [f"Warning for {run} ({', '.join(sorted(ev))}): {w}" for (run, w), ev in sorted(seen.items())]


def build_report(results_paths: list, out: str | Path, baseline: str | None = "vanilla", checks: list[str] | None = None,
                 title: str | None = None, extra_provenance: dict | None = None, notes: list[str] | None = None,
                 split_by: bool = False) -> dict:
    """Read records, aggregate, and write report.html, report.md, table.csv, records.csv/.jsonl and plots/.
    ``notes``: warnings shown at the top of the report (e.g. runs of a bench not finished yet). Records that
    cannot be compared (other data, test subset, evaluation seed or evaluator settings) are refused, naming
    two groups; with ``split_by`` each group gets its own report, in ``out/<group>/``."""
    for check in checks or []:  # a syntax error is bad input: refused before anything is read or written
        parse_check(check)
    results = load_results(results_paths)
    groups = comparable_groups(results.rows)
    if len(groups) > 1 and not split_by:
        raise UserError(f"results: expected records that can be compared in one report, got {len(groups)} groups that "
                        f"cannot, e.g. {describe_group(groups[0])}; and {describe_group(groups[1])} (report them apart, "
                        f"or pass --split-by for one report per group)")
    if len(groups) == 1:
        return _build_one(results, out, baseline, checks, title, extra_provenance, notes)
    from mmix_eval.evaluate.runner import safe_name

    parts = []
    for k, g in enumerate(groups, 1):
        runs = {r["run"] for r in g}
        sources = {r.get("_source") for r in g}
        outcomes = {k: v for f in sorted(sources, key=str) for k, v in results.outcome_files.get(f, {}).items()
                    if k[0] in runs}
        part = Results(g, [m for m in results.metas if m.get("run") in runs], results.bad, results.sources, outcomes)
        name = safe_name(f"group{k}-{g[0]['data']}-n{g[0]['n']}")
        parts.append(_build_one(part, Path(out) / name, baseline, checks, title, extra_provenance, notes))
    first = parts[0]
    return {**first, "checks": [c for p in parts for c in p["checks"]], "out": Path(out), "groups": [p["out"] for p in parts]}


def _build_one(results: Results, out, baseline, checks, title, extra_provenance, notes) -> dict:
    from mmix_eval.evaluate.outcomes import write_many
    from mmix_eval.evaluate.records import write_records
    from mmix_eval.io import atomic_write_bytes, atomic_write_text
    from mmix_eval.report.render import plots, render_html, render_markdown, write_csv_table, write_sweep_csv

    notes = list(notes or []) + evaluation_warnings(results.rows)
    # Stable: each record file keeps its own order (the evaluator's condition order: Table 4's, the ε grid's).
    rows = sorted(results.rows, key=lambda r: (str(r["run"]), str(r["evaluator"])))
    labels = method_labels(rows)
    check_duplicates(rows, labels)
    if baseline == "auto":  # vanilla when present, else the first column; stated in the report
        auto = "vanilla" if any(r["method"] == "vanilla" for r in rows) else order_methods(labels, rows, None)[0]
        notes.append(f"Baseline for the differences: {auto} ({'vanilla is in the results' if auto == 'vanilla' else 'no vanilla run in the results, so the first method'}).")
        baseline = auto
    baseline = resolve_baseline(rows, labels, baseline)
    table = aggregate(rows, baseline)
    if baseline in table.methods:
        notes += add_corruption_rows(table, rows, baseline)
    notes += masking_notes(rows, labels)
    paired = baseline is not None and len(table.methods) > 1
    diffs = paired_differences(table, baseline) if paired else None
    image_diffs, pair_notes = image_differences(table, results.outcomes, baseline) if paired else ({}, [])
    if any(V1_RENDERER in v for s in table.context["settings"].values() for v in s.get("renderer", [])):
        notes.append("Deformation rows in these records were rendered by mmix-eval 0.1 (grid_sample's nearest mode, "
                     "which keeps the border pixel for sources up to half a pixel outside the image, where the official "
                     "rendering is black); re-evaluate the checkpoints for the official rendering.")
    check_results = run_checks(table, checks or [])
    title = title or f"mmix-eval report: {', '.join(table.context['data'])}, {', '.join(table.context['model'])}"
    out = Path(out)
    images = plots(table, rows, baseline)
    prov = provenance(results, extra_provenance)
    notes += thread_notes(prov)
    atomic_write_text(out / "report.html", render_html(table, diffs, image_diffs, baseline, images, prov, check_results,
                                                       results.bad, title, notes + pair_notes))
    atomic_write_text(out / "report.md", render_markdown(table, diffs, image_diffs, baseline, check_results, title,
                                                         notes + pair_notes))
    write_csv_table(table, out / "table.csv")
    if not write_sweep_csv(table, out / "sweep.csv") and (out / "sweep.csv").exists():
        (out / "sweep.csv").unlink()  # a report rebuilt without a sweep keeps no stale one
    write_records(rows, out / "records")
    if results.outcomes:
        write_many(out / "outcomes.npz", results.outcomes)
    for name, data in images.items():
        atomic_write_bytes(out / "plots" / name, data)
    return {"table": table, "checks": check_results, "bad": results.bad, "out": out, "image_diffs": image_diffs}
