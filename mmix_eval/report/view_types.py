"""The shapes of the report's view model: what ``view.build_view`` returns and every renderer (HTML, Markdown,
LaTeX, summary, claims) reads. TypedDicts: plain dicts at run time (the templates index them by key), checked
shapes for a reader and a type checker. Imports no torch."""

from __future__ import annotations

from typing import Any, TypedDict


class MainCell(TypedDict):
    text: str  # mean ± std, with ‡ where the best is gated by accuracy
    best: bool  # bold: the best in its row where it holds against the runner-up
    dagger: bool  # a primary method claim against the baseline holds
    mark: str  # " †", " *" or ""


class MainRow(TypedDict):
    label: str
    direction: str | None
    cells: list[MainCell]


class MainTable(TypedDict, total=False):
    columns: list[str]
    rows: list[MainRow]
    caption: str
    ensembles: MainTable | None  # the deep ensembles' table, beside the single models'


class SectionCell(TypedDict):
    text: str
    cls: str  # "best", "na" or ""
    best: bool


class SectionRow(TypedDict):
    label: str
    cells: list[SectionCell]
    paper: list[str]  # the published numbers, one per paper method


class SectionView(TypedDict):
    key: str
    title: str
    rows: list[SectionRow]
    paper_methods: list[str]


class SweepCell(TypedDict):
    text: str
    cls: str  # "best", "na", "paper" or ""


class SweepRow(TypedDict):
    metric: str
    method: str
    cells: list[SweepCell]
    paper: bool


class FixedRow(TypedDict):
    metric: str
    method: str
    text: str


class SweepView(TypedDict):
    title: str
    key: str
    head: list[str]
    rows: list[SweepRow]
    fixed: list[FixedRow]


class DiffRow(TypedDict):
    method: str  # "column − against"
    label: str
    family: str
    seeds: str  # the method claim
    images: str  # the network claim


class Differences(TypedDict):
    rows: list[DiffRow]
    images: bool
    legend: str


# One column's verdicts; "not" is a keyword, hence the functional form.
MethodVerdicts = TypedDict(
    "MethodVerdicts",
    {
        "method": str,
        "holds": list[str],
        "not": list[str],
        "better": list[str],
        "worse": list[str],
        "net_better": list[str],
        "net_worse": list[str],
        "more_seeds": list[tuple[str, Any]],
        "against": str,
        "ensemble": bool,
        "pairs": set,
        "images": set,
    },
)


class Verdicts(TypedDict):
    by_condition: list[tuple[str, list[str]]]  # condition label -> one sentence per column
    by_method: list[MethodVerdicts]
    short: list[str]  # one paragraph per column, the report's top
    count: int  # primary method claims
    family: str


class CostRow(TypedDict):
    label: str
    cells: list[str]


class CostTable(TypedDict):
    head: list[str]
    rows: list[CostRow]
    caption: str


class Skipped(TypedDict):
    text: str
    shown: list[tuple[str, str]]  # (file, why)


class Note(TypedDict):
    text: str
    cls: str  # "note" or "fail"


class View(TypedDict):
    title: str
    notes: list[Note]
    header: str
    seed_note: str | None
    legend: str
    methods: list[str]
    baseline: str | None
    main: MainTable | None
    verdicts: Verdicts
    calibration: list[str]  # calibration_verdicts: Verdict strings carrying their counts
    calibrators: list  # calibrator_means.CalibratorMeans: proper scores by calibrator (where several were fitted)
    conformal: list  # calibrator_means.ConformalMeans: conformal coverage and set size by calibrator
    cost: CostTable | None
    sections: list[SectionView]
    sweeps: list[SweepView]
    sweep_legend: str
    diffs: Differences | None
    checks: list
    bad: list
    skipped: Skipped | None
    summary: list[tuple[str, str]]
    baseline_choice: str | None
    provenance: str  # JSON
    sources: list[str]
