"""Faults in training: SIGKILL at seeded random steps and half-way through writing the state file or the
checkpoint, then `--resume`, gives bitwise the final weights of an uninterrupted run; an injected NaN stops
cleanly with the last good state kept. Each fault runs the real CLI in a subprocess that kills itself."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # every test here starts processes and kills them mid-run
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STEPS_PER_EPOCH, EPOCHS = 6, 3  # 300 images, batch 50
TRAIN = [
    "train",
    "--data",
    "digits",
    "--train-limit",
    "300",
    "--batch-size",
    "50",
    "--epochs",
    str(EPOCHS),
    "--method",
    "manifold_mixup",
    "--set",
    "model.kwargs={width: 4}",
    "--device",
    "cpu",
    "--no-progress",
]


def run(args, *, driver=None, cwd):
    cmd = (
        [sys.executable, str(HERE / "fault_driver.py"), *driver, "--", *args]
        if driver
        else [sys.executable, "-m", "mmix_eval", *args]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ref")
    r = run(TRAIN + ["--out", "ref"], cwd=cwd)
    assert r.returncode == 0, r.stderr
    return load_file(cwd / "ref" / "model.safetensors")


def _faults():
    rng = random.Random(20261122)  # seeded "random points": reproducible in CI
    steps = sorted(rng.sample(range(1, STEPS_PER_EPOCH * EPOCHS + 1), 3))
    faults = [("kill-at-step", str(k)) for k in steps]
    faults += [
        ("kill-in-write", "state.pt", str(rng.randint(1, EPOCHS))),  # the state file being replaced
        ("kill-in-write", "model.safetensors", "1"),
    ]  # the final checkpoint
    return faults


@pytest.mark.parametrize("fault", _faults(), ids=lambda f: "-".join(f))
def test_sigkill_then_resume_gives_the_uninterrupted_weights(fault, reference, tmp_path):
    killed = run(TRAIN + ["--out", "run"], driver=list(fault), cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()
    resumed = run(TRAIN + ["--out", "run", "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert weights.keys() == reference.keys()
    assert all((weights[k] == reference[k]).all() for k in weights), "resumed weights differ"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, EPOCHS + 1))
    assert not list((tmp_path / "run").glob(".*.tmp"))  # half-written files cleaned up
    if fault[:2] == ("kill-in-write", "state.pt"):
        assert "the latest state was missing or damaged" in resumed.stderr


def test_corrupt_latest_state_falls_back_with_a_warning(reference, tmp_path):
    killed = run(TRAIN + ["--out", "run"], driver=["kill-at-step", str(2 * STEPS_PER_EPOCH + 3)], cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    state = tmp_path / "run" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # damaged after it was written
    resumed = run(TRAIN + ["--out", "run", "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "unreadable state file" in resumed.stderr and "trying the previous one" in resumed.stderr
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert all((weights[k] == reference[k]).all() for k in weights)


def test_injected_nan_stops_cleanly_and_keeps_the_last_good_state(tmp_path):
    r = run(TRAIN + ["--out", "run"], driver=["nan-at-step", str(STEPS_PER_EPOCH + 2)], cwd=tmp_path)
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("mmix-eval: error:")]
    assert "Traceback" not in r.stderr
    assert errors == [
        f"mmix-eval: error: training stopped: non-finite loss at epoch 2, step 2; the last good state "
        f"(epoch 1) stays in {Path('run') / 'state.pt'}"
    ]
    assert not (tmp_path / "run" / "model.safetensors").exists()
    import torch

    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
    )
