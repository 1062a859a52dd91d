"""One writer per tracker, each behind its own extra (``pip install 'mmix-eval[wandb]'``), imported when used.

Each writes a ``RunExport`` (``export.collect``) as one tracker run: params / config, the records as metrics (W&B:
the run's summary; MLflow: metrics at step 0; TensorBoard: scalars at step 0, float32 as its event files hold them;
trackio: one log row after the training curve), the training curve as steps, and the record files (and report) as
artifacts. Each finds a run it exported before by the stable run id and skips it when its content is unchanged
(``content`` hash), so exporting twice adds nothing."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.export.collect import RunExport

MARKER = "mmix-eval-export.json"  # {"run_id", "content"}: what an export left, where a tracker keeps files


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            "to",
            f"expected the {module.split('.')[0]} package, which is not installed; pip install 'mmix-eval[{extra}]'",
            extra,
        ) from None


def _artifact_folder(run: RunExport, report: Path | None, dest: Path) -> Path:
    """The run's record files (and the report's files) copied under ``dest``: what each tracker stores."""
    (dest / "records").mkdir(parents=True, exist_ok=True)
    for f in run.artifacts:
        shutil.copy(f, dest / "records" / f.name)
    if report is not None:
        shutil.copytree(report, dest / "report", dirs_exist_ok=True)
    return dest


# ----------------------------------------------------------------------------------------------------- W&B


def to_wandb(run: RunExport, project: str, dest: str | None, report: Path | None) -> str:
    """A W&B run with id ``run_id`` (resumed, never duplicated): config = params, summary = the records, history =
    the training curve, an artifact of the records. WANDB_MODE=offline writes it under DEST/wandb/ for a later
    ``wandb sync``."""
    wandb = _need("wandb", "wandb")
    root = Path(dest or ".").resolve()
    for previous in root.glob(f"wandb/*run-*-{run.run_id}/files/{MARKER}"):
        if json.loads(previous.read_text()).get("content") == run.content:
            return f"{run.name}: unchanged since its export to W&B run {run.run_id}, skipped"
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        w = wandb.init(
            project=project,
            id=run.run_id,
            name=run.name,
            config={**run.params, "mmix_eval.content": run.content},
            resume="allow",
            dir=str(root),
            settings=wandb.Settings(silent=True, console="off"),
        )
        try:
            for step, values in run.curve:
                w.log(values, step=step)
            w.summary.update(run.metrics)
            art = wandb.Artifact(f"records-{run.run_id}", type="evaluation")
            folder = _artifact_folder(run, report, Path(w.dir).parent / "tmp" / "mmix-eval-artifacts")
            art.add_dir(str(folder))
            w.log_artifact(art)
            (Path(w.dir) / MARKER).write_text(json.dumps({"run_id": run.run_id, "content": run.content}))
        finally:
            w.finish()
    return f"{run.name}: W&B run {project}/{run.run_id} ({len(run.metrics)} metrics, {len(run.curve)} epochs)"


# -------------------------------------------------------------------------------------------------- MLflow


def to_mlflow(run: RunExport, project: str, dest: str | None, report: Path | None) -> str:
    """An MLflow run tagged ``mmix_eval.id``: params, the records as metrics at step 0, the curve as steps, the
    files as artifacts. DEST: the tracking URI (default: MLflow's own, MLFLOW_TRACKING_URI or ./mlruns)."""
    _need("mlflow", "mlflow")
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=dest) if dest else MlflowClient()
    exp = client.get_experiment_by_name(project)
    if exp is None:
        location = None
        if dest and dest.startswith("sqlite:///"):  # artifacts beside the database, not in the working folder
            location = (Path(dest[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
        exp_id = client.create_experiment(project, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    found = client.search_runs([exp_id], f"tags.`mmix_eval.id` = '{run.run_id}'")
    if any(r.data.tags.get("mmix_eval.content") == run.content for r in found):
        return f"{run.name}: unchanged since its export to MLflow run {found[0].info.run_id}, skipped"
    for old in found:  # the same checkpoint exported before with other records: replaced, never a second run
        client.delete_run(old.info.run_id)
    tags = {"mmix_eval.id": run.run_id, "mmix_eval.content": run.content}
    run_id = client.create_run(exp_id, run_name=run.name, tags=tags).info.run_id
    now = int(time.time() * 1000)
    params = [Param(k[:250], str(v)[:6000]) for k, v in run.params.items()]
    metrics = [Metric(k, v, now, 0) for k, v in run.metrics.items()]
    metrics += [Metric(k, v, now, step) for step, values in run.curve for k, v in values.items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params and 1,000 metrics a batch
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifacts(run_id, str(_artifact_folder(run, report, Path(tmp))))
    client.set_terminated(run_id)
    replaced = f", replacing {len(found)} earlier export(s)" if found else ""
    return f"{run.name}: MLflow run {run_id} in experiment '{project}' ({len(run.metrics)} metrics{replaced})"


# ---------------------------------------------------------------------------------------------- TensorBoard


def to_tensorboard(run: RunExport, project: str, dest: str | None, report: Path | None) -> str:
    """Event files in DEST/PROJECT/RUN-ID/ (default DEST: ./tensorboard): the records as scalars at step 0 (float32:
    what TensorBoard's events hold), the curve as steps, the params as a text summary and params.json; the files
    beside them in artifacts/ (TensorBoard has no artifact store). A changed run's folder is written anew."""
    _need("tensorboard", "tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(dest or "tensorboard") / project / f"{run.name}-{run.run_id[:8]}"
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("content") == run.content:
        return f"{run.name}: unchanged since its export to {folder}, skipped"
    shutil.rmtree(folder, ignore_errors=True)  # never two event files of one run (TensorBoard would show both)
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for name, value in run.metrics.items():
            writer.add_scalar(name, value, 0)
        for step, values in run.curve:
            for name, value in values.items():
                writer.add_scalar(name, value, step)
        table = "\n".join(["| param | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in run.params.items()]])
        writer.add_text("params", table, 0)
    finally:
        writer.close()
    (folder / "params.json").write_text(json.dumps(run.params, indent=1, sort_keys=True), encoding="utf-8")
    _artifact_folder(run, report, folder / "artifacts")
    marker.write_text(json.dumps({"run_id": run.run_id, "content": run.content}))
    return f"{run.name}: TensorBoard events in {folder} ({len(run.metrics)} scalars)"


# -------------------------------------------------------------------------------------------------- trackio


def to_trackio(run: RunExport, project: str, dest: str | None, report: Path | None) -> str:
    """A trackio run named RUN-ID in PROJECT (local; DEST sets TRACKIO_DIR before trackio loads): config = params,
    the curve as steps, then the records as one row at the step after the last epoch; the files as an artifact."""
    import os

    if dest:
        os.environ["TRACKIO_DIR"] = str(Path(dest).resolve())
    trackio = _need("trackio", "trackio")
    from trackio import SQLiteStorage

    name = f"{run.name}-{run.run_id[:8]}"
    if name in SQLiteStorage.get_runs(project):
        if (SQLiteStorage.get_run_config(project, name) or {}).get("mmix_eval.content") == run.content:
            return f"{run.name}: unchanged since its export to trackio run {project}/{name}, skipped"
        SQLiteStorage.delete_run(project, name)  # other records for the same checkpoint: replaced, not doubled
    with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as tmp:
        trackio.init(project=project, name=name, config={**run.params, "mmix_eval.content": run.content})
        try:
            for step, values in run.curve:
                trackio.log(values, step=step)
            last = run.curve[-1][0] + 1 if run.curve else 0
            trackio.log(dict(run.metrics), step=last)
            folder = _artifact_folder(run, report, Path(tmp))
            trackio.log_artifact(str(folder), name=f"records-{run.run_id}", type="evaluation")
        finally:
            trackio.finish()
    return f"{run.name}: trackio run {project}/{name} ({len(run.metrics)} metrics)"


TRACKERS = {"wandb": to_wandb, "mlflow": to_mlflow, "tensorboard": to_tensorboard, "trackio": to_trackio}
