"""``evaluate --launcher local|slurm``: one job per checkpoint x evaluator; a run killed with SIGKILL mid-grid and run
again gives the records of an uninterrupted run, bit for bit, having redone only what was not written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmix_eval.cli import main
from mmix_eval.config import Config
from mmix_eval.training import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def four_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    for seed in range(4):
        cfg = Config()
        cfg.model.kwargs = {"width": 16}
        cfg.train.epochs, cfg.train.device, cfg.train.seed = 1, "cpu", seed
        cfg.data.val_size = 200
        train(cfg, root / f"r{seed}", progress=False)
    return [str(root / f"r{s}" / "model.safetensors") for s in range(4)]


def _argv(ckpts, out: Path, *extra) -> list[str]:
    # small batches: each condition takes tens of batches, so the kill lands mid-grid
    return ["evaluate", "--ckpt", *ckpts, "--out", str(out), "--evaluators", "deformations,fgsm", "--batch-size", "10",
            "--no-progress", *extra]  # fmt: skip


def _results(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.glob("*/*"))
        if p.suffix in (".jsonl", ".npz") and p.is_file()
    }


def _journaled(out: Path) -> int:
    """Conditions journaled for evaluations not written yet (a run killed between writing a result and removing its
    journal leaves one that is not needed: it is discarded, not read)."""
    return sum(
        1
        for p in out.glob("*/*.partial/*.safetensors")
        if not p.name.startswith("clean-") and not (p.parent.parent / f"{p.parent.stem}.meta.json").exists()
    )


def _kill_mid_grid(ckpts, out: Path) -> tuple[set[str], int]:
    """Start the local launcher in a new session, SIGKILL it and its workers once an evaluation is written and two
    conditions of others are journaled: (the evaluations written, the conditions journaled) at the kill."""
    env = {**os.environ, "MMIX_EVAL_JOBS": ""}
    cmd = [sys.executable, "-m", "mmix_eval", *_argv(ckpts, out, "--launcher", "local", "--jobs", "2")]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("*/*.meta.json")) and _journaled(out) >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the evaluation ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers, as a preemption would
    proc.wait()
    proc.stderr.close()
    return {p.parent.name + "/" + p.name for p in out.glob("*/*.meta.json")}, _journaled(out)


def test_local_launcher_killed_mid_grid_resumes_bitwise(four_ckpts, tmp_path, capsys):
    whole = tmp_path / "whole"
    assert main(_argv(four_ckpts, whole, "--launcher", "local", "--jobs", "2")) == 0
    reference = _results(whole)
    assert len(reference) == 4 * 2 * 2  # 4 checkpoints x 2 evaluators x (records, outcomes)
    # The same results inline, in one process (the clean pass shared between evaluators): the same bytes.
    assert main(_argv(four_ckpts, tmp_path / "inline")) == 0
    assert _results(tmp_path / "inline") == reference

    # Killed mid-grid: an evaluation written, another one's conditions journaled. The kill's moment is the machine's:
    # an evaluation that ends between the look and the kill takes its journal with it, so a kill that finds no
    # journaled condition left is tried again (at most 3 times) in a fresh folder.
    for attempt in range(3):
        out = tmp_path / f"killed{attempt}"
        done_before, journaled = _kill_mid_grid(four_ckpts, out)
        if journaled >= 1:
            break
    assert 1 <= len(done_before) < 8 and journaled >= 1

    capsys.readouterr()
    assert main(_argv(four_ckpts, out, "--launcher", "local", "--jobs", "2")) == 0
    said = capsys.readouterr().out
    assert f"{len(done_before)} of 8 evaluation(s) already done, kept" in said
    assert _results(out) == reference
    metas = {p.parent.name + "/" + p.name: json.loads(p.read_text()) for p in out.glob("*/*.meta.json")}
    resumed = sum(m["conditions_resumed"] for k, m in metas.items() if k not in done_before)
    assert resumed == journaled  # every journaled condition read back, none taken again
    assert not list(out.glob("*/*.partial"))
    # A third run finds everything done and starts no job.
    assert main(_argv(four_ckpts, out, "--launcher", "local", "--jobs", "2")) == 0
    assert "8 of 8 evaluation(s) already done, kept" in capsys.readouterr().out


def test_slurm_launcher_through_submitit_local_executor(four_ckpts, tmp_path, capsys):
    pytest.importorskip("submitit")
    out = tmp_path / "slurm"
    argv = _argv(four_ckpts[:1], out, "--launcher", "slurm", "--submitit-cluster", "local", "--cpus-per-run", "1")
    assert main(argv) == 0
    jobs = json.loads(json.dumps(__import__("yaml").safe_load((out / "jobs.yaml").read_text())))
    assert jobs["executor"] == "local" and sorted(jobs["jobs"]) == ["r0/deformations", "r0/fgsm"]
    assert main(_argv(four_ckpts[:1], tmp_path / "inline")) == 0
    assert _results(out) == _results(tmp_path / "inline")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--jobs", "2"], "--jobs: a flag of --launcher local, expected with it, got --launcher inline"),
        (["--launcher", "local", "--partition", "gpu"], "--partition: a flag of --launcher slurm"),
        (["--launcher", "local", "--jobs", "0"], "launcher 'jobs': expected an integer >= 1, got 0"),
        (["--no-wait"], "--no-wait: a flag of --launcher slurm"),
    ],
)
def test_launcher_flags_are_checked_before_anything_runs(four_ckpts, tmp_path, capsys, flags, message):
    assert main(_argv(four_ckpts[:1], tmp_path / "o", *flags)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
