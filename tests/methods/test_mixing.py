"""The mixing maths of Manifold Mixup, checked on tiny tensors with hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmix_eval.methods import create_method
from mmix_eval.methods import mixup as mixup_module
from mmix_eval.methods.mixing import forward_mixed, mix, sample_lambda, sample_layer, sample_permutation, soft_targets
from mmix_eval.models import create_model


def test_lambda_one_changes_nothing():
    h = torch.randn(5, 3, 4, 4)
    perm = torch.tensor([4, 3, 2, 1, 0])
    assert torch.equal(mix(h, perm, 1.0), h)
    y = torch.tensor([0, 1, 2, 1, 0])
    assert torch.equal(soft_targets(y, 3, perm, 1.0), torch.nn.functional.one_hot(y, 3).float())


def test_hand_computed_pairing_of_hidden_states_and_targets():
    # Sample i's hidden state is the constant i; labels are i too; perm swaps 0<->2 and keeps 1.
    h = torch.arange(3, dtype=torch.float32).view(3, 1)
    y = torch.tensor([0, 1, 2])
    perm = torch.tensor([2, 1, 0])
    lam = 0.75
    assert torch.allclose(mix(h, perm, lam), torch.tensor([[0.5], [1.0], [1.5]]))  # 0.75*0+0.25*2, ...
    expected = torch.tensor([[0.75, 0.0, 0.25], [0.0, 1.0, 0.0], [0.25, 0.0, 0.75]])
    assert torch.allclose(soft_targets(y, 3, perm, lam), expected)


@settings(max_examples=50, deadline=None)
@given(lam=st.floats(0, 1), n=st.integers(1, 12), classes=st.integers(2, 7), seed=st.integers(0, 2**31))
def test_soft_targets_sum_to_one_and_pair_with_the_same_permutation(lam, n, classes, seed):
    rng = np.random.default_rng(seed)
    y = torch.from_numpy(rng.integers(0, classes, n))
    perm = sample_permutation(rng, n)
    t = soft_targets(y, classes, perm, lam)
    assert torch.allclose(t.sum(1), torch.ones(n))
    # The label weights come from the same pairing the hidden states use.
    label_as_state = y.float().view(n, 1)
    assert torch.allclose(mix(label_as_state, perm, lam).view(n), (t * torch.arange(classes)).sum(1), atol=1e-5)


def test_mix_gradient_matches_autograd_of_the_plain_formula():
    perm = torch.tensor([3, 0, 2, 4, 1])
    h = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mix(t, perm, 0.3), (h,))
    g = torch.randn(5, 2, 3, dtype=torch.float64)
    (fast,) = torch.autograd.grad(mix(h, perm, 0.3), h, g)
    (plain,) = torch.autograd.grad(0.3 * h + 0.7 * h[perm], h, g)
    assert torch.allclose(fast, plain)


def test_permutation_is_a_permutation(rng):
    p = sample_permutation(rng, 100)
    assert sorted(p.tolist()) == list(range(100))


def test_layer_drawn_only_from_eligible_set_and_roughly_uniformly(rng):
    eligible = [0, 2, 3]
    draws = [sample_layer(rng, eligible) for _ in range(3000)]
    counts = {k: draws.count(k) for k in set(draws)}
    assert set(counts) == set(eligible)
    for k in eligible:  # expected 1000 each; 4.5 sigma of a binomial(3000, 1/3) is ~116
        assert 880 <= counts[k] <= 1120, counts


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_lambda_follows_beta_alpha_alpha(rng, alpha):
    lams = np.array([sample_lambda(rng, alpha) for _ in range(20000)])
    assert lams.min() >= 0 and lams.max() <= 1
    assert abs(lams.mean() - 0.5) < 0.01
    assert abs(lams.var() - 1 / (4 * (2 * alpha + 1))) < 0.01  # Var Beta(a, a) = 1 / (4 (2a + 1))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("smallnet", 3, 3, width=4).eval()


def test_identity_mixer_at_any_layer_equals_plain_forward(model):
    x = torch.rand(4, 3, 8, 8)
    for k in range(4):
        assert torch.equal(forward_mixed(model, x, k, lambda h: h), model(x))


def test_mixing_at_layer_k_mixes_the_hidden_state_after_stage_k(model):
    x = torch.rand(4, 3, 8, 8)
    perm, lam = torch.tensor([1, 0, 3, 2]), 0.3
    h1 = model.stages[0](model.normalize(x))
    h1 = mix(h1, perm, lam)
    expected = model.head(model.stages[2](model.stages[1](h1)))
    assert torch.allclose(forward_mixed(model, x, 1, lambda h: mix(h, perm, lam)), expected)


def test_mixing_the_input_before_or_after_normalisation_is_the_same(model):
    x = torch.rand(4, 3, 8, 8)
    perm, lam = torch.tensor([2, 3, 0, 1]), 0.4
    after = model.head(model.stages[2](model.stages[1](model.stages[0](mix(model.normalize(x), perm, lam)))))
    assert torch.allclose(forward_mixed(model, x, 0, lambda h: mix(h, perm, lam)), after, atol=1e-5)


def _record_layers(monkeypatch, method_name, steps=60, **kw):
    seen = []
    real = mixup_module.forward_mixed

    def spy(model, x, k, mixer):
        seen.append(k)
        return real(model, x, k, mixer)

    monkeypatch.setattr(mixup_module, "forward_mixed", spy)
    torch.manual_seed(0)
    model = create_model("smallnet", 3, 3, width=4)
    method = create_method(method_name, **kw)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        method.step(model, torch.rand(6, 3, 8, 8), torch.randint(0, 3, (6,)), rng)
    return seen


def test_input_mixup_mixes_only_at_the_input(monkeypatch):
    assert set(_record_layers(monkeypatch, "input_mixup")) == {0}


def test_manifold_mixup_mixes_at_every_eligible_layer_and_nowhere_else(monkeypatch):
    assert set(_record_layers(monkeypatch, "manifold_mixup")) == {0, 1, 2}
    assert set(_record_layers(monkeypatch, "manifold_mixup", eligible=[1, 3])) == {1, 3}


def test_gradients_flow_through_the_layers_before_k():
    torch.manual_seed(0)
    model = create_model("smallnet", 3, 3, width=4)
    method = create_method("manifold_mixup", eligible=[2])
    out = method.step(model, torch.rand(6, 3, 8, 8), torch.randint(0, 3, (6,)), np.random.default_rng(0))
    out.loss.backward()
    first_conv = model.stages[0][0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_method_defaults_follow_the_paper():
    assert create_method("input_mixup").describe() == {
        "name": "input_mixup",
        "loss": "bce_softmax",
        "alpha": 1.0,
        "eligible": [0],
    }
    assert create_method("manifold_mixup").describe() == {
        "name": "manifold_mixup",
        "loss": "bce_softmax",
        "alpha": 2.0,
        "eligible": [0, 1, 2],
    }


def test_one_draw_of_k_lambda_and_permutation_per_batch(monkeypatch):
    # The same rng state gives the same (k, lambda, perm): each batch draws exactly these three.
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    k, lam, perm = sample_layer(rng_a, [0, 1, 2]), sample_lambda(rng_a, 2.0), sample_permutation(rng_a, 6)
    method = create_method("manifold_mixup")
    torch.manual_seed(0)
    model = create_model("smallnet", 3, 3, width=4)
    calls = []
    monkeypatch.setattr(
        mixup_module,
        "forward_mixed",
        lambda m, x, kk, mixer: (
            calls.append((kk, mixer(torch.arange(6.0).view(6, 1)))) or torch.zeros(6, 3, requires_grad=True)
        ),
    )
    method.step(model, torch.rand(6, 3, 8, 8), torch.zeros(6, dtype=torch.long), rng_b)
    assert calls[0][0] == k
    assert torch.allclose(calls[0][1], mix(torch.arange(6.0).view(6, 1), perm, lam))
    assert rng_a.random() == rng_b.random()  # both generators are at the same point afterwards
