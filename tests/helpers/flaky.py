"""A method that passes the 2-image probe and then fails in training: one bench run that dies."""

from mmix_eval.methods import Method


class FailsInTraining(Method):
    name = "fails_in_training"

    def step(self, model, x, y, rng):
        if x.shape[0] > 2:
            raise RuntimeError("injected failure in training")
        from mmix_eval.methods.mixup import Vanilla

        return Vanilla().step(model, x, y, rng)
