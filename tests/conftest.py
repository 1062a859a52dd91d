from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from mmix_eval import memory
from mmix_eval.cli.flags import as_flags
from mmix_eval.config import Config
from mmix_eval.data.core import ImageData, Split
from mmix_eval.errors import UserError

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the repository
HELPERS = TESTS / "helpers"
FIXTURES = TESTS / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"  # ../shared/data beside the repository (real CIFAR-10 JPEGs)

memory.apply()  # as every torch command of the CLI does: freed tensor memory kept for the next batch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches and torchvision roots go to a temporary folder, never ~/.cache."""
    monkeypatch.setenv("MMIX_EVAL_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("MMIX_EVAL_DATA", str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def shared_decode_cache(tmp_path_factory, monkeypatch):
    """For the tests that read the real CIFAR-10 archive (../shared/data): one decoded-image cache for the whole
    test run, shared by pytest-xdist's workers (the cache locks its root), instead of one per test. Decoding the
    60,000 JPEGs takes about 17 s, and three slow tests each did it. Whichever runs first still decodes the real
    archive; the decode and its cache are tested on their own in tests/reliability/test_decode_cache.py."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-decode-cache"
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MMIX_EVAL_CACHE", str(root))
    return root


@pytest.fixture(autouse=True)
def _benches_run_inline(monkeypatch):
    """A test's bench runs its runs in the test's own process (MMIX_EVAL_JOBS=1): starting worker processes (torch
    imported in each, about 3 s of CPU) costs more than the tiny runs of a test. The tests of the worker pool and of
    the default that chooses the number of workers remove it (``monkeypatch.delenv``) or pass --jobs."""
    monkeypatch.setenv("MMIX_EVAL_JOBS", "1")


def make_data(n_train=120, n_test=40, classes=4, channels=3, size=8, seed=0, val=0) -> ImageData:
    """Synthetic, learnable images: each class has its own mean brightness pattern, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % classes
        base = (y.float() / (classes - 1) * 160 + 40)[:, None, None, None]
        x = (base + torch.randn(n, channels, size, size, generator=g) * 25).clamp(0, 255).to(torch.uint8)
        return Split(x, y)

    tr = split(n_train + val)
    v = Split(tr.x[:val], tr.y[:val]) if val else None
    tr = Split(tr.x[val:], tr.y[val:])
    return ImageData(
        name="synthetic",
        spec="synthetic",
        classes=[f"c{i}" for i in range(classes)],
        train=tr,
        test=split(n_test),
        val=v,
        flip=True,
        info={"spec": "synthetic", "train_size": n_train, "val_size": val, "test_size": n_test},
    )


@pytest.fixture
def tiny_data() -> ImageData:
    return make_data()


def tiny_config(method="manifold_mixup", epochs=3, **train) -> Config:
    cfg = Config()
    cfg.model.name = "smallnet"
    cfg.model.kwargs = {"width": 4}
    cfg.method.name = method
    cfg.train.epochs = epochs
    cfg.train.batch_size = 16
    cfg.train.schedule = "cosine"
    cfg.train.crop_padding = 1
    cfg.train.device = "cpu"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def rng():
    return np.random.default_rng(123)


def ece_from_bins(counts, acc, conf) -> float:
    """Top-label ECE from reliability bins, by its definition (an in-test reference for netcal's)."""
    m = counts > 0
    return float((counts[m] / counts.sum() * np.abs(acc[m] - conf[m])).sum())


# The slow lane's longest tests (measured 2026-12-07: 367 s, 106 s, 60 s of a 509 s lane on 2 workers) start first,
# so that pytest-xdist hands every other test to the other worker meanwhile instead of starting them last.
LONGEST_FIRST = (
    "tests/bench/test_bench.py::test_cpu_sized_cifar10_bench_end_to_end",
    "tests/integration/test_reproducible.py::test_main_command_inline_idle_and_two_workers_busy_are_bitwise_equal",
    "tests/report/test_claims_validity.py::test_method_and_network_claims_keep_their_level_and_coverage",
)


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration/ is slow by its folder (real data, subprocesses, torchrun); the longest
    tests run first (``LONGEST_FIRST``: the order changes no result, only the lane's wall time)."""
    for item in items:
        if TESTS / "integration" in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: next((k for name, k in rank.items() if item.nodeid.startswith(name)), len(rank)))


@contextmanager
def raises_as_shown(exc=UserError, match: str = ""):
    """``pytest.raises``, matching the message as the command line shows it: the library names parameters
    (``ckpt 'x': ...``), the command line its flags (``--ckpt 'x': ...``, ``mmix_eval/cli/flags.py``)."""
    with pytest.raises(exc) as info:
        yield info
    shown = as_flags(info.value)
    assert re.search(match, shown), f"{match!r} does not match {shown!r}"
