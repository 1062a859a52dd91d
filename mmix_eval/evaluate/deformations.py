"""Accuracy under the paper's novel deformations (Table 4 / Table 9 / a user grid)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from mmix_eval import distributed
from mmix_eval.errors import UserError
from mmix_eval.evaluate.calibration import clean_records
from mmix_eval.evaluate.geometry import INTERPOLATIONS, load_grid, sample_matrices, warp
from mmix_eval.evaluate.records import record
from mmix_eval.evaluate.target import check_logits, logits_of, setup, shard_batches


def evaluate_deformations(target, grid: str = "table4", seed: int = 0, interpolation: str = "nearest",
                          batch_size: int | None = None, device=None, progress: bool = True) -> list[dict]:
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"--interpolation: expected one of {', '.join(INTERPOLATIONS)}, got '{interpolation}'")
    grid_name, conditions = load_grid(grid)
    model, device, bs, warn = setup(target, device, batch_size)
    images, n = target.test, len(target.test)
    base = {**target.base, "evaluator": "deformations", "n": n, "eval_seed": seed, "grid": grid_name,
            "interpolation": interpolation, "warnings": warn}
    batches = shard_batches(n, bs)
    rows = []
    with tqdm(total=len(batches) * (len(conditions) + 1), desc=f"{target.run} deformations", unit="batch",
              disable=not progress, leave=False) as bar:
        rows += clean_records(base, logits_of(model, images, bs, device, bar), images.y)
        for d in conditions:
            mats = sample_matrices(d, n, seed)  # per image, from (seed, condition): common random numbers
            correct = 0
            with torch.inference_mode():
                for i, j in batches:
                    xb, yb = images.batch(i, j, device)
                    logits = model(warp(xb, mats[i:j], interpolation))
                    check_logits(logits)
                    correct += int((logits.argmax(1) == yb).sum())
                    bar.update(1)
            correct = distributed.sum_int(correct)
            rows.append(record(base, d.name, "acc", 100.0 * correct / n, label=d.label))
    return rows
