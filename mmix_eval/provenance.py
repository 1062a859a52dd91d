"""What a run records about where it came from: library versions, git commit, hardware."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

_PACKAGES = ("mmix-eval", "torch", "torchvision", "numpy", "safetensors")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the mmix-eval source tree in use, with '+dirty' for uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware(device: str) -> dict[str, str]:
    import torch

    from mmix_eval.memory import state
    from mmix_eval.threads import applied, usable_cores

    info = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "device": device,
        "torch_threads": str(torch.get_num_threads()),
        "threads_from": applied().get("source", "torch's default"),
        "usable_cores": str(usable_cores()),
        "malloc": state(),
    }
    decided = applied()
    for key in ("busy_tasks", "free_cores", "openmp"):
        if key in decided:
            info[f"threads_{key}"] = str(decided[key])
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
