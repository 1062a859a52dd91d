"""Result records as tidy pandas DataFrames: the frame a user loads (``mmix_eval.results.load``) is the one
the report aggregates its cells from. Imports no torch.

One row per (column, seed, evaluator, condition, calibrator, metric): ``column`` is the report's column
label (method, its differing settings, its swept values), ``method_settings`` and ``sweep`` are JSON text
(hashable, groupable), ``seed`` the training seed (the run's name where a run has none). The clean
condition is written by several evaluators of one checkpoint: it is kept once per checkpoint and metric
(the first evaluator's row). Per-bin rows (reliability diagrams, histograms, spectra) are a separate frame.
"""

from __future__ import annotations

import json

import pandas as pd

from mmix_eval.evaluate.records import calibrator_of

COLUMNS = [
    "column",
    "method",
    "method_settings",
    "sweep",
    "seed",
    "run",
    "evaluator",
    "condition",
    "calibrator",
    "metric",
    "value",
    "direction",
    "n",
    "label",
    "metric_label",
    "format",
    "headline",
    "data",
    "model",
]
COST = ["train_images_per_s", "train_wall_time_s", "forward_passes_per_step", "final_train_loss"]


def seed_of(r: dict):
    """A row's training seed; a deep ensemble's is 'ensemble' (so ensembles pair with each other); a run without one,
    its name."""
    if "ensemble_members" in (r.get("method_settings") or {}):
        return "ensemble"
    return r["train_seed"] if r["train_seed"] is not None else r["run"]


def _json(v) -> str:
    return json.dumps(v or {}, sort_keys=True, default=str)


def records_frame(
    records: list[dict], labels: dict[str, str], costs: dict | None = None, bins: bool = False
) -> pd.DataFrame:
    """The tidy frame of ``records`` (no per-bin rows; with ``bins`` only those, with their ``bin``);
    ``labels``: run -> column label; ``costs``: run -> training cost (``COST`` keys), added per row."""
    costs = costs or {}
    picked = [r for r in records if (r["bin"] is not None) == bins]
    data = {
        "column": [labels[r["run"]] for r in picked],
        "method": [r["method"] for r in picked],
        "method_settings": [_json(r["method_settings"]) for r in picked],
        "sweep": [_json(r.get("sweep")) for r in picked],
        "seed": [seed_of(r) for r in picked],
        "run": [r["run"] for r in picked],
        "evaluator": [r["evaluator"] for r in picked],
        "condition": [r["condition"] for r in picked],
        "calibrator": [calibrator_of(r) for r in picked],
        "metric": [r["metric"] for r in picked],
        "value": [float(r["value"]) for r in picked],
        "direction": [r["direction"] for r in picked],
        "n": [r["n"] for r in picked],
        "label": [r["label"] for r in picked],
        "metric_label": [r["metric_label"] for r in picked],
        "format": [r["format"] for r in picked],
        "headline": [bool(r["headline"]) for r in picked],
        "data": [r["data"] for r in picked],
        "model": [r["model"] for r in picked],
    }
    if bins:
        data["bin"] = [int(r["bin"]) for r in picked]
    for k in COST:
        data[k] = [(costs.get(r["run"]) or {}).get(k) for r in picked]
    df = pd.DataFrame(data)
    if not bins and len(df):
        clean = df["condition"] == "clean"
        df = df[
            ~(clean & df.duplicated(["run", "condition", "calibrator", "metric"]))
        ]  # one clean per checkpoint and metric
    return df.reset_index(drop=True)


def row_key(frame: pd.DataFrame) -> pd.Series:
    """The table row a frame row feeds: (evaluator, condition, calibrator, metric), the clean condition's
    evaluator None."""
    keys = [
        (None if c == "clean" else e, c, k, m)
        for e, c, k, m in zip(frame["evaluator"], frame["condition"], frame["calibrator"], frame["metric"])
    ]
    return pd.Series(keys, index=frame.index, dtype=object)


def cell_values(frame: pd.DataFrame) -> dict[tuple, dict]:
    """(row key, column) -> {seed: value}: a cell's values over training seeds, first value per seed."""
    if not len(frame):
        return {}
    df = frame.assign(_key=row_key(frame)).drop_duplicates(["_key", "column", "seed"])
    out = {}
    for (key, column), g in df.groupby(["_key", "column"], sort=False):
        out[key, column] = dict(zip(g["seed"], g["value"]))
    return out
