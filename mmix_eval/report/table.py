"""The table model: rows (evaluator, condition, metric, with the metric's declared direction and format),
columns (method labels), cells (one value per training seed). Rows come from the records' typed fields,
never from display labels; the cells are aggregated from the tidy DataFrame (``frame.py``), so the frame a
user loads is the one the report was built from. Imports no torch."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import BUILTIN
from mmix_eval.evaluate.console import fmt_value
from mmix_eval.evaluate.records import calibrator_of, is_scaled_condition
from mmix_eval.report.frame import cell_values, records_frame, seed_of
from mmix_eval.report.labels import method_labels, order_methods, sweep_bases


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
    calibrator: str = "none"  # the post-hoc calibrator the values are computed after ("none": raw)

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
    def nonfinite(self) -> int:
        """How many of the seeds' values are NaN or ±inf (an evaluator's undefined number, a derived score with
        a zero denominator): such a cell has no mean, std or interval, and says so."""
        return sum(1 for v in self.values.values() if not math.isfinite(v))

    @property
    def mean(self) -> float:
        return math.nan if self.nonfinite else statistics.fmean(self.values.values())

    @property
    def std(self) -> float | None:
        """Sample std over seeds (None with one seed); NaN when a seed's value is not finite."""
        if self.n < 2:
            return None
        return math.nan if self.nonfinite else statistics.stdev(self.values.values())

    @property
    def na_text(self) -> str:
        return f"n/a ({self.nonfinite} of {self.n} non-finite)"


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
    caveats: dict = field(default_factory=dict)  # (row index, column) -> short caveats its cell carries (``caveats``)
    chosen: set = field(default_factory=set)  # the sweep columns chosen on held-out data (``sweep.sweep_choices``)

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


def signed_text(table: Table, i: int, v: float, signed: bool = True) -> str:
    """A value of row ``i`` in its format, with its sign (+ or a true minus)."""
    s = table.fmt(i, v)
    return ("+" + s) if signed and v >= 0 else s.replace("-", "−")


def is_detail(r: dict) -> bool:
    """Per-severity corruption rows: kept in the records and plotted, never a table row (their means are)."""
    s = r.get("settings") or {}
    return s.get("severity") is not None and s.get("corruption") is not None


def evaluator_order(records: list[dict]) -> list[str]:
    present = {r["evaluator"] for r in records}
    return [e for e in BUILTIN if e in present] + sorted(str(e) for e in present - set(BUILTIN))


def section_title(evaluator: str) -> str:
    return f"{evaluator}: every metric per condition"


def row_name(r: dict) -> str:
    """A row's label: the condition's, the metric's, and the calibrator where the condition's own label does not
    name it (every calibrated row but the calibration evaluator's scaled conditions)."""
    text = f"{r['label'] or r['condition']}: {r['metric_label'] or r['metric']}"
    cal = calibrator_of(r)
    return text if cal == "none" or is_scaled_condition(r) else f"{text}, {cal} scaled"


def _rows(records: list[dict]) -> tuple[list[Row], list]:
    """The table's rows and its sections, in order. Keys are (evaluator, condition, metric) from typed
    fields; the clean condition's rows are one row whatever evaluator wrote them."""
    rows: list[Row] = []
    seen: set = set()
    sections: dict[str, list[int]] = {}

    def add(r, evaluator, section, label):
        key = (section, evaluator, r["condition"], calibrator_of(r), r["metric"])
        if key in seen:
            return
        seen.add(key)
        s = r["settings"] or {}
        rows.append(
            Row(
                evaluator,
                r["condition"],
                r["metric"],
                label,
                r["direction"],
                r["format"] or ".4f",
                section,
                s.get("strength") if isinstance(s.get("strength"), (int, float)) else None,
                s,
                calibrator_of(r),
            )
        )
        sections.setdefault(section, []).append(len(rows) - 1)

    table_rows = [r for r in records if r["bin"] is None and not is_detail(r)]  # detail rows: plots and files
    by_eval = {e: [r for r in table_rows if r["evaluator"] == e] for e in evaluator_order(table_rows)}
    clean = [r for r in table_rows if r["condition"] == "clean"]
    name = row_name
    for r in clean:  # the comparison opens with clean accuracy (every headline metric at the clean condition)
        if r["headline"]:
            add(r, None, "comparison", name(r))
    for e, rs in by_eval.items():
        for r in rs:
            if r["headline"] and r["condition"] != "clean":
                add(r, e, "comparison", name(r))
    for r in clean:  # and closes with the clean likelihood and calibration scores (records before the
        if not r["headline"] and r["direction"] is not None and r.get("comparison") is not False:  # flag: all)
            add(r, None, "comparison", name(r))

    def kind(r):  # a metric, raw or after a calibrator (the calibration evaluator's scaled conditions: by metric)
        return r["metric"], "none" if is_scaled_condition(r) else calibrator_of(r)

    for e, rs in by_eval.items():  # then each evaluator's other metrics, grouped by kind: how ECE (say) moves from
        # clean through every shift, raw, then after the calibrator
        plain = [(kind(r), r) for r in rs if not r["headline"]]
        by_kind: dict = {}
        for k, r in plain:  # grouped once (a scan of every record per kind grew with runs x kinds)
            by_kind.setdefault(k, []).append(r)
        shifted = [k for k, r in plain if r["condition"] != "clean"]
        for m in dict.fromkeys(shifted + [k for k, _ in plain]):
            group = by_kind[m]
            if any(r["condition"] != "clean" for r in group):
                for r in group:
                    add(r, None if r["condition"] == "clean" else e, e, name(r))
    order = ["comparison", *by_eval]
    titled = [(k, "Comparison" if k == "comparison" else section_title(k), sections[k]) for k in order if k in sections]
    return rows, titled


def aggregate(records: list[dict], baseline: str | None = None, order: list[str] | None = None) -> Table:
    """The table of ``records``: rows from their typed fields, cells from the tidy frame (``frame.py``),
    columns in ``order`` (a bench's YAML order) or the default order (see ``labels.order_methods``)."""
    labels = method_labels(records)
    info = {}
    for r in records:
        info.setdefault(labels[r["run"]], (r["method"], r["method_settings"] or {}))
    rows, sections = _rows(records)
    index: dict = {}
    for i, row in enumerate(rows):
        index.setdefault((row.evaluator, row.condition, row.calibrator, row.metric), []).append(i)
    runs: dict = {}
    for r in records:
        if r["bin"] is None:
            runs.setdefault(labels[r["run"]], {}).setdefault(seed_of(r), r["run"])
    cells: dict = {}
    for (key, column), values in cell_values(records_frame(records, labels)).items():
        for i in index.get(key, []):
            cells[i, column] = Cell(dict(values))
    methods = order_methods(labels, records, baseline, order)
    context = {
        "data": sorted({str(r["data"]) for r in records}),
        "model": sorted({str(r["model"]) for r in records}),
        "n_images": sorted({r["n"] for r in records if r["n"] is not None}),
        "eval_seed": sorted({r["eval_seed"] for r in records if r["eval_seed"] is not None}),
        "settings": evaluator_settings(records),
        "schemas": sorted({r["schema"] for r in records if r["schema"]}),
    }
    return Table(rows, methods, cells, context, runs, info, sections, sweep_bases(records, labels))


_ROW_SETTINGS = (
    "strength",
    "eps_255",
    "eps",
    "after",
    "target_classes",
    "deformation",
    "magnitude",
    "corruption",
    "severity",
    "ood",
    "score",
    "n_ood",
    "shift_set",
    "set_images",
    "layer",
    "width",
    "projected",  # differ by condition
    "eps_255_per_channel",
    "pixels_outside_01",  # and by model (its normalisation, its gradients,
    "calibrator_params",
    "ensemble_scores",
    *("knn_k", "vim_dim", "react_percentile", "ash_percentile", "chosen_by"),  # an OOD feature score's (per model)
    *("ood_group", "group_sets"),  # an OpenOOD set's group, a group row's sets
)  # its fitted calibrator, an ensemble's score definitions)


def evaluator_settings(records: list[dict]) -> dict[str, dict[str, list]]:
    """evaluator -> setting -> the distinct values its rows hold (what the report's header states)."""
    out: dict[str, dict[str, set]] = {}
    for r in records:
        for k, v in (r["settings"] or {}).items():
            if k not in _ROW_SETTINGS and v is not None:
                out.setdefault(str(r["evaluator"]), {}).setdefault(k, set()).add(
                    json.dumps(v) if not isinstance(v, str) else v
                )
    return {e: {k: sorted(v) for k, v in s.items()} for e, s in out.items()}


def comparability_key(r: dict) -> str:
    """What must be equal for two runs' rows of one evaluator to be compared (and paired): the data, the
    evaluated test subset, the evaluation seed and image count, and the evaluator's settings."""
    settings = {k: v for k, v in (r["settings"] or {}).items() if k not in _ROW_SETTINGS}
    return json.dumps(
        [str(r["evaluator"]), str(r["data"]), r["subset"], r["eval_seed"], r["n"], settings],
        sort_keys=True,
        default=str,
    )


def _run_id(r: dict) -> tuple[str, str]:
    """A run is its name and where its records lie: results/<run>/<evaluator>.jsonl, or one report's records."""
    src = Path(str(r.get("_source") or ""))
    return str(r["run"]), str(src if src.name == "records.jsonl" or not src.name else src.parent)


def comparable_groups(rows: list[dict]) -> list[list[dict]]:
    """The records split into groups of runs that can share one report: two runs conflict when an evaluator
    both have gives them different comparability keys (a run without some evaluator conflicts with none).
    Within a group, one run name from two places is an error naming both files."""
    per_run: dict[tuple, dict[str, set]] = {}
    memo: dict = {}  # (run, source) -> its id: the path work done once per record file, not per record

    def run_id(r: dict) -> tuple[str, str]:
        rid = memo.get((r["run"], r.get("_source")))
        if rid is None:
            rid = memo[(r["run"], r.get("_source"))] = _run_id(r)
        return rid

    for r in rows:
        rid = run_id(r)
        per_run.setdefault(rid, {}).setdefault(str(r["evaluator"]), set()).add(comparability_key(r))
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
                raise UserError(
                    f"results: run '{rid[0]}' is in two places, {names[rid[0]][1]} and {rid[1]}, with "
                    f"comparable records; expected one (a duplicate run: report one of them)"
                )
        ids = set(g)
        out += by_subset([r for r in rows if run_id(r) in ids])
    return out


def subset_key(r: dict) -> tuple:
    """The test images a record was computed on: data, image count, subset fingerprint, evaluation seed (None:
    not recorded, as in schema-1 calibration rows, which fits any)."""
    return str(r["data"]), r["n"], r["subset"], r["eval_seed"]


def _fits(a: tuple, b: tuple) -> bool:
    return all(x is None or y is None or x == y for x, y in zip(a, b))


def by_subset(rows: list[dict]) -> list[list[dict]]:
    """Rows split by test subset: records of one report (of one run, or of runs that share no evaluator) on
    different test images are never put side by side (a clean row on 30 images beside corruption means on 100).
    A record whose subset is not recorded goes with the first subset it fits."""
    keys: list[tuple] = []
    groups: list[list[dict]] = []
    for r in rows:
        k = subset_key(r)
        j = next((j for j, g in enumerate(keys) if _fits(g, k)), None)
        if j is None:
            keys.append(k)
            groups.append([r])
        else:
            keys[j] = tuple(x if x is not None else y for x, y in zip(keys[j], k))
            groups[j].append(r)
    return groups


def describe_group(rows: list[dict]) -> str:
    r = next((x for x in rows if x["n"] is not None), rows[0])
    runs = sorted({x["run"] for x in rows})
    evaluators = sorted({str(x["evaluator"]) for x in rows})
    return (
        f"{len(runs)} run(s) like '{runs[0]}' ({', '.join(evaluators[:4])}): data {r['data']}, {r['n']} test images "
        f"(subset {r['subset']}), evaluation seed {r['eval_seed']}"
    )


def check_duplicates(rows: list[dict], labels: dict[str, str]) -> None:
    seen: dict[tuple, str] = {}
    for r in rows:
        key = (labels[r["run"]], r["train_seed"] if r["train_seed"] is not None else r["run"])
        if seen.setdefault(key, r["run"]) != r["run"]:
            other = seen[key]
            raise UserError(
                f"results: {key[0]} seed {key[1]} is both run '{other}' and run '{r['run']}' "
                f"({_run_id(r)[1]}); expected one run per method and seed (a duplicate: drop one)"
            )


FIT_CAVEATS = (  # a needle in a calibrated row's warnings -> the words its cell carries
    ("temperature held at its", "T at its bound"),
    ("L2 penalty toward the identity", "penalised fit"),
    ("absent from the held-out images", "a class left uncalibrated"),
    ("too few for", "ODIR not cross-validated"),
)


def caveats(table: Table, records: list[dict], labels: dict[str, str]) -> dict:
    """(row index, column) -> the caveats its cell carries: a calibrated row whose calibrator was fitted at a bound
    (or penalised) in some of the column's runs ('T at its bound in 2 of 3 runs'), and an AUROC below 0.5 (the score
    ranks the OOD images above the in-distribution ones)."""
    hit: dict = {}
    for r in records:
        cal = r.get("calibrator") or "none"
        w = str(r.get("warnings") or "")
        for needle, text in FIT_CAVEATS:
            if cal != "none" and needle in w:
                hit.setdefault((r["condition"], cal, labels[r["run"]], text), set()).add(seed_of(r))
    out: dict = {}
    for i, row in enumerate(table.rows):
        for m in table.methods:
            c = table.cells.get((i, m))
            if c is None:
                continue
            notes = [
                f"{text} in {len(seeds)} of {c.n} run{'s' if c.n != 1 else ''}"
                for (cond, cal, col, text), seeds in sorted(hit.items())
                if cond == row.condition and cal == row.calibrator and col == m
            ]
            if row.metric == "auroc" and not c.nonfinite and c.mean < 0.5:
                notes.append("below 0.5: ranks OOD above in-distribution")
            if notes:
                out[i, m] = notes
    return out
