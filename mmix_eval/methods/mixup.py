"""vanilla, input_mixup and manifold_mixup. Input mixup is manifold mixup with S = {0}."""

from __future__ import annotations

from collections.abc import Sequence

from mmix_eval.errors import UserError
from mmix_eval.methods.base import Method, StepOutput, check_alpha
from mmix_eval.methods.mixing import (
    forward_mixed,
    mix,
    mix_point_names,
    sample_lambda,
    sample_layer,
    sample_permutation,
    soft_targets,
)
from mmix_eval.models import num_mix_points


class Vanilla(Method):
    name = "vanilla"

    def step(self, model, x, y, rng) -> StepOutput:
        logits = model(x)
        return StepOutput(self.loss_fn(logits, soft_targets(y, logits.shape[1])), logits)


class ManifoldMixup(Method):
    """Mix the hidden state at a layer k drawn uniformly from ``eligible`` with λ ~ Beta(α, α)."""

    name = "manifold_mixup"

    def __init__(self, alpha: float = 2.0, eligible: Sequence[int | str] = (0, 1, 2), loss: str = "bce_softmax"):
        super().__init__(loss)
        self.alpha = check_alpha(alpha)
        if isinstance(eligible, (str, bytes)) or not isinstance(eligible, Sequence) or len(eligible) == 0:
            raise UserError(f"eligible: expected a non-empty list of layer indices or module names, got {eligible!r}")
        names = all(isinstance(k, str) for k in eligible)
        if not names and not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in eligible):
            raise UserError(
                f"eligible: expected non-negative integer layer indices or module names (not both), got {list(eligible)!r}"
            )
        self.eligible = list(dict.fromkeys(eligible)) if names else sorted(set(int(k) for k in eligible))

    def validate(self, model) -> None:
        if isinstance(self.eligible[0], str):
            valid = set(mix_point_names(model))
            bad = [k for k in self.eligible if k not in valid]
            if bad:
                top = [n for n in mix_point_names(model) if "." not in n][:12]
                raise UserError(
                    f"eligible layer '{bad[0]}': expected a module name of {type(model).__name__} "
                    f"('' = the input), e.g. {', '.join(repr(n) for n in top)}; got {self.eligible}"
                )
            return
        n = num_mix_points(model)
        if n is None:
            raise UserError(
                f"eligible layers {self.eligible}: {type(model).__name__} has no numbered stages; "
                f"give module names instead, e.g. ['', 'layer1', 'layer2']"
            )
        bad = [k for k in self.eligible if k >= n]
        if bad:
            raise UserError(
                f"eligible layer {bad[0]}: expected one of 0..{n - 1} for {type(model).__name__} "
                f"(0 = input, 1..{n - 1} = after each of its {n - 1} stages), got {self.eligible}"
            )

    def step(self, model, x, y, rng) -> StepOutput:
        k = sample_layer(rng, self.eligible)
        lam = sample_lambda(rng, self.alpha)
        perm = sample_permutation(rng, x.shape[0]).to(x.device, non_blocking=True)
        logits = forward_mixed(model, x, k, lambda h: mix(h, perm, lam))
        target = soft_targets(y, logits.shape[1], perm, lam)
        return StepOutput(self.loss_fn(logits, target), logits)

    def describe(self):
        return {**super().describe(), "alpha": self.alpha, "eligible": list(self.eligible)}


def manifold_mixup(alpha: float = 2.0, eligible: Sequence[int] = (0, 1, 2), loss: str = "bce_softmax") -> ManifoldMixup:
    return ManifoldMixup(alpha, eligible, loss)


def input_mixup(alpha: float = 1.0, loss: str = "bce_softmax") -> ManifoldMixup:
    method = ManifoldMixup(alpha, (0,), loss)
    method.name = "input_mixup"
    return method
