"""Aggregate result records into the comparison a paper needs, then render it (see render.py).

Rows are conditions (clean, each deformation, each FGSM ε, NLL, ECE), columns are methods; a cell is
mean ± sample std over training seeds, with n. Differences against a baseline are paired by training
seed (the runs share seeds and, through the evaluation seed, the very same deformed images), with a
two-sided 95 % t interval over the paired differences.
"""

from __future__ import annotations

import json
import math
import re
import stat
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import FIELDS

METHOD_ORDER = ("vanilla", "input_mixup", "manifold_mixup")
REQUIRED = ("run", "method", "evaluator", "condition", "metric", "value")


@dataclass
class Results:
    rows: list[dict]
    metas: list[dict]
    bad: list[tuple[str, str]]  # (path, why) for files that could not be read
    sources: list[str] = field(default_factory=list)


MAX_RESULT_FILE = 64 * 1024 * 1024  # bytes; a 100-condition grid x 3 evaluators is well under 1 MB


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"line {i} is not JSON") from None
            if not isinstance(r, dict) or any(k not in r for k in REQUIRED):
                raise ValueError(f"line {i} lacks the record fields {', '.join(REQUIRED)}")
            if not isinstance(r["value"], (int, float)) or isinstance(r["value"], bool):
                raise ValueError(f"line {i}: 'value' is not a number")
            rows.append({f: r.get(f) for f in FIELDS})
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
            raise UserError(f"results '{p}': expected a folder or a .jsonl file, got a path that does not exist")
    rows, metas, bad = [], [], []
    for f in files:
        try:
            st = f.stat()
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device named *.jsonl would block or never end
                raise ValueError("not a regular file")
            if st.st_size > MAX_RESULT_FILE:
                raise ValueError(f"{st.st_size} bytes, larger than any result file ({MAX_RESULT_FILE} bytes at most)")
            rows += _read_jsonl(f)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            bad.append((str(f), str(e)))
            continue
        meta = f.with_suffix(".meta.json")
        if meta.is_file() and meta.stat().st_size <= MAX_RESULT_FILE:
            try:
                metas.append(json.loads(meta.read_text(encoding="utf-8")))
            except (OSError, ValueError) as e:
                bad.append((str(meta), f"unreadable provenance ({type(e).__name__})"))
    if not rows:
        raise UserError(f"results {', '.join(map(str, paths))}: expected mmix-eval record files (*.jsonl), found "
                        f"{'none' if not files else 'only unreadable ones: ' + '; '.join(p for p, _ in bad[:3])}")
    return Results(rows, metas, bad, [str(f) for f in files])


def method_labels(rows: list[dict]) -> dict[str, str]:
    """run -> column label: the method name, plus α / eligible layers / loss where one method varies in them."""
    settings: dict[str, set] = {}
    per_run = {}
    for r in rows:
        key = (r["alpha"], json.dumps(r["eligible"]), r["loss"])
        settings.setdefault(r["method"], set()).add(key)
        per_run[r["run"]] = (r["method"], key)
    labels = {}
    for run, (method, (alpha, eligible, loss)) in per_run.items():
        variants = settings[method]
        label = str(method)
        if len({v[0] for v in variants}) > 1 and alpha is not None:
            label += f" α={alpha:g}"
        if len({v[1] for v in variants}) > 1 and eligible != "null":
            label += f" S={eligible}"
        if len({v[2] for v in variants}) > 1:
            label += f" {loss}"
        labels[run] = label
    return labels


def order_methods(labels: list[str], baseline: str | None) -> list[str]:
    rank = lambda m: (m != baseline, next((i for i, k in enumerate(METHOD_ORDER) if m.split(" ")[0] == k), 99), m)
    return sorted(set(labels), key=rank)


@dataclass
class Row:
    condition: str
    metric: str
    label: str
    higher_is_better: bool | None
    section: str  # clean | deformations | fgsm | calibration


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
    context: dict  # data, model, evaluation settings per section

    def best(self, i: int) -> set[str]:
        row = self.rows[i]
        means = {m: self.cells[i, m].mean for m in self.methods if (i, m) in self.cells}
        if row.higher_is_better is None or len(means) < 2:
            return set()
        target = (max if row.higher_is_better else min)(means.values())
        return {m for m, v in means.items() if v == target}


def _rows(records: list[dict]) -> list[Row]:
    out: list[Row] = []
    seen = set()

    def add(cond, metric, label, section, hib):
        if (cond, metric) not in seen:
            seen.add((cond, metric))
            out.append(Row(cond, metric, label, hib, section))

    present = {(r["condition"], r["metric"]) for r in records if r["bin"] is None}
    if ("clean", "acc") in present:
        add("clean", "acc", "Clean accuracy (%)", "clean", True)
    for r in records:
        if r["evaluator"] == "deformations" and r["condition"] != "clean" and r["metric"] == "acc":
            add(r["condition"], "acc", f"{r['label'] or r['condition']} (%)", "deformations", True)
    for r in sorted((r for r in records if r["evaluator"] == "fgsm" and r["condition"] != "clean" and r["metric"] == "acc"),
                    key=lambda r: (r["eps_255"] is None, r["eps_255"] or 0)):
        add(r["condition"], "acc", f"{r['label'] or r['condition']} (%)", "fgsm", True)
    for metric, label in (("nll", "Clean NLL"), ("ece", "Clean ECE")):
        if ("clean", metric) in present:
            add("clean", metric, label, "clean", False)
    for cond, title in (("test", "test"), ("temperature_scaled", "test, temperature-scaled")):
        for metric in ("nll", "ece", "mce", "brier"):
            if (cond, metric) in present:
                add(cond, metric, f"{metric.upper() if metric != 'brier' else 'Brier'} ({title})", "calibration", False)
    if ("temperature_scaled", "temperature") in present:
        add("temperature_scaled", "temperature", "Fitted temperature T", "calibration", None)
    return out


def aggregate(records: list[dict], baseline: str | None = None) -> Table:
    labels = method_labels(records)
    rows = _rows(records)
    index = {(r.condition, r.metric): i for i, r in enumerate(rows)}
    cells: dict = {}
    for r in records:  # first record per (run, condition, metric) wins: clean rows repeat across evaluators
        i = index.get((r["condition"], r["metric"]))
        if i is None or r["bin"] is not None:
            continue
        seed = r["train_seed"] if r["train_seed"] is not None else r["run"]
        cell = cells.setdefault((i, labels[r["run"]]), Cell({}))
        cell.values.setdefault(seed, r["value"])
    methods = order_methods(list(labels.values()), baseline)
    context = {"data": sorted({str(r["data"]) for r in records}), "model": sorted({str(r["model"]) for r in records}),
               "n_images": sorted({r["n"] for r in records if r["n"] is not None}),
               "grid": sorted({r["grid"] for r in records if r["grid"]}),
               "interpolation": sorted({r["interpolation"] for r in records if r["interpolation"]}),
               "eval_seed": sorted({r["eval_seed"] for r in records if r["eval_seed"] is not None}),
               "attack": sorted({r["attack"] for r in records if r["attack"]}),
               "bins": sorted({r["bins"] for r in records if r["bins"]})}
    return Table(rows, methods, cells, context)



def t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def paired_differences(table: Table, baseline: str) -> dict:
    """(row index, method) -> (mean difference, 95 % CI half-width or None, n pairs)."""
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
            if not d:
                continue
            half = t_quantile(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
            out[i, m] = (statistics.fmean(d), half, len(d))
    return out


_CHECK = re.compile(r"^\s*(.+?)\s*(>=|<=|==|>|<)\s*(.+?)\s*$")


def run_checks(table: Table, checks: list[str]) -> list[tuple[str, bool, str]]:
    """Evaluate gates like 'manifold_mixup.rotation20 >= vanilla.rotation20' (means; metric acc unless
    'method.condition:metric'; either side may be a number). Returns (check, passed, explanation)."""
    index = {(r.condition, r.metric): i for i, r in enumerate(table.rows)}

    def side(text: str, check: str) -> float:
        try:
            return float(text)
        except ValueError:
            pass
        method, dot, rest = text.partition(".")
        condition, _, metric = rest.partition(":")
        metric = metric or "acc"
        if not dot or not condition:
            raise UserError(f"--check '{check}': expected METHOD.CONDITION[:METRIC] or a number, got '{text}'")
        matches = [m for m in table.methods if m == method] or [m for m in table.methods if m.split(" ")[0] == method]
        if len(matches) != 1:
            raise UserError(f"--check '{check}': method '{method}' expected one of {', '.join(table.methods)}")
        i = index.get((condition, metric))
        if i is None or (i, matches[0]) not in table.cells:
            known = ", ".join(f"{r.condition}:{r.metric}" for r in table.rows)
            raise UserError(f"--check '{check}': no value for {condition}:{metric} of '{matches[0]}'; known: {known}")
        return table.cells[i, matches[0]].mean

    out = []
    for check in checks:
        m = _CHECK.match(check)
        if not m:
            raise UserError(f"--check '{check}': expected 'LEFT OP RIGHT' with OP one of >=, <=, >, <, ==")
        a, op, b = side(m.group(1), check), m.group(2), side(m.group(3), check)
        ok = {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b, "==": a == b}[op]
        out.append((check, ok, f"{a:.4f} {op} {b:.4f}"))
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
                 title: str | None = None, extra_provenance: dict | None = None, notes: list[str] | None = None) -> dict:
    """Read records, aggregate, and write report.html, report.md, table.csv, records.csv/.jsonl and plots/.
    ``notes``: warnings shown at the top of the report (e.g. runs of a bench not finished yet)."""
    from mmix_eval.evaluate.records import write_records
    from mmix_eval.io import atomic_write_bytes, atomic_write_text
    from mmix_eval.report.render import plots, render_html, render_markdown, write_csv_table

    results = load_results(results_paths)
    notes = list(notes or []) + evaluation_warnings(results.rows)
    rows = sorted(results.rows, key=lambda r: (str(r["run"]), str(r["evaluator"]), str(r["condition"]), str(r["metric"]),
                                               -1 if r["bin"] is None else r["bin"]))
    table = aggregate(rows, baseline)
    if baseline is not None and baseline not in table.methods:
        baseline = next((m for m in table.methods if m.split(" ")[0] == baseline), baseline)
    diffs = paired_differences(table, baseline) if baseline is not None and len(table.methods) > 1 else None
    check_results = run_checks(table, checks or [])
    title = title or f"mmix-eval report: {', '.join(table.context['data'])}, {', '.join(table.context['model'])}"
    out = Path(out)
    images = plots(table, rows)
    prov = provenance(results, extra_provenance)
    atomic_write_text(out / "report.html", render_html(table, diffs, baseline, images, prov, check_results, results.bad, title, notes))
    atomic_write_text(out / "report.md", render_markdown(table, diffs, baseline, check_results, title, notes))
    write_csv_table(table, out / "table.csv")
    write_records(rows, out / "records")
    for name, data in images.items():
        atomic_write_bytes(out / "plots" / name, data)
    return {"table": table, "checks": check_results, "bad": results.bad, "out": out}
