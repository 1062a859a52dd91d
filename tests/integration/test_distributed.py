"""Past one machine, on a CPU: torchrun with the gloo backend and 2 processes, and the bench launchers.

Each torchrun test starts real processes through `python -m torch.distributed.run --standalone`
(what `torchrun` is), so these tests exercise the same path a user's command does.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import HELPERS, ROOT
from safetensors import safe_open
from safetensors.torch import load_file

from mmix_eval.checkpoint import read_metadata
from mmix_eval.distributed import shard_of

TOL = 1e-6  # DDP all-reduces gradients in a different summation order than one process: float32 noise only


def _env():
    return {**os.environ, "PYTHONPATH": f"{HELPERS}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}


def torchrun(args, cwd, nproc=2, check=True):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "mmix_eval",
        *args,
        "--no-progress",
    ]
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def single(args, cwd, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "mmix_eval", *args, "--no-progress"],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


ONE_STEP = [
    "train",
    "--data",
    "digits",
    "--train-limit",
    "64",
    "--batch-size",
    "64",
    "--epochs",
    "1",
    "--model",
    "nobn:plain_cnn",
    "--method",
    "vanilla",
    "--device",
    "cpu",
    "--lr",
    "0.5",
    "--schedule",
    "constant",
]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_shards_partition_every_index():
    for n in range(0, 23):
        for w in range(1, 6):
            parts = [shard_of(n, r, w) for r in range(w)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(parts[i][1] == parts[i + 1][0] for i in range(w - 1))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


def test_one_ddp_step_equals_one_step_on_the_union_batch(tmp_path):
    """vanilla, one step of 64 images: 2 ranks x 32 all-reducing gradients == 1 process on all 64."""
    torchrun(ONE_STEP + ["--out", "ddp"], tmp_path)
    single(ONE_STEP + ["--out", "one"], tmp_path)
    # the control: one process on rank 0's half alone takes a visibly different step
    single(ONE_STEP[:4] + ["32", "--batch-size", "32"] + ONE_STEP[7:] + ["--out", "half"], tmp_path)
    ddp, one, half = (load_file(tmp_path / d / "model.safetensors") for d in ("ddp", "one", "half"))
    assert max_diff(ddp, one) <= TOL
    assert max_diff(half, one) > 1e-3
    meta = read_metadata(tmp_path / "ddp" / "model.safetensors")
    assert meta["train"]["steps"] == 1
    assert meta["train"]["distributed"] == {"world_size": 2, "sync_bn": False, "backend": "gloo"}


def test_two_process_training_and_resume_end_to_end(tmp_path):
    """manifold mixup on a BatchNorm model for 2 epochs under torchrun; then the run is 'killed' after
    epoch 1 (final files removed, the epoch-1 state left) and --resume under torchrun gives the same weights."""
    args = [
        "train",
        "--config",
        str(ROOT / "configs" / "quick.yaml"),
        "--train-limit",
        "400",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--model",
        "smallnet",
        "--set",
        "model.kwargs={width: 4}",
    ]
    r = torchrun(args + ["--out", "run"], tmp_path)
    assert r.stdout.count("saved ") == 1, r.stdout  # rank 0 alone reports
    run = tmp_path / "run"
    final = load_file(run / "model.safetensors")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2] and all(math.isfinite(e["train_loss"]) for e in log)

    # same format as a single-process checkpoint: same tensor names, dtypes, shapes and metadata keys
    single(args + ["--out", "solo"], tmp_path)
    solo = load_file(tmp_path / "solo" / "model.safetensors")
    assert {k: (v.dtype, v.shape) for k, v in final.items()} == {k: (v.dtype, v.shape) for k, v in solo.items()}
    with safe_open(run / "model.safetensors", "pt") as a, safe_open(tmp_path / "solo" / "model.safetensors", "pt") as b:
        assert a.metadata().keys() == b.metadata().keys()
    assert (
        read_metadata(run / "model.safetensors").keys() == read_metadata(tmp_path / "solo" / "model.safetensors").keys()
    )

    for name in ("model.safetensors", "model.json", "state.pt"):
        (run / name).unlink()  # state.prev.pt (end of epoch 1) is what a kill during epoch 2 leaves
    r = torchrun(args + ["--out", "run", "--resume"], tmp_path)
    assert "resuming from" in r.stderr
    resumed = load_file(run / "model.safetensors")
    assert max_diff(final, resumed) == 0.0


def test_sharded_evaluation_equals_single_process(tmp_path):
    single(
        ["train", "--config", str(ROOT / "configs" / "quick.yaml"), "--epochs", "1", "--device", "cpu", "--out", "run"],
        tmp_path,
    )
    ev = ["evaluate", "--ckpt", "run/model.safetensors", "--device", "cpu", "--eps", "2,8", "--batch-size", "64"]
    r = torchrun(ev + ["--out", "sharded"], tmp_path)
    assert r.stdout.count("-> sharded/run/deformations.csv") == 1  # rank 0 alone prints and writes
    single(ev + ["--out", "one"], tmp_path)
    for e in ("deformations", "fgsm", "calibration"):
        a = [json.loads(line) for line in (tmp_path / "one" / "run" / f"{e}.jsonl").read_text().splitlines()]
        b = [json.loads(line) for line in (tmp_path / "sharded" / "run" / f"{e}.jsonl").read_text().splitlines()]
        assert len(a) == len(b) > 0
        for ra, rb in zip(a, b):
            assert ra.keys() == rb.keys()
            for k in ra:
                va, vb = ra[k], rb[k]
                if isinstance(va, float) and isinstance(vb, float):
                    assert (math.isnan(va) and math.isnan(vb)) or abs(va - vb) <= 1e-6 * max(1.0, abs(va)), (
                        e,
                        k,
                        va,
                        vb,
                    )
                else:
                    assert va == vb, (e, k, va, vb)


def test_bad_global_batch_fails_every_rank_with_one_line(tmp_path):
    r = torchrun(ONE_STEP[:-6] + ["--batch-size", "33", "--device", "cpu", "--out", "x"], tmp_path, check=False)
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("mmix-eval: error:")]
    assert errors == [
        "mmix-eval: error: train.batch_size: expected a multiple of the 2 processes (it is the global "
        "batch, split evenly across ranks), got 33"
    ]
    assert not (tmp_path / "x").exists()


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    r = torchrun(ONE_STEP + ["--set", "train.sync_bn=true", "--out", "x"], tmp_path, check=False)
    assert r.returncode != 0
    assert "train.sync_bn: expected CUDA devices" in r.stderr
    assert not (tmp_path / "x").exists()


def test_compile_changes_speed_not_results(tmp_path):
    """train.compile=true (torch.compile per stage, needs the C++ compiler a CPU inductor uses) trains to
    the same weights as eager, up to float32 noise, for manifold mixup (mixing between compiled stages)."""
    import shutil

    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("torch.compile on a CPU needs a C++ compiler")
    args = [
        "train",
        "--config",
        str(ROOT / "configs" / "quick.yaml"),
        "--epochs",
        "1",
        "--train-limit",
        "300",
        "--device",
        "cpu",
    ]
    single(args + ["--out", "eager"], tmp_path)
    single(args + ["--set", "train.compile=true", "--out", "compiled"], tmp_path)
    eager, compiled = (load_file(tmp_path / d / "model.safetensors") for d in ("eager", "compiled"))
    assert max_diff(eager, compiled) <= 1e-3
    assert read_metadata(tmp_path / "compiled" / "model.safetensors")["train"]["compile"] is True
