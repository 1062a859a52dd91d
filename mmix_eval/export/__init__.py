"""``mmix-eval export RESULTS --to wandb|mlflow|tensorboard|trackio``: the records as tracker runs, after the fact (no
tracker inside the training loop). ``collect`` reads what to send; ``trackers`` writes it, idempotently."""

from __future__ import annotations

import shutil
from pathlib import Path

from mmix_eval.errors import ParamError, UserError
from mmix_eval.export.collect import RunExport, collect, metric_name, run_folders  # noqa: F401  (re-exported)

TRACKER_NAMES = ("wandb", "mlflow", "tensorboard", "trackio")
REPORT_FILES = ("report.html", "report.md", "summary.md", "claims.md", "table.csv", "manifest.json")


def check_target(spec, where: str) -> dict:
    """An export target: a tracker's name, or a mapping {to, project, dest}; checked before anything runs."""
    spec = {"to": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, dict) or set(spec) - {"to", "project", "dest"}:
        raise UserError(f"{where}: expected a tracker name or a mapping of to, project, dest, got {spec!r:.80}")
    if spec.get("to") not in TRACKER_NAMES:
        raise UserError(f"{where}: 'to' expected one of {', '.join(TRACKER_NAMES)}, got {spec.get('to')!r:.80}")
    for key in ("project", "dest"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise UserError(f"{where}: '{key}' expected a string, got {spec[key]!r:.80}")
    return spec


def export(
    results: Path, to: str, project: str | None = None, dest: str | None = None, report: Path | None = None, echo=print
) -> list[str]:
    """Every run under ``results`` to the tracker ``to``; one line per run (what was written, or why skipped)."""
    from mmix_eval.export.trackers import TRACKERS

    if to not in TRACKERS:
        raise ParamError("to", f"expected one of {', '.join(TRACKERS)}, got '{to}'")
    runs = [collect(f) for f in run_folders(Path(results))]  # everything read (and checked) before a tracker starts
    staged = _report_folder(report) if report is not None else None
    lines = []
    try:
        for run in runs:
            lines.append(TRACKERS[to](run, project or "mmix-eval", dest, staged))
            echo(lines[-1])
    finally:  # the report's staged copy: the trackers copied what they keep
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    return lines


def export_target(target: dict, results: Path, project: str, report: Path, echo=print) -> list[str]:
    """A bench's ``report.export`` item ({to, project, dest}) once its report is built."""
    return export(results, target["to"], target.get("project") or project, target.get("dest"), report, echo)


def _report_folder(report: Path) -> Path:
    """The report's files (and its plots/) as one folder to attach: a bench folder holds runs and results too,
    which are not the report."""
    import tempfile

    report = Path(report)
    if not (report / "report.html").is_file():
        raise ParamError("report", f"expected a report folder (report.html), got '{report}' without one")

    staged = Path(tempfile.mkdtemp(prefix="mmix-export-report-"))
    for name in REPORT_FILES:
        if (report / name).is_file():
            shutil.copy(report / name, staged / name)
    if (report / "plots").is_dir():
        shutil.copytree(report / "plots", staged / "plots")
    return staged
