"""Accuracy and calibration under the paper's novel deformations (Table 4 / Table 9 / a user grid).

torch and the rendering load inside ``run``: the class, its options and their checks import no torch, so
``--help`` and ``ls evaluators`` answer at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmix_eval.evaluate.base import SHIFT_METRICS, Evaluator, OptionError
from mmix_eval.evaluate.grids import INTERPOLATIONS, RENDERER, load_grid


@dataclass
class DeformationOptions:
    grid: str = field(default="table4", metadata={"help": "table4, table9, or a YAML file of {rotation|shear|zoom: value}"})
    interpolation: str = field(default="nearest", metadata={"help": "nearest (the official code's rendering) or bilinear"})


class Deformations(Evaluator):
    name = "deformations"
    version = "2"  # 2: the official nearest rendering (0 outside the image, ties up) and rotation sign
    help = "accuracy and calibration under the paper's rotations, shears and zooms (kornia / official rendering)"
    Options = DeformationOptions
    metrics = SHIFT_METRICS

    def validate(self, options) -> None:
        if options.interpolation not in INTERPOLATIONS:
            raise OptionError("interpolation", f"expected one of {', '.join(INTERPOLATIONS)}, got '{options.interpolation}'")
        load_grid(options.grid)

    def run(self, target, options, common) -> list[dict]:
        from tqdm.auto import tqdm

        from mmix_eval.evaluate.geometry import sample_matrices, warp
        from mmix_eval.evaluate.metrics import condition_rows
        from mmix_eval.evaluate.passes import batch_logits, clean_logits, setup, shard_batches

        grid_name, conditions = load_grid(options.grid)
        model, device, bs, warn = setup(target, common.device, common.batch_size)
        images, n, bins = target.test, len(target.test), common.bins
        settings = {"grid": grid_name, "interpolation": options.interpolation}
        base = {**target.base, "evaluator": self.name, "n": n, "eval_seed": common.seed, "warnings": warn,
                "settings": settings}
        batches = shard_batches(n, bs)
        with tqdm(total=len(batches) * (len(conditions) + 1), desc=f"{target.run} deformations", unit="batch",
                  disable=not common.progress, leave=False) as bar:
            clean = clean_logits(target, bs, device, bar)
            rows = condition_rows(base, "clean", clean, images.y, bins, "Clean test images")
            clean_acc = rows[0]["value"]
            for d in conditions:
                mats = sample_matrices(d, n, common.seed)  # per image, from (seed, condition): common random numbers
                logits = batch_logits(model, images, batches, device,
                                      lambda xb, yb, i, j: warp(xb, mats[i:j], options.interpolation), bar)
                rows += condition_rows(base, d.name, logits, images.y, bins, d.label, clean_acc,
                                       deformation=d.kind, magnitude=d.value,
                                       renderer=RENDERER[options.interpolation])
        return rows


def evaluate_deformations(target, grid: str = "table4", seed: int = 0, interpolation: str = "nearest",
                          batch_size: int | None = None, device=None, progress: bool = True, bins: int = 15) -> list[dict]:
    """Python API: the deformations evaluator on one target."""
    from mmix_eval.evaluate.base import EvalOptions, run_evaluator

    return run_evaluator(Deformations(), target, {"grid": grid, "interpolation": interpolation},
                         EvalOptions(seed=seed, bins=bins, batch_size=batch_size, device=device, progress=progress))
