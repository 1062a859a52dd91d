"""Shared fixtures for the reliability and security suite: one small trained checkpoint, a run guard."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint: smallnet width 4 on the embedded digits, 1 epoch, with a validation split."""
    from mmix_eval.config import Config
    from mmix_eval.training import train

    cfg = Config()
    cfg.data.name, cfg.data.train_limit, cfg.data.val_size = "digits", 300, 60
    cfg.model.kwargs = {"width": 4}
    cfg.method.name = "manifold_mixup"
    cfg.train.epochs, cfg.train.batch_size, cfg.train.device, cfg.train.schedule = 1, 50, "cpu", "cosine"
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(cfg, out, progress=False)
    return out / "model.safetensors"


@pytest.fixture
def no_hang():
    """Fail (instead of hanging CI) if the guarded code runs longer than 30 s."""

    def alarm(*_):
        raise TimeoutError("took longer than 30 s: a hang")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
