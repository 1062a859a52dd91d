"""Run `mmix-eval train ...` with one injected fault, for tests/reliability/test_training_faults.py.

python fault_driver.py kill-at-step K  -- train ARGS...     SIGKILL itself at training step K
python fault_driver.py kill-in-write NAME K -- train ARGS... SIGKILL itself half-way through writing the
                                                            K-th file named NAME (state.pt, model.safetensors)
python fault_driver.py nan-at-step K -- train ARGS...       make the loss NaN from step K on
"""

from __future__ import annotations

import os
import signal
import sys

import mmix_eval.training.loop as train_module
import mmix_eval.training.state as state_module
from mmix_eval.cli import main
from mmix_eval.methods.base import Method


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def patch_steps(k: int, action) -> None:
    """Wrap the method step of every built-in method through the training loop's _Step module."""
    original = train_module._Step.forward
    calls = {"n": 0}

    def forward(self, x, y, rng):
        calls["n"] += 1
        loss = original(self, x, y, rng)
        return action(calls["n"], loss)

    train_module._Step.forward = forward


def patch_write(name: str, k: int) -> None:
    import mmix_eval.checkpoint as checkpoint_module

    seen = {"n": 0}
    for module in (state_module, checkpoint_module):
        original = module.atomic_write_bytes

        def write(path, data, _original=original):
            if os.path.basename(str(path)) == name:
                seen["n"] += 1
                if seen["n"] == k:
                    with open(os.path.join(os.path.dirname(str(path)), f".{name}.killed.tmp"), "wb") as f:
                        f.write(data[: len(data) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                    kill()
            return _original(path, data)

        module.atomic_write_bytes = write


if __name__ == "__main__":
    sep = sys.argv.index("--")
    mode, params, argv = sys.argv[1], sys.argv[2:sep], sys.argv[sep + 1 :]
    if mode == "kill-at-step":
        k = int(params[0])
        patch_steps(k, lambda n, loss: kill() if n == k else loss)
    elif mode == "kill-in-write":
        patch_write(params[0], int(params[1]))
    elif mode == "nan-at-step":
        k = int(params[0])
        patch_steps(k, lambda n, loss: loss * float("nan") if n >= k else loss)
    else:
        raise SystemExit(f"unknown mode {mode}")
    assert Method  # the driver wraps the public step interface only
    raise SystemExit(main(argv))
