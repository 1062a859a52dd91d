"""Tidy result records: one row per checkpoint × evaluator × condition × metric. Imports no torch.

Schema 2 (``schema`` = 2 in every row): a fixed core, the same for every evaluator, plus ``settings``, the
evaluator's own mapping (grid, interpolation, ε, attack, bins, …), kept whole. Each row carries its
metric's spec (``direction``, ``format``, ``metric_label``, ``headline``), so a report can be built from
the record files alone, also for an evaluator it has never seen. Records written by schema 1 (flat
columns ``alpha``, ``grid``, ``eps_255``, ``higher_is_better``, …) are read through ``upgrade``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

from mmix_eval.io import atomic_write_text
from mmix_eval.upgrade import record_method_settings

SCHEMA = 2
REQUIRED = ("run", "method", "evaluator", "condition", "metric", "value")
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a 100-condition grid x 3 evaluators is well under 1 MB
FIELDS = [
    "schema", "run", "checkpoint", "model", "method", "method_label", "method_settings", "sweep", "train_seed", "data", "subset",
    "evaluator", "condition", "calibrator", "label", "metric", "metric_label", "value", "direction", "format", "headline", "comparison",
    "n", "eval_seed", "bin", "settings", "warnings",
]

# Schema 1's flat columns, and where each went.
_V1_SETTINGS = ("grid", "interpolation", "eps_255", "attack", "bins", "edge_rule")
_V1_LABELS = {"acc": "accuracy (%)", "nll": "NLL", "ece": "ECE", "mce": "MCE", "brier": "Brier",
              "temperature": "fitted temperature T", "bin_count": "images in bin", "bin_acc": "bin accuracy",
              "bin_conf": "bin mean confidence"}
# Schema 1 rendered deformations with grid_sample's nearest mode (border pixels kept for sources within
# half a pixel outside the image); schema-2 rows name their renderer in settings["renderer"].
V1_RENDERER = "grid_sample-nearest (mmix-eval 0.1; border pixels kept)"
EDGE_RULE = "equal-width, [a,b) with last bin [a,1] (numpy.histogram, as netcal)"
TEMPERATURE_LABEL = "Test images, temperature scaled (T fitted per run)"


def record(base: dict[str, Any], condition: str, metric: str, value: float, label: str | None = None,
           bin: int | None = None, *, calibrator: str = "none", **settings) -> dict[str, Any]:
    """One row: ``base`` holds the core columns of the checkpoint and evaluation (and the evaluator-wide
    ``settings``); ``settings`` here adds this row's own (an ε, a severity). ``calibrator``: the post-hoc
    calibrator whose output the value is computed from ("none": the model's own softmax). The metric's spec
    columns are filled in from the evaluator's ``metrics`` when it runs (``with_specs``)."""
    row = {f: None for f in FIELDS}
    row.update(base)
    row["settings"] = {**(base.get("settings") or {}), **settings}
    row.update(schema=SCHEMA, condition=condition, calibrator=calibrator, metric=metric, value=value, label=label,
               bin=bin)
    return row


def calibrator_of(row: dict) -> str:
    """A row's calibrator; rows written before the column existed: 'temperature' for the calibration evaluator's
    temperature-scaled condition, else 'none'."""
    return row.get("calibrator") or ("temperature" if row.get("condition") == scaled_condition("temperature") else "none")


def scaled_condition(calibrator: str) -> str:
    """The calibration evaluator's condition for the clean test images after ``calibrator``."""
    return f"{calibrator}_scaled"


def is_scaled_condition(row: dict) -> bool:
    """A row of that condition: its label names the calibrator already, and a report groups it with the raw
    rows of its own evaluator."""
    cal = calibrator_of(row)
    return cal != "none" and row.get("condition") == scaled_condition(cal)


def with_specs(rows: list[dict], evaluator) -> list[dict]:
    """Fill each row's spec columns from the evaluator's MetricSpecs; a metric without one is an error."""
    from mmix_eval.errors import UserError

    for r in rows:
        spec = evaluator.metrics.get(r.get("metric"))
        if spec is None:
            raise UserError(f"evaluator '{evaluator.name}': emitted metric '{r.get('metric')}' without a MetricSpec; "
                            f"declared: {', '.join(evaluator.metrics) or 'none'}")
        r.update(direction=spec.direction, format=spec.format, metric_label=spec.label, headline=spec.headline,
                 comparison=spec.comparison,
                 evaluator=r.get("evaluator") or evaluator.name)
    return rows


def upgrade(row: dict) -> dict:
    """A schema-1 row as a schema-2 row (a schema-2 row unchanged, with every field present)."""
    if row.get("schema") is not None:
        out = {f: row.get(f) for f in FIELDS}
        out["calibrator"] = calibrator_of(row)
        if out["condition"] == "temperature_scaled" and str(out["label"]).startswith("Test images, temperature scaled (T = "):
            out["label"] = TEMPERATURE_LABEL  # records before 0.4 put one run's T into a label every run shares
        return out
    out = {f: row.get(f) for f in FIELDS}
    hib = row.get("higher_is_better")
    metric = row.get("metric")
    out.update(
        schema=1,
        calibrator=calibrator_of(row),
        method_settings=record_method_settings(row),
        settings={k: row[k] for k in _V1_SETTINGS if row.get(k) is not None},
        direction=None if hib is None else ("higher" if hib else "lower"),
        format=".2f" if metric == "acc" else ".3f" if metric == "temperature" else ".4f",
        metric_label=_V1_LABELS.get(metric, str(metric)),
        headline=metric == "acc" and row.get("evaluator") in ("deformations", "fgsm"),
    )
    if row.get("evaluator") == "deformations" and row.get("condition") != "clean":
        out["settings"]["renderer"] = V1_RENDERER
    if row.get("evaluator") == "fgsm" and row.get("eps_255") is not None:
        out["settings"]["strength"] = row["eps_255"]
    return out


def _cell(v: Any) -> str:
    """A CSV cell that a spreadsheet cannot run: formula-like strings get a leading apostrophe."""
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, (list, dict)):
        v = json.dumps(v, sort_keys=True)
    s = str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(s) else s


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _json_safe(v: Any) -> Any:
    """NaN / Inf as null: strict JSON parsers (browsers, jq, Node) refuse bare NaN."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def write_records(rows: list[dict], stem: Path) -> tuple[Path, Path]:
    """Write ``stem``.jsonl (strict JSON: NaN as null) and ``stem``.csv atomically; fields starting with '_'
    (per-image outcomes travelling with a row) are not written here."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    jsonl = "".join(json.dumps(_json_safe({f: r.get(f) for f in FIELDS}), allow_nan=False) + "\n" for r in rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FIELDS)
    for r in rows:
        w.writerow([_cell(r.get(f)) for f in FIELDS])
    paths = stem.with_suffix(".jsonl"), stem.with_suffix(".csv")
    atomic_write_text(paths[0], jsonl)
    atomic_write_text(paths[1], buf.getvalue())
    return paths


def read_records(path: Path) -> list[dict]:
    """Rows of a .jsonl record file, upgraded to the current schema; a null value reads as NaN."""
    return read_jsonl(Path(path))


def read_jsonl(path: Path, max_bytes: int = MAX_RECORD_BYTES) -> list[dict]:
    """Records of a .jsonl file, or of a gzipped one (.jsonl.gz, as a committed report keeps them), upgraded to
    the current schema, a null value read as NaN; the decompressed size is held to ``max_bytes``. The one
    reader: evaluation (skipping what is done) and the report both read records through it. A bad file is a
    ValueError naming the line."""
    rows, size = [], 0
    opened = gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
    with opened as f:
        for i, line in enumerate(f, 1):
            size += len(line)
            if size > max_bytes:
                raise ValueError(f"more than {max_bytes} bytes of records once decompressed")
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
            rows.append(r)
    return rows


def fmt_value(v: float | None, format_spec: str | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    try:
        return format(v, format_spec or ".4f")
    except (TypeError, ValueError):
        return format(v, ".4f")


# Scores every condition records that the terminal table leaves to the files (it stays readable at 80-120 columns).
CONSOLE_LEFT_OUT = {"ece_em", "cw_ece", "signed_ce", "aurc", "risk80", "risk90"}


def summary_table(rows: list[dict]) -> str:
    """A short terminal table: conditions down, the evaluator's summary metrics across (a calibrated score as
    'nll@temperature'; the finer estimators are in the files, said in the last line)."""
    rows = [r for r in rows if r["bin"] is None]
    conditions: list[str] = []
    metrics: list[str] = []
    cell: dict[tuple[str, str], dict] = {}
    per: dict[str, list[str]] = {}
    left_out = False
    for r in rows:
        if r["metric"] in CONSOLE_LEFT_OUT:
            left_out = True
            continue
        cal = calibrator_of(r)
        column = r["metric"] if cal == "none" or is_scaled_condition(r) else f"{r['metric']}@{cal}"
        if r["condition"] not in conditions:
            conditions.append(r["condition"])
        per.setdefault(r["condition"], []).append(column)
        cell[r["condition"], column] = r
    for c in sorted(per, key=lambda c: -len(per[c])):  # the fullest condition's metric order first
        metrics += [m for m in dict.fromkeys(per[c]) if m not in metrics]
    not_scores = {m for (c, m), r in cell.items() if r.get("direction") is None and r.get("schema") == SCHEMA}
    metrics = [m for m in metrics if m not in not_scores] + [m for m in metrics if m in not_scores]
    text = {(c, m): fmt_value(cell[c, m]["value"], cell[c, m]["format"]) if (c, m) in cell else ""
            for c in conditions for m in metrics}
    width = max([len(c) for c in conditions] + [9])
    # every column at least two spaces wider than its header and its widest value: never 'briertemperature'
    cols = [max([8, len(m)] + [len(text[c, m]) for c in conditions]) + 2 for m in metrics]
    lines = [f"  {'condition':<{width}}" + "".join(f"{m:>{w}}" for m, w in zip(metrics, cols))]
    for c in conditions:
        lines.append(f"  {c:<{width}}" + "".join(f"{text[c, m]:>{w}}" for m, w in zip(metrics, cols)))
    if left_out:
        lines.append("  (equal-mass and classwise ECE, signed error, AURC and risk at coverage: in the .csv and .jsonl)")
    return "\n".join(lines)
