"""Results as pandas DataFrames, the very frames the report aggregates its table from. Imports no torch.

    from mmix_eval import results
    df = results.load("runs/my-bench/results")          # or a report's records.jsonl(.gz), or a list of paths
    df.groupby(["column", "condition", "calibrator", "metric"])["value"].agg(["mean", "std", "count"])
    bins = results.load_bins("runs/my-bench/results")   # per-bin rows: reliability diagrams, histograms, spectra
    indices, per_condition = results.outcomes("runs/my-bench/results/vanilla-s0/fgsm.outcomes.npz")

One row per (column, method, method settings, sweep values, seed, evaluator, condition, calibrator, metric)
with its value, the metric's direction, the number of test images, and the run's training cost
(images/s, wall time, forward passes per step; NaN where the run's metadata is not at hand). The clean
condition appears once per checkpoint and metric, however many evaluators wrote it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmix_eval.evaluate.outcomes import read_outcomes
from mmix_eval.report.frame import COLUMNS, COST, records_frame
from mmix_eval.report.labels import method_labels
from mmix_eval.report.load import load_results

__all__ = ["COLUMNS", "COST", "load", "load_bins", "outcomes"]


def _paths(path_or_paths) -> list:
    return [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)


def load(path_or_paths) -> pd.DataFrame:
    """The tidy frame of every record under the given folders or files (see the module's docstring)."""
    res = load_results(_paths(path_or_paths))
    return records_frame(res.rows, method_labels(res.rows), res.costs)


def load_bins(path_or_paths) -> pd.DataFrame:
    """The per-bin rows (``bin`` column): reliability-diagram bins, OOD score histograms, singular values."""
    res = load_results(_paths(path_or_paths))
    return records_frame(res.rows, method_labels(res.rows), res.costs, bins=True)


def outcomes(path) -> tuple:
    """(test-image indices, {condition: bool array of correct predictions}) of one ``*.outcomes.npz``."""
    return read_outcomes(Path(path))
