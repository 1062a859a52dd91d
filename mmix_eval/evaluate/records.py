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
import os
import stat
from pathlib import Path
from typing import Any

from mmix_eval.evaluate.record_types import PER_IMAGE, PerImage, Record, attach, detach  # noqa: F401 (re-exported)
from mmix_eval.io import atomic_write_text
from mmix_eval.upgrade import record_method_settings

SCHEMA = 2
REQUIRED = ("run", "method", "evaluator", "condition", "metric", "value")
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a 100-condition grid x 3 evaluators is well under 1 MB
FIELDS = [
    "schema",
    "run",
    "checkpoint",
    "model",
    "method",
    "method_label",
    "method_settings",
    "sweep",
    "train_seed",
    "data",
    "subset",
    "evaluator",
    "condition",
    "calibrator",
    "label",
    "metric",
    "metric_label",
    "value",
    "direction",
    "format",
    "headline",
    "comparison",
    "n",
    "eval_seed",
    "bin",
    "settings",
    "warnings",
]

# Schema 1's flat columns, and where each went.
_V1_SETTINGS = ("grid", "interpolation", "eps_255", "attack", "bins", "edge_rule")
_V1_LABELS = {
    "acc": "accuracy (%)",
    "nll": "NLL",
    "ece": "ECE",
    "mce": "MCE",
    "brier": "Brier",
    "temperature": "fitted temperature T",
    "bin_count": "images in bin",
    "bin_acc": "bin accuracy",
    "bin_conf": "bin mean confidence",
}
# Schema 1 rendered deformations with grid_sample's nearest mode (border pixels kept for sources within
# half a pixel outside the image); schema-2 rows name their renderer in settings["renderer"].
V1_RENDERER = "grid_sample-nearest (mmix-eval 0.1; border pixels kept)"
EDGE_RULE = "equal-width, [a,b) with last bin [a,1] (numpy.histogram, as netcal)"
TEMPERATURE_LABEL = "Test images, temperature scaled (T fitted per run)"


def record(
    base: dict[str, Any],
    condition: str,
    metric: str,
    value: float,
    label: str | None = None,
    bin: int | None = None,
    *,
    calibrator: str = "none",
    **settings,
) -> Record:
    """One row: ``base`` holds the core columns of the checkpoint and evaluation (and the evaluator-wide
    ``settings``); ``settings`` here adds this row's own (an ε, a severity). ``calibrator``: the post-hoc
    calibrator whose output the value is computed from ("none": the model's own softmax). The metric's spec
    columns are filled in from the evaluator's ``metrics`` when it runs (``with_specs``)."""
    row = {f: None for f in FIELDS}
    row.update(base)
    row["settings"] = {**(base.get("settings") or {}), **settings}
    row.update(
        schema=SCHEMA, condition=condition, calibrator=calibrator, metric=metric, value=value, label=label, bin=bin
    )
    return row


def calibrator_of(row: dict) -> str:
    """A row's calibrator; rows written before the column existed: 'temperature' for the calibration evaluator's
    temperature-scaled condition, else 'none'."""
    return row.get("calibrator") or (
        "temperature" if row.get("condition") == scaled_condition("temperature") else "none"
    )


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
            raise UserError(
                f"evaluator '{evaluator.name}': emitted metric '{r.get('metric')}' without a MetricSpec; "
                f"declared: {', '.join(evaluator.metrics) or 'none'}"
            )
        r.update(
            direction=spec.direction,
            format=spec.format,
            metric_label=spec.label,
            headline=spec.headline and r.get("headline") is not False,  # a row may keep out of the main table
            comparison=spec.comparison,
            evaluator=r.get("evaluator") or evaluator.name,
        )
    return rows


def upgrade(row: dict) -> dict:
    """A schema-1 row as a schema-2 row (a schema-2 row unchanged, with every field present)."""
    if row.get("schema") is not None:
        out = {f: row.get(f) for f in FIELDS}
        out["calibrator"] = calibrator_of(row)
        if out["condition"] == "temperature_scaled" and str(out["label"]).startswith(
            "Test images, temperature scaled (T = "
        ):
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


def _json_line(d: dict) -> str:
    """Strict JSON of one record: NaN and Inf as null (``_json_safe`` walks the record only when one is there)."""
    try:
        return json.dumps(d, allow_nan=False)
    except ValueError:
        return json.dumps(_json_safe(d), allow_nan=False)


def write_records(rows: list[dict], stem: Path) -> tuple[Path, Path]:
    """Write ``stem``.jsonl (strict JSON: NaN as null) and ``stem``.csv atomically; fields starting with '_'
    (per-image outcomes travelling with a row) are not written here."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    jsonl = "".join(_json_line({f: r.get(f) for f in FIELDS}) + "\n" for r in rows)
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


def read_jsonl(path: Path, max_bytes: int = MAX_RECORD_BYTES, share: dict | None = None) -> list[dict]:
    """Records of a .jsonl file, or of a gzipped one (.jsonl.gz, as a committed report keeps them), upgraded to
    the current schema, a null value read as NaN. The one reader: evaluation (skipping what is done) and the
    report both read records through it. Bounded: the file is read in chunks and the cap (``max_bytes``) is
    held on the bytes decompressed so far, so a line without end or a gzip bomb stops at the cap, not at the
    machine's memory. A bad file (not JSON, nested too deep, a field of the wrong type, a number out of
    float range) is a ValueError naming the line and the field. ``share``: a mapping kept across files, to hold
    equal strings and settings once (``_shared``; the report passes one)."""
    rows = []
    for i, line in enumerate(_bounded_lines(path, max_bytes), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line.decode("utf-8"), parse_constant=_constant)
        except json.JSONDecodeError:
            raise ValueError(f"line {i} is not JSON") from None
        except RecursionError:
            raise ValueError(f"line {i} is nested deeper than any record") from None
        except ValueError as e:  # a bare Infinity (see _constant)
            raise ValueError(f"line {i}: {e}") from None
        if not isinstance(r, dict) or any(k not in r for k in REQUIRED):
            raise ValueError(f"line {i} lacks the record fields {', '.join(REQUIRED)}")
        if r["value"] is None:  # NaN, written as null by strict JSON
            r["value"] = math.nan
        r = upgrade(r)
        why = record_problem(r)
        if why:
            raise ValueError(f"line {i}: {why}")
        r["value"] = float(r["value"])
        rows.append(_shared(r, share) if share is not None else r)
    return rows


_SHARED_MAPPINGS = ("settings", "method_settings")


def _shared(r: dict, share: dict) -> dict:
    """One object for equal text values and equal settings across records (a report of 513 runs holds 231k
    records whose paths, labels and settings repeat): the records' memory roughly halves. The shared settings
    are read, never changed, by the report (records are produced, and may be changed, elsewhere)."""
    for k, v in r.items():
        if isinstance(v, str):
            r[k] = share.setdefault(v, v)
        elif k in _SHARED_MAPPINGS and isinstance(v, dict):
            r[k] = share.setdefault(("mapping", json.dumps(v, sort_keys=True, default=str)), v)
    return r


READ_CHUNK = 1 << 20
MAX_NESTING = 32  # settings and method settings are a few levels deep; nothing a record holds needs more


def _bounded_lines(path: Path, max_bytes: int):
    """The file's lines as bytes, read 1 MiB at a time (decompressed, for .gz) and never more than ``max_bytes``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO would block a plain open forever
    raw = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raw.close()
        raise ValueError("expected a regular file, got a FIFO, a device or another special file")
    opened = gzip.open(raw, "rb") if path.name.endswith(".gz") else raw  # noqa: SIM115  (closed by the with below)
    with raw, opened as f:
        buf, size = b"", 0
        while chunk := f.read(READ_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"more than {max_bytes} bytes of records once decompressed")
            buf += chunk
            *lines, buf = buf.split(b"\n")
            yield from lines
        if buf:
            yield buf


def _constant(name: str) -> float:
    """Bare NaN (older writers) is NaN; Infinity is not a value any writer of records gives."""
    if name == "NaN":
        return math.nan
    raise ValueError(f"a bare {name}, expected a finite number or null")


_TEXT = ("run", "evaluator", "condition", "metric", "calibrator")
_TEXT_OR_NONE = ("method", "checkpoint", "model", "method_label", "data", "label", "metric_label", "format")
_INT_OR_NONE = ("schema", "n", "eval_seed", "bin")
_MAPPING_OR_NONE = ("method_settings", "sweep", "settings")
_FLAG_OR_NONE = ("headline", "comparison")
_NUMBER_SETTINGS = ("strength", "eps_255", "eps", "magnitude")


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _depth(v: Any, limit: int = MAX_NESTING) -> int:
    """Nesting depth of a JSON value, counted only up to ``limit`` + 1 (never recursing further)."""
    if not isinstance(v, (dict, list)):
        return 0
    stack, deepest = [(v, 1)], 0
    while stack:  # only containers are pushed: a record's 25 scalar fields cost one isinstance each
        x, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        for y in x.values() if isinstance(x, dict) else x:
            if isinstance(y, (dict, list)):
                stack.append((y, d + 1))
    return deepest


def record_problem(r: dict) -> str | None:
    """What makes an (upgraded) record unusable, or None: each field's type, the value a finite number or NaN,
    nesting bounded, the per-condition settings a report computes with of the right kind."""
    for k in _TEXT:
        if not isinstance(r.get(k), str):
            return f"'{k}' expected text, got {_kind(r.get(k))}"
    for k in _TEXT_OR_NONE:
        if r.get(k) is not None and not isinstance(r[k], str):
            return f"'{k}' expected text or null, got {_kind(r[k])}"
    for k in _INT_OR_NONE:
        if r.get(k) is not None and not (_is_int(r[k]) and 0 <= r[k] < 2**63):
            return f"'{k}' expected a non-negative integer or null, got {_kind(r[k])}"
    for k in _MAPPING_OR_NONE:
        if r.get(k) is not None and not isinstance(r[k], dict):
            return f"'{k}' expected an object or null, got {_kind(r[k])}"
    for k in _FLAG_OR_NONE:
        if r.get(k) is not None and not isinstance(r[k], bool):
            return f"'{k}' expected true, false or null, got {_kind(r[k])}"
    if r.get("train_seed") is not None and not (isinstance(r["train_seed"], str) or _is_int(r["train_seed"])):
        return f"'train_seed' expected an integer, text or null, got {_kind(r['train_seed'])}"
    if r.get("direction") not in (None, "higher", "lower"):
        return f"'direction' expected higher, lower or null, got {str(r['direction'])[:40]!r}"
    if r.get("warnings") is not None and not isinstance(r["warnings"], str):
        return f"'warnings' expected text or null, got {_kind(r['warnings'])}"
    v = r["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"'value' expected a number or null, got {_kind(v)}"
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if math.isinf(f):
        return "'value' expected a finite number or null, got a number out of float range"
    if _depth(r) > MAX_NESTING:
        return f"nested more than {MAX_NESTING} levels deep"
    s = r.get("settings") or {}
    for k in _NUMBER_SETTINGS:
        x = s.get(k)
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not _finite(x)):
            return f"'settings.{k}' expected a finite number or null, got {_kind(x)}"
    if s.get("severity") is not None and not _is_int(s["severity"]):
        return f"'settings.severity' expected an integer or null, got {_kind(s['severity'])}"
    if s.get("corruption") is not None and not isinstance(s["corruption"], str):
        return f"'settings.corruption' expected text or null, got {_kind(s['corruption'])}"
    return None


def _finite(x: float | int) -> bool:
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False
