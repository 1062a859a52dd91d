"""What an export sends to a tracker, read from the records alone (no tracker runs inside training): one tracker run
per evaluated checkpoint, with

- params: the method and its settings, the model, data and seed, swept values, the training configuration (from the
  checkpoint's ``model.json`` when its run folder is found) and the provenance (checkpoint hash and origin, versions,
  git commit), flattened to ``a.b`` keys;
- metrics: every record, named ``RESULT/CONDITION/METRIC[/CALIBRATOR][/binK]`` (RESULT: the evaluator's result file,
  ``fgsm`` or ``fgsm-pgd7``), non-finite values left out and counted;
- the training curve: ``log.jsonl``'s numeric columns per epoch, as ``train/KEY`` at step EPOCH;
- artifacts: the run's record files (and the report, when given).

The run id is stable: a hash of the checkpoint's SHA-256 and the run's name, so a second export finds the first.
``content`` is a hash of everything sent: a tracker that holds a run with the same id and content skips it."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import read_records
from mmix_eval.io import TEXT_CAP, read_bounded

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /:]")  # what MLflow accepts in a metric name; the others accept more


@dataclass
class RunExport:
    run_id: str
    name: str
    params: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, {name: value})
    artifacts: list[Path] = field(default_factory=list)
    non_finite: int = 0  # records left out (NaN / inf: not every tracker takes them)
    content: str = ""


def metric_name(r: dict, result: str) -> str:
    """A record's metric name in a tracker: RESULT/CONDITION/METRIC[/CALIBRATOR][/binK], each part with the
    characters MLflow refuses replaced by '_'."""
    parts = [result, r["condition"], r["metric"]]
    if r.get("calibrator") not in (None, "none"):
        parts.append(r["calibrator"])
    if r.get("bin") is not None:
        parts.append(f"bin{r['bin']}")
    return "/".join(_UNSAFE.sub("_", str(p)) for p in parts)


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists as JSON text; None as 'null'."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        elif v is None:
            out[key] = "null"
        else:
            out[key] = v
    return out


def run_folders(results: Path) -> list[Path]:
    """The run folders of a results folder, a bench's folder (its results/), or one run's folder."""
    if not results.is_dir():
        raise UserError(f"export: expected a results folder (RUN/EVALUATOR.jsonl), got '{results}' (not a folder)")
    if (results / "results").is_dir() and (results / "runs").is_dir():  # a bench
        results = results / "results"
    folders = [results] if list(results.glob("*.jsonl")) else sorted(p for p in results.iterdir() if p.is_dir())
    folders = [f for f in folders if list(f.glob("*.jsonl"))]
    if not folders:
        raise UserError(f"export: expected records (RUN/EVALUATOR.jsonl) under '{results}', got none")
    return folders


def collect(folder: Path) -> RunExport:
    """One run folder's records, metadata and training curve as one tracker run."""
    metrics, seen, first, metas, non_finite = {}, {}, None, [], 0
    files = sorted(folder.glob("*.jsonl"))
    for f in files:
        result = f.stem
        meta_file = folder / f"{result}.meta.json"
        if meta_file.is_file():
            metas.append(json.loads(read_bounded(meta_file, "meta file", TEXT_CAP)))
        for r in read_records(f):
            first = first or r
            value = r["value"]
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                non_finite += 1
                continue
            name = metric_name(r, result)
            if name in metrics and metrics[name] != value:
                raise UserError(
                    f"export: records {seen[name]} and {f.name} both give metric '{name}' of run '{folder.name}', "
                    f"with different values; expected one value per name"
                )
            metrics[name], seen[name] = float(value), f.name
    meta = metas[0] if metas else {}
    sha = meta.get("checkpoint_sha256") or ""
    run_id = hashlib.sha256(f"{sha}\n{folder.name}".encode()).hexdigest()[:16]
    run_dir = _run_dir(folder, meta)
    params = _params(first or {}, meta, run_dir)
    curve = _curve(run_dir / "log.jsonl") if run_dir is not None else []
    artifacts = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    out = RunExport(run_id, folder.name, params, metrics, curve, artifacts, non_finite)
    out.content = hashlib.sha256(
        json.dumps([params, sorted(metrics.items()), curve], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    return out


def _run_dir(folder: Path, meta: dict) -> Path | None:
    """The checkpoint's run folder (log.jsonl, model.json): a bench's runs/RUN, else the folder the meta names."""
    bench = folder.parent.parent / "runs" / folder.name
    if (bench / "model.json").is_file():
        return bench
    ckpt = meta.get("checkpoint")
    if isinstance(ckpt, str) and (Path(ckpt).parent / "model.json").is_file():
        return Path(ckpt).parent
    return None


def _params(r: dict, meta: dict, run_dir: Path | None) -> dict:
    params = {
        "run": r.get("run"),
        "method": r.get("method"),
        "method_label": r.get("method_label"),
        "method_settings": r.get("method_settings") or {},
        "model": r.get("model"),
        "data": r.get("data"),
        "train_seed": r.get("train_seed"),
        "sweep": r.get("sweep") or {},
        "eval_seed": r.get("eval_seed"),
        "subset": r.get("subset"),
        "checkpoint_sha256": meta.get("checkpoint_sha256"),
        "checkpoint_origin": meta.get("checkpoint_origin"),
        "git_commit": meta.get("git_commit"),
        "versions": meta.get("versions") or {},
    }
    if run_dir is not None:
        model = json.loads(read_bounded(run_dir / "model.json", "model.json", TEXT_CAP))
        params["train"] = (model.get("config") or {}).get("train") or {}
        params["model_kwargs"] = (model.get("model") or {}).get("kwargs") or {}
    return flatten(params)


def _curve(log: Path) -> list[tuple[int, dict[str, float]]]:
    """log.jsonl's numeric columns per epoch (step: the epoch)."""
    if not log.is_file():
        return []
    out = {}  # epoch -> values; a resumed run may log an epoch twice: the last one is the run's
    for line in read_bounded(log, "log.jsonl", TEXT_CAP).decode("utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill: the training's own reader skips it too
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            continue
        values = {
            f"train/{k}": float(v)
            for k, v in row.items()
            if k not in ("epoch", "step")
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
        }
        out[row["epoch"]] = values
    return sorted(out.items())
