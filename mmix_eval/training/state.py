"""A run's state on disk and in the RNGs: the run folder, resumable state files, every random stream.

A run folder holds:
    config.yaml        the resolved configuration (what --resume checks against)
    state.pt           last resumable state (model, optimizer, epoch, every RNG); torch.load(weights_only=True)
    state.prev.pt      the state before it, a fallback if the latest is damaged
    log.jsonl          one record per epoch
    model.safetensors  the final weights with metadata in the header, and model.json beside it
"""

from __future__ import annotations

import io
import json
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mmix_eval.config import Config, merge
from mmix_eval.errors import ParamError, mention
from mmix_eval.io import YamlLimit, atomic_write_bytes, atomic_write_text, parse_yaml, remove_partial_writes

RUN_FILES = ("config.yaml", "state.pt", "state.prev.pt", "log.jsonl", "model.safetensors", "model.json")
STATE_FORMAT = "mmix-eval/state"
STATE_VERSION = 1


def seed_everything(seed: int) -> tuple[torch.Generator, np.random.Generator]:
    """Seed python, numpy and torch; return the data RNG (shuffling, augmentation) and the mixing RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(seed)
    mix_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D6978]))  # 'mix': a stream of its own
    return data_gen, mix_rng


def rng_state(data_gen: torch.Generator, mix_rng: np.random.Generator) -> dict[str, Any]:
    # numpy states are stored as plain lists / JSON: ndarrays do not load under weights_only=True.
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": data_gen.get_state(),
        "mix": json.dumps(mix_rng.bit_generator.state),
    }


def set_rng_state(s: dict[str, Any], data_gen: torch.Generator, mix_rng: np.random.Generator) -> None:
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    data_gen.set_state(s["data"])
    mix_rng.bit_generator.state = json.loads(s["mix"])


def load_state(out: Path) -> dict | None:
    """The latest good state file, falling back to the previous one with a warning."""
    for name in ("state.pt", "state.prev.pt"):
        path = out / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: never retried without weights_only
            warnings.warn(f"{path}: unreadable state file ({type(e).__name__}); trying the previous one", stacklevel=2)
            continue
        if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
            if name != "state.pt":
                warnings.warn(f"resuming from {path} (the latest state was missing or damaged)", stacklevel=2)
            return state
        warnings.warn(f"{path}: not an mmix-eval state file; ignored", stacklevel=2)
    return None


def save_state(out: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    latest, prev = out / "state.pt", out / "state.prev.pt"
    if latest.exists():
        latest.replace(prev)
    atomic_write_bytes(latest, buf.getvalue())


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} in the run, {vb!r} given")
    return out


def check_run_folder(out: Path, cfg: Config, resume: bool, overwrite: bool) -> bool:
    """Decide what to do with an existing folder. Returns True when a run is to be resumed."""
    existing = [n for n in RUN_FILES if (out / n).exists()]
    if out.exists() and not out.is_dir():
        raise ParamError("out", "expected a folder, got a file", out)
    if not existing:
        if resume:
            raise ParamError("resume", f"expected a run in '{out}', found none (no {RUN_FILES[0]})")
        return False
    if overwrite:
        for n in existing:
            (out / n).unlink()
        return False
    if not resume:
        raise ParamError(
            "out",
            f"expected an empty or new folder, got one that holds a run "
            f"({', '.join(existing)}); pass {mention('resume')} to continue it or {mention('overwrite')} to replace it",
            out,
        )
    saved = load_run_config(out)
    diff = _diff(saved.to_dict(), cfg.to_dict())
    if diff:
        raise ParamError(
            "resume", f"expected the configuration of the run in '{out}', got a different one ({'; '.join(diff[:3])})"
        )
    return True


def load_run_config(out: Path) -> Config:
    path = out / "config.yaml"
    try:
        return merge(Config(), parse_yaml(path.read_text()) or {}, f"config '{path}'")
    except (OSError, yaml.YAMLError, YamlLimit) as e:
        raise ParamError("resume", f"expected a readable {path}, got {type(e).__name__}") from None


def open_run_folder(out: Path, cfg: Config, resuming: bool) -> None:
    """Create the folder, remove what a killed process left half-written, and write the config of a new run."""
    out.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(out, RUN_FILES)
    if not resuming:
        atomic_write_text(out / "config.yaml", cfg.to_yaml())


def resumable_state(out: Path) -> dict | None:
    """The state to resume from; None (with a warning) for a run killed before its first save; an error when
    only damaged state files are left (restarting silently would throw the run's epochs away)."""
    state = load_state(out)
    if state is None:
        damaged = [n for n in ("state.pt", "state.prev.pt") if (out / n).exists()]
        if damaged:
            raise ParamError(
                "resume",
                f"expected a readable state file, got only damaged ones "
                f"({', '.join(damaged)}); pass {mention('overwrite')} to train this run again from scratch",
                out,
            )
        warnings.warn(
            f"resuming '{out}': no state file saved yet (killed before its first epoch ended); starting from epoch 0",
            stacklevel=3,
        )
    return state
