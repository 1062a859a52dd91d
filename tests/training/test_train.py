from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_data, raises_as_shown, state_equal, tiny_config

from mmix_eval.checkpoint import load_checkpoint
from mmix_eval.errors import UserError
from mmix_eval.inference import accuracy_nll, predict_logits
from mmix_eval.methods.base import Method, StepOutput
from mmix_eval.training import TrainingError, train

TIMING = ("images_per_s", "epoch_s")


def _log(out):
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (Path(out) / "log.jsonl").read_text().splitlines()
    ]


@pytest.mark.parametrize("method", ["vanilla", "input_mixup", "manifold_mixup"])
def test_kill_and_resume_gives_bitwise_the_same_weights(tmp_path, method):
    data = make_data(val=16)
    cfg = tiny_config(method, epochs=3)
    train(cfg, tmp_path / "full", progress=False, data=data)
    assert train(cfg, tmp_path / "cut", progress=False, data=data, stop_after_epoch=1) is None
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    train(cfg, tmp_path / "cut", resume=True, progress=False, data=data)
    a, _ = load_checkpoint(tmp_path / "full" / "model.safetensors")
    b, _ = load_checkpoint(tmp_path / "cut" / "model.safetensors")
    assert state_equal(a.state_dict(), b.state_dict())
    assert _log(tmp_path / "full") == _log(tmp_path / "cut")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A real SIGKILL of the CLI process (wherever it lands, checkpoint writes included), then --resume."""
    # 2 threads, explicitly: an explicit count is never changed, so the killed, the resumed and the clean run split
    # their float reductions alike (the default, 1, would do as well)
    args = [
        "--config",
        "configs/quick.yaml",
        "--epochs",
        "6",
        "--set",
        "train.device=cpu",
        "--no-progress",
        "--threads",
        "2",
    ]
    root = ROOT
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmix_eval", "train", *args, "--out", str(tmp_path / "killed")],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = tmp_path / "killed" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists(), "the run finished before it could be killed"
    for out, extra in (("killed", ["--resume"]), ("clean", [])):
        r = subprocess.run(
            [sys.executable, "-m", "mmix_eval", "train", *args, "--out", str(tmp_path / out), *extra],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    a, _ = load_checkpoint(tmp_path / "killed" / "model.safetensors")
    b, _ = load_checkpoint(tmp_path / "clean" / "model.safetensors")
    assert state_equal(a.state_dict(), b.state_dict())


class NanAfter(Method):
    """A method whose loss turns NaN at its 9th call: epoch 2, step 2 of a 7-step-per-epoch run."""

    name = "nan_after"

    def __init__(self, loss="bce_softmax"):
        super().__init__(loss)
        self.calls = 0

    def step(self, model, x, y, rng):
        self.calls += 1
        logits = model(x)
        loss = logits.sum() * 0 + (float("nan") if self.calls >= 9 else 1.0)
        return StepOutput(loss, logits)


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_last_good_state(tmp_path):
    cfg = tiny_config("test_train:NanAfter", epochs=4)  # 120 images / 16 = 7 steps per epoch
    with pytest.raises(
        TrainingError, match=r"non-finite loss at epoch 2, step 2; the last good state \(epoch 1\) stays"
    ):
        train(cfg, tmp_path / "run", progress=False, data=make_data())
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
    )
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_run_folder_rules(tmp_path):
    data, cfg = make_data(), tiny_config(epochs=1)
    train(cfg, tmp_path / "run", progress=False, data=data)
    with raises_as_shown(UserError, match="holds a run .*pass --resume to continue it or --overwrite to replace it"):
        train(cfg, tmp_path / "run", progress=False, data=data)
    other = tiny_config(epochs=1, lr=0.05)
    with raises_as_shown(
        UserError, match=r"--resume: expected the configuration of the run .*train.lr: 0.1 in the run, 0.05 given"
    ):
        train(other, tmp_path / "run", resume=True, progress=False, data=data)
    meta = train(other, tmp_path / "run", overwrite=True, progress=False, data=data)
    assert meta["train"]["optimizer"]["lr"] == 0.05
    with raises_as_shown(UserError, match="--resume: expected a run in .* found none"):
        train(cfg, tmp_path / "empty", resume=True, progress=False, data=data)


def test_resume_falls_back_to_previous_state_when_latest_is_damaged(tmp_path):
    data, cfg = make_data(), tiny_config(epochs=3)
    train(cfg, tmp_path / "full", progress=False, data=data)
    train(cfg, tmp_path / "cut", progress=False, data=data, stop_after_epoch=2)
    (tmp_path / "cut" / "state.pt").write_bytes(b"garbage")
    with (
        pytest.warns(UserWarning, match="resuming from .*state.prev.pt"),
        pytest.warns(UserWarning, match="state.pt: unreadable state file"),
    ):
        train(cfg, tmp_path / "cut", resume=True, progress=False, data=data)
    a, _ = load_checkpoint(tmp_path / "full" / "model.safetensors")
    b, _ = load_checkpoint(tmp_path / "cut" / "model.safetensors")
    assert state_equal(a.state_dict(), b.state_dict())


def test_checkpoint_alone_rebuilds_the_model_and_records_the_run(tmp_path):
    data = make_data(val=16)
    cfg = tiny_config("manifold_mixup", epochs=2)
    meta = train(cfg, tmp_path / "run", progress=False, data=data)
    model, loaded = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert loaded == meta
    recomputed = accuracy_nll(predict_logits(model, data.test.x), data.test.y)
    assert recomputed["acc"] == meta["metrics"]["test_acc"]
    assert meta["model"]["kwargs"] == {
        "num_classes": 4,
        "in_channels": 3,
        "width": 4,
        "mean": meta["data"]["normalization"]["mean"],
        "std": meta["data"]["normalization"]["std"],
    }
    assert meta["method"] == {
        "name": "manifold_mixup",
        "settings": {"alpha": 2.0, "eligible": [0, 1, 2], "loss": "bce_softmax"},
    }
    assert meta["data"]["classes"] == ["c0", "c1", "c2", "c3"] and meta["data"]["image_size"] == [8, 8]
    assert meta["train"]["optimizer"] == {
        "name": "SGD",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "nesterov": False,
    }
    assert meta["train"]["schedule"]["name"] == "cosine" and meta["train"]["seed"] == 0 and meta["train"]["epochs"] == 2
    assert meta["train"]["augment"] == {"crop_padding": 1, "flip": True}
    assert set(meta["metrics"]) == {"train_loss", "test_acc", "test_nll", "val_acc", "val_nll"}
    assert meta["wall_time_s"] > 0
    assert meta["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "git_commit" in meta and "created" in meta
    assert len(_log(tmp_path / "run")) == 2 and "val_acc" in _log(tmp_path / "run")[0]


def test_seed_changes_weights_and_same_seed_repeats(tmp_path):
    data = make_data()
    a = train(tiny_config(epochs=1), tmp_path / "a", progress=False, data=data)
    b = train(tiny_config(epochs=1), tmp_path / "b", progress=False, data=data)
    c = train(tiny_config(epochs=1, seed=1), tmp_path / "c", progress=False, data=data)
    assert a["data_sha256"] == b["data_sha256"] != c["data_sha256"]


def test_training_learns_the_synthetic_task(tmp_path):
    data = make_data(n_train=400, n_test=200)
    meta = train(tiny_config("vanilla", epochs=8), tmp_path / "run", progress=False, data=data)
    assert meta["metrics"]["test_acc"] >= 90.0  # 4 brightness classes; chance is 25 %


def test_wall_time_covers_the_whole_run_and_says_how_it_splits(tmp_path):
    t0 = time.perf_counter()
    meta = train(tiny_config("vanilla", epochs=2), tmp_path / "run", progress=False, data=make_data(val=20))
    outer = time.perf_counter() - t0
    split = meta["time_split_s"]
    assert set(split) == {"training", "setup", "validation", "saves", "test_pass"}
    assert meta["wall_time_s"] == pytest.approx(sum(split.values()), abs=0.01)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert split["training"] == pytest.approx(sum(r["epoch_s"] for r in log), abs=0.01)
    # everything train() did but the final checkpoint write: at least 80 % of the wall time seen from outside
    assert 0.8 * outer <= meta["wall_time_s"] <= outer
