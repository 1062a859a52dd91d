"""Accuracy and calibration under the paper's novel deformations (Table 4 / Table 9 / a user grid).

torch and the rendering load inside ``run``: the class, its options and their checks import no torch, so
``--help`` and ``ls evaluators`` answer at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mmix_eval.evaluate.base import SHIFT_METRICS, Evaluator, OptionError
from mmix_eval.evaluate.evaluators.deformations.grids import INTERPOLATIONS, RENDERER, load_grid


@dataclass(frozen=True)
class DeformationOptions:
    grid: str = field(
        default="table4", metadata={"help": "table4, table9, or a YAML file of {rotation|shear|zoom: value}"}
    )
    interpolation: Literal["nearest", "bilinear"] = field(
        default="nearest", metadata={"help": "nearest (the official code's rendering) or bilinear"}
    )


class Deformations(Evaluator):
    name = "deformations"
    version = "3"  # 2: the official nearest rendering (0 outside the image, ties up) and rotation sign; 3: debiased CE, SmoothECE
    help = "accuracy and calibration under the paper's rotations, shears and zooms (kornia / official rendering)"
    Options = DeformationOptions
    metrics = SHIFT_METRICS

    def validate(self, options) -> None:
        if options.interpolation not in INTERPOLATIONS:
            raise OptionError(
                "interpolation", f"expected one of {', '.join(INTERPOLATIONS)}, got '{options.interpolation}'"
            )
        load_grid(options.grid)

    def run(self, target, options, common) -> list[dict]:
        from mmix_eval.evaluate.evaluators.deformations.geometry import sample_matrices, warp
        from mmix_eval.evaluate.passes import Shift, shift_rows

        grid_name, conditions = load_grid(options.grid)
        n, mode = len(target.test), options.interpolation

        def renderer(d):  # per image, from (seed, condition): common random numbers across checkpoints
            mats = sample_matrices(d, n, common.seed)
            return lambda model, device: lambda x, y, i, j: warp(x, mats[i:j], mode)

        shifts = [
            Shift(
                d.name, d.label, renderer(d), {"deformation": d.kind, "magnitude": d.value, "renderer": RENDERER[mode]}
            )
            for d in conditions
        ]
        return shift_rows(self, target, common, {"grid": grid_name, "interpolation": mode}, shifts)


def evaluate_deformations(
    target,
    grid: str = "table4",
    seed: int = 0,
    interpolation: str = "nearest",
    batch_size: int | None = None,
    device=None,
    progress: bool = True,
    bins: int = 15,
) -> list[dict]:
    """Python API: the deformations evaluator on one target."""
    from mmix_eval.evaluate.base import EvalOptions, run_evaluator

    return run_evaluator(
        Deformations(),
        target,
        {"grid": grid, "interpolation": interpolation},
        EvalOptions(seed=seed, bins=bins, batch_size=batch_size, device=device, progress=progress),
    )
