from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmix_eval.methods.losses import bce_softmax, soft_ce


def test_bce_softmax_hand_computed():
    # p = softmax([0, 0]) = [.5, .5]; per class -log(.5); mean over 2 classes = log 2.
    assert math.isclose(float(bce_softmax(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))), math.log(2), rel_tol=1e-6)


def test_bce_softmax_matches_torch_bceloss_on_softmax():
    torch.manual_seed(0)
    logits = torch.randn(16, 10) * 3
    target = torch.softmax(torch.randn(16, 10), 1)
    assert torch.allclose(
        bce_softmax(logits, target), F.binary_cross_entropy(torch.softmax(logits, 1), target), atol=1e-6
    )


def test_bce_softmax_finite_and_clamped_like_bceloss_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0]])
    target = torch.tensor([[0.0, 1.0, 0.0]])
    value = bce_softmax(logits, target)
    assert torch.isfinite(value)
    assert torch.allclose(value, F.binary_cross_entropy(torch.softmax(logits, 1), target))  # (100+100+0)/3


def test_soft_ce_equals_cross_entropy_for_one_hot_and_hand_computed_for_soft():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(soft_ce(logits, F.one_hot(y, 5).float()), F.cross_entropy(logits, y), atol=1e-6)
    assert math.isclose(float(soft_ce(torch.zeros(1, 2), torch.tensor([[0.5, 0.5]]))), math.log(2), rel_tol=1e-6)


def test_losses_have_gradients():
    logits = torch.randn(4, 3, requires_grad=True)
    (bce_softmax(logits, torch.full((4, 3), 1 / 3)) + soft_ce(logits, torch.full((4, 3), 1 / 3))).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
