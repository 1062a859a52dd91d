"""The record an evaluator returns, typed: its columns (``Record``) and the per-image data it carries to the runner
(``PerImage``), which is stored beside the records, never in them. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypedDict


@dataclass(frozen=True)
class PerImage:
    """What a condition's row carries from its evaluator to the runner beside its value: stored in the outcomes file
    (``evaluate.outcomes``), never in the records. ``correct``: each image's correctness (bool; on the condition's
    acc row); ``boot`` and ``bins``: the bootstrap replicates and reliability bins of its probability scores (on
    its first probability row, per calibrator); ``indices``: the condition's own image indices where its images are
    not the test subset's (a natural-shift set)."""

    correct: Any = None
    boot: Any = None
    bins: Any = None
    indices: Any = None


class Record(TypedDict, total=False):
    """One row as an evaluator returns it (``record`` builds it): the columns of ``FIELDS`` and, while in flight,
    the per-image data it carries (``per_image``), which the runner takes off before anything is written."""

    schema: int
    run: str
    checkpoint: str | None
    model: str | None
    method: str | None
    method_label: str | None
    method_settings: dict | None
    sweep: dict | None
    train_seed: int | None
    data: str | None
    subset: Any
    evaluator: str
    condition: str
    calibrator: str
    label: str | None
    metric: str
    metric_label: str | None
    value: float
    direction: str | None
    format: str | None
    headline: bool | None
    comparison: bool | None
    n: int | None
    eval_seed: int | None
    bin: int | None
    settings: dict | None
    warnings: str | None
    per_image: PerImage


PER_IMAGE = "per_image"  # the one key of a row in flight that is not a record column


def attach(row: dict, **data) -> dict:
    """``row`` carrying per-image data (``PerImage`` fields), added to what it already carries."""
    row[PER_IMAGE] = replace(row.get(PER_IMAGE) or PerImage(), **data)
    return row


def detach(row: dict) -> PerImage | None:
    """The per-image data a row carries, taken off it (None where it carries none)."""
    return row.pop(PER_IMAGE, None)
