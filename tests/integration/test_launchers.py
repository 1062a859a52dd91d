"""bench launchers: local subprocesses N at a time, and Slurm through submitit (its local executor here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from conftest import HELPERS, ROOT

from mmix_eval.cli import main

BENCH = {
    "name": "tiny",
    "data": {"name": "digits", "train_limit": 300, "test_limit": 100, "val_size": 50},
    "model": {"name": "smallnet", "kwargs": {"width": 4}},
    "train": {"epochs": 1, "batch_size": 50, "schedule": "cosine", "device": "cpu"},
    "methods": ["vanilla", {"name": "manifold_mixup", "alpha": 2.0}],
    "seeds": [0],
    "evaluate": {"eps": [2], "grid": "table4"},
}


@pytest.fixture
def bench_file(tmp_path, monkeypatch):
    # subprocesses (local launcher, submitit jobs) import the test helpers through PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", f"{HELPERS}{os.pathsep}{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.syspath_prepend(str(HELPERS))

    def write(**changes):
        path = tmp_path / "bench.yaml"
        path.write_text(yaml.safe_dump({**BENCH, **changes}))
        return path

    return write


def methods_in(report: Path) -> list[str]:
    header = next(line for line in report.read_text().splitlines() if line.startswith("| condition |"))
    return [c.strip() for c in header.split("|")[2:-1]]


def test_local_launcher_runs_jobs_in_parallel_and_skips_finished(bench_file, tmp_path, capsys):
    cfg, out = bench_file(), tmp_path / "out"
    assert main(["bench", str(cfg), "--out", str(out), "--launcher", "local", "--jobs", "2", "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["manifold_mixup-s0.log", "vanilla-s0.log"]
    assert methods_in(out / "report.md") == ["vanilla", "manifold_mixup"]
    ckpt = out / "runs" / "vanilla-s0" / "model.safetensors"
    stamp = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["bench", str(cfg), "--out", str(out), "--launcher", "local", "--jobs", "2", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("done already") == 2
    assert ckpt.stat().st_mtime_ns == stamp


def test_local_launcher_reports_a_failed_run_and_builds_the_rest(bench_file, tmp_path, capsys):
    cfg = bench_file(methods=["vanilla", "flaky:FailsInTraining"])
    out = tmp_path / "out"
    assert main(["bench", str(cfg), "--out", str(out), "--launcher", "local", "--jobs", "2", "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "run flaky_FailsInTraining-s0 failed: RuntimeError: injected failure in training" in text
    assert "report built without 1 of 2 runs" in text
    assert methods_in(out / "report.md") == ["vanilla"]
    assert "Incomplete bench: 1 of 2 runs" in (out / "report.html").read_text()


def test_slurm_launcher_through_submitit_local_executor(bench_file, tmp_path, capsys, monkeypatch):
    submitit = pytest.importorskip("submitit")

    def never(*a, **k):
        raise AssertionError("the bench unpickled a submitit result file")

    monkeypatch.setattr(submitit.core.core.Job, "results", never)  # results come from the records the jobs wrote
    monkeypatch.setattr(submitit.core.core.Job, "result", never)
    cfg = bench_file(launcher={"name": "slurm", "cpus_per_run": 1, "timeout_min": 10})
    out = tmp_path / "out"
    assert main(["bench", str(cfg), "--out", str(out), "--submitit-cluster", "local", "--no-progress"]) == 0
    jobs = yaml.safe_load((out / "jobs.yaml").read_text())
    assert jobs["executor"] == "local" and sorted(jobs["jobs"]) == ["manifold_mixup-s0", "vanilla-s0"]
    assert all((out / "slurm" / f"{j}_0_log.out").exists() for j in jobs["jobs"].values())
    assert methods_in(out / "report.md") == ["vanilla", "manifold_mixup"]
    capsys.readouterr()
    # idempotent: a second submission finds nothing to do and submits no job
    assert main(["bench", str(cfg), "--out", str(out), "--submitit-cluster", "local", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("done already") == 2


def test_slurm_failed_job_is_reported(bench_file, tmp_path, capsys):
    pytest.importorskip("submitit")
    cfg = bench_file(methods=["vanilla", "flaky:FailsInTraining"])
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            str(cfg),
            "--out",
            str(out),
            "--launcher",
            "slurm",
            "--submitit-cluster",
            "local",
            "--cpus-per-run",
            "1",
            "--no-progress",
        ]
    )
    assert code == 1
    text = capsys.readouterr().out
    assert "run flaky_FailsInTraining-s0 failed: job" in text and "injected failure in training" in text
    assert methods_in(out / "report.md") == ["vanilla"]


def test_slurm_jobs_are_checkpointable_and_the_array_is_throttled(bench_file, tmp_path, capsys, monkeypatch):
    """A preempted or timed-out job is requeued by submitit calling the job's checkpoint(): the same run again,
    which resumes from its state file. --max-parallel throttles the array (sbatch --array=0-N%K)."""
    submitit = pytest.importorskip("submitit")
    from mmix_eval.bench import RunJob

    again = RunJob().checkpoint("bench.yaml", "out", "vanilla-s0", None)
    assert isinstance(again, submitit.helpers.DelayedSubmission) and isinstance(again.function, RunJob)
    assert again.args == ("bench.yaml", "out", "vanilla-s0", None)
    seen = {}

    class FakeJob:
        job_id = "42"

    class FakeExecutor:  # stands in for a Slurm cluster: what the bench asks of it is recorded
        cluster = "slurm"

        def __init__(self, folder, cluster=None):
            pass

        def update_parameters(self, **params):
            seen.update(params)

        def batch(self):
            import contextlib

            return contextlib.nullcontext()

        def submit(self, fn, *args):
            seen.setdefault("submitted", []).append((type(fn).__name__, args[2]))
            return FakeJob()

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    cfg = bench_file(launcher={"name": "slurm", "max_parallel": 1})
    assert main(["bench", str(cfg), "--out", str(tmp_path / "out"), "--no-wait", "--no-progress"]) == 0
    assert seen["slurm_array_parallelism"] == 1
    assert seen["submitted"] == [("RunJob", "vanilla-s0"), ("RunJob", "manifold_mixup-s0")]
    assert main(["bench", str(cfg), "--out", str(tmp_path / "out"), "--no-wait", "--max-parallel", "0"]) == 2
    assert "launcher 'max_parallel': expected an integer >= 1, got 0" in capsys.readouterr().err


def test_report_on_demand_says_what_is_missing(bench_file, tmp_path, capsys):
    cfg, out = bench_file(), tmp_path / "out"
    assert main(["bench", str(cfg), "--out", str(out), "--report-only"]) == 2
    assert "expected at least one finished run" in capsys.readouterr().err
    assert main(["bench", str(cfg), "--out", str(out), "--only", "vanilla-s0"]) == 0
    assert main(["bench", str(cfg), "--out", str(out), "--report-only"]) == 0
    assert (
        "report built without 1 of 2 runs (not finished or not evaluated): manifold_mixup-s0" in capsys.readouterr().out
    )
    assert "Incomplete bench: 1 of 2 runs are not in this report" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--launcher", "local", "--jobs", "0"], "launcher 'jobs': expected an integer >= 1, got 0"),
        (["--only", "nope"], "--only: expected a run of bench 'tiny' (vanilla-s0, manifold_mixup-s0), got 'nope'"),
    ],
)
def test_launcher_bad_input(bench_file, tmp_path, capsys, flags, message):
    assert main(["bench", str(bench_file()), "--out", str(tmp_path / "o"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_launcher_section_is_strict(bench_file, tmp_path, capsys):
    cfg = bench_file(launcher={"name": "local", "gpus": 2})
    assert main(["bench", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "launcher: unknown key 'gpus'" in capsys.readouterr().err


def test_device_override_is_part_of_the_finished_check(bench_file, tmp_path, capsys):
    """--device changes each run's configuration; a second bench with the same flag skips every run."""
    cfg = bench_file(train={**BENCH["train"], "device": "auto"})
    out = tmp_path / "out"
    assert main(["bench", str(cfg), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["bench", str(cfg), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("done already") == 2


def test_slurm_job_with_two_tasks_trains_with_ddp(bench_file, tmp_path, capsys):
    """--gpus-per-run 2 gives each job 2 tasks; the job exports torchrun's variables from submitit's
    environment and trains with DDP across them (gloo here: the runs say device cpu)."""
    pytest.importorskip("submitit")
    from mmix_eval.checkpoint import read_metadata

    cfg = bench_file(methods=["vanilla"])
    out = tmp_path / "out"
    assert (
        main(
            [
                "bench",
                str(cfg),
                "--out",
                str(out),
                "--launcher",
                "slurm",
                "--submitit-cluster",
                "local",
                "--gpus-per-run",
                "2",
                "--cpus-per-run",
                "1",
                "--no-progress",
            ]
        )
        == 0
    ), capsys.readouterr()
    meta = read_metadata(out / "runs" / "vanilla-s0" / "model.safetensors")
    assert meta["train"]["distributed"]["world_size"] == 2
    assert methods_in(out / "report.md") == ["vanilla"]


def test_slurm_without_submitit_is_a_clear_error_before_any_write(bench_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    assert main(["bench", str(bench_file()), "--out", str(tmp_path / "o"), "--launcher", "slurm"]) == 2
    assert (
        "expected the submitit package, which is not installed; pip install 'mmix-eval[slurm]'"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()
