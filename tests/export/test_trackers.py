"""Each tracker's export read back offline, through the tracker's own files or API: every value equals the record it
came from, the training curve is there, and a second export adds nothing. Each export runs as the command, in its
own process (trackers keep process-wide state: a data folder fixed at import, a background service)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmix_eval.cli import main
from mmix_eval.config import Config
from mmix_eval.evaluate.records import read_records
from mmix_eval.export import metric_name
from mmix_eval.training import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A bench's layout: runs/NAME (log.jsonl, model.json) and results/NAME (records), two checkpoints."""
    root = tmp_path_factory.mktemp("export") / "bench"
    for seed in (0, 1):
        cfg = Config()
        cfg.model.kwargs = {"width": 8}
        cfg.train.epochs, cfg.train.device, cfg.train.seed = 2, "cpu", seed
        cfg.data.val_size = 200
        train(cfg, root / "runs" / f"mm-s{seed}", progress=False)
    ckpts = [str(root / "runs" / f"mm-s{s}" / "model.safetensors") for s in (0, 1)]
    argv = ["evaluate", "--ckpt", *ckpts, "--out", str(root / "results"), "--evaluators", "fgsm,calibration"]
    assert main([*argv, "--eps", "8", "--limit", "100", "--no-progress"]) == 0
    return root


def expected(bench: Path) -> dict[str, dict[str, float]]:
    """run -> {metric name: value} straight from the record files."""
    out = {}
    for folder in sorted((bench / "results").iterdir()):
        out[folder.name] = {
            metric_name(r, f.stem): r["value"]
            for f in sorted(folder.glob("*.jsonl"))
            for r in read_records(f)
            if math.isfinite(r["value"])
        }
    return out


def curve(bench: Path, run: str) -> dict[int, float]:
    lines = (bench / "runs" / run / "log.jsonl").read_text().splitlines()
    return {row["epoch"]: row["train_loss"] for row in map(json.loads, lines)}


def export(bench: Path, to: str, *extra, env=None) -> str:
    cmd = [sys.executable, "-m", "mmix_eval", "export", str(bench), "--to", to, "--project", "mmx", *extra]
    done = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_tensorboard_export_reads_back_through_event_accumulator(bench, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dest = tmp_path / "tb"
    export(bench, "tensorboard", "--dest", str(dest))
    second = export(bench, "tensorboard", "--dest", str(dest))
    assert second.count("unchanged since its export") == 2
    for run, metrics in expected(bench).items():
        (folder,) = (dest / "mmx").glob(f"{run}-*")
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # the second export wrote no second file
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        for name, value in metrics.items():
            (event,) = acc.Scalars(name)
            assert event.step == 0 and event.value == np.float32(value)  # TensorBoard holds float32
        assert {e.step: e.value for e in acc.Scalars("train/train_loss")} == {
            k: np.float32(v) for k, v in curve(bench, run).items()
        }
        assert (folder / "artifacts" / "records" / "fgsm.jsonl").read_bytes() == (
            bench / "results" / run / "fgsm.jsonl"
        ).read_bytes()
        assert json.loads((folder / "params.json").read_text())["method"] == "manifold_mixup"


def test_mlflow_export_reads_back_through_its_client(bench, tmp_path):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    export(bench, "mlflow", "--dest", uri)
    assert export(bench, "mlflow", "--dest", uri).count("unchanged since its export") == 2
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mmx")
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    assert sorted(r.info.run_name for r in runs) == ["mm-s0", "mm-s1"]  # no duplicate, none deleted
    for r in runs:
        run = client.get_run(r.info.run_id)
        records = expected(bench)[r.info.run_name]
        assert {k: v for k, v in run.data.metrics.items() if not k.startswith("train/")} == records
        assert {m.step: m.value for m in client.get_metric_history(r.info.run_id, "train/train_loss")} == curve(
            bench, r.info.run_name
        )
        assert run.data.params["method"] == "manifold_mixup" and run.data.params["train.epochs"] == "2"
        files = {f.path for f in client.list_artifacts(r.info.run_id, "records")}
        assert "records/fgsm.jsonl" in files and "records/calibration.meta.json" in files
    # Changed records (a re-evaluation with other results) replace the earlier export: still one run per checkpoint.
    changed = tmp_path / "changed"
    import shutil

    shutil.copytree(bench, changed)
    f = changed / "results" / "mm-s0" / "fgsm.jsonl"
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    rows[0]["value"] = 1.25
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "replacing 1 earlier export" in export(changed, "mlflow", "--dest", uri)
    active = client.search_runs([exp.experiment_id], "attributes.run_name = 'mm-s0'")
    assert len(active) == 1 and active[0].data.metrics[metric_name(rows[0], "fgsm")] == 1.25


def test_wandb_offline_export_reads_back_from_its_run_file(bench, tmp_path):
    from helpers.wandb_log import read_run

    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    export(bench, "wandb", "--dest", str(tmp_path), env=env)
    assert export(bench, "wandb", "--dest", str(tmp_path), env=env).count("unchanged since its export") == 2
    files = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # one run per checkpoint: the second export started none
    for f in files:
        got = read_run(f)
        run = got["config"]["run"]
        for name, value in expected(bench)[run].items():
            assert got["summary"][name] == value
        assert {h["_step"]: h["train/train_loss"] for h in got["history"] if "train/train_loss" in h} == curve(
            bench, run
        )
        assert got["config"]["method"] == "manifold_mixup" and got["artifacts"] == [f"records-{f.stem[4:]}"]


def test_trackio_export_reads_back_through_its_storage(bench, tmp_path):
    env = {"TRACKIO_DIR": str(tmp_path / "trackio")}
    export(bench, "trackio", env=env)
    assert export(bench, "trackio", env=env).count("unchanged since its export") == 2
    read = (
        "import json; from trackio import SQLiteStorage as S\n"
        "print(json.dumps({r: {'logs': S.get_logs('mmx', r), 'config': S.get_run_config('mmx', r)} "
        "for r in S.get_runs('mmx')}, default=str))"
    )
    done = subprocess.run([sys.executable, "-c", read], env={**os.environ, **env}, capture_output=True, text=True)
    got = json.loads(done.stdout.splitlines()[-1])
    assert len(got) == 2 and sorted(run["config"]["run"] for run in got.values()) == ["mm-s0", "mm-s1"]
    for run in got.values():
        label = run["config"]["run"]
        last = run["logs"][-1]
        assert {k: v for k, v in last.items() if k not in ("step", "timestamp")} == expected(bench)[label]
        assert {row["step"]: row["train/train_loss"] for row in run["logs"][:-1]} == curve(bench, label)
        assert len(run["logs"]) == 3  # 2 epochs, then the records: the second export logged nothing


TINY_BENCH = {
    "name": "tiny",
    "data": {"name": "digits", "train_limit": 300, "test_limit": 100, "val_size": 50},
    "model": {"name": "smallnet", "kwargs": {"width": 4}},
    "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
    "methods": ["vanilla"],
    "seeds": [0],
    "evaluate": {"evaluators": ["calibration"]},
}


def test_a_bench_exports_its_records_and_report_after_the_report(tmp_path, capsys):
    """report.export: the bench's runs go to the tracker once the report is built, the report attached."""
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tmp_path / "bench.yaml"
    cfg.write_text(
        yaml.safe_dump({**TINY_BENCH, "report": {"export": [{"to": "tensorboard", "dest": str(tmp_path / "tb")}]}})
    )
    assert main(["bench", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "vanilla-s0: TensorBoard events in" in capsys.readouterr().out
    (folder,) = (tmp_path / "tb" / "tiny").glob("vanilla-s0-*")
    assert (folder / "artifacts" / "report" / "report.html").is_file()
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    rows = read_records(tmp_path / "out" / "results" / "vanilla-s0" / "calibration.jsonl")
    test_ece = next(r for r in rows if r["condition"] == "test" and r["metric"] == "ece" and r["bin"] is None)
    assert acc.Scalars(metric_name(test_ece, "calibration"))[0].value == np.float32(test_ece["value"])


@pytest.mark.parametrize(
    "export, message",
    [
        ("neptune", "'report.export[0]': 'to' expected one of wandb, mlflow, tensorboard, trackio, got 'neptune'"),
        (
            [{"to": "mlflow", "uri": "x"}],
            "'report.export[0]': expected a tracker name or a mapping of to, project, dest",
        ),
    ],
)
def test_bad_export_sections_fail_before_anything_trains(tmp_path, capsys, export, message):
    import yaml

    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_BENCH, "report": {"export": export}}))
    assert main(["bench", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out" / "runs").exists()
