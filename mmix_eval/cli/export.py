"""export: evaluation records as tracker runs (``mmix_eval.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmix_eval.cli.parser import examples


def add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="send records (and training curves) to W&B, MLflow, TensorBoard or trackio",
        epilog=examples("export"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One tracker run per evaluated checkpoint: its method settings and provenance as params, every "
        "record as a metric named EVALUATOR/CONDITION/METRIC[/CALIBRATOR], the training curve (log.jsonl) as steps, "
        "the record files (and --report) as artifacts. The run id comes from the checkpoint's hash: exporting "
        "again adds nothing (an unchanged run is skipped; a changed one replaces its earlier export).",
    )
    p.add_argument("results", help="a results folder, a bench folder, or one run's results folder")
    p.add_argument("--to", required=True, choices=["wandb", "mlflow", "tensorboard", "trackio"], help="the tracker")
    p.add_argument("--project", help="W&B project, MLflow experiment, TensorBoard subfolder, trackio project")
    p.add_argument(
        "--dest",
        help="mlflow: tracking URI (e.g. sqlite:///mlflow.db); tensorboard: log folder (default ./tensorboard); "
        "wandb: the folder wandb writes its local files in; trackio: its data folder (TRACKIO_DIR)",
    )
    p.add_argument("--report", metavar="DIR", help="a report folder to attach (default: a bench folder's own report)")


def cmd_export(args) -> int:
    from mmix_eval.export import export

    results = Path(args.results)
    report = Path(args.report) if args.report else None
    if report is None and (results / "report.html").is_file() and (results / "results").is_dir():  # a bench
        report = results
    export(results, args.to, args.project, args.dest, report)
    return 0
