"""Property-based tests (hypothesis): the mixing maths, the deformation maps, the calibration metrics and
the config parser, on inputs a hand-written test would not think of."""

from __future__ import annotations

import math

import numpy as np
import torch
import yaml
from conftest import ece_from_bins
from helpers.references import netcal_ece_mce, top_label
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmix_eval.cli.flags import as_flags
from mmix_eval.config import Config, load_config, merge, parse_override
from mmix_eval.errors import UserError
from mmix_eval.evaluate.evaluators.deformations.geometry import rotation_matrices, shear_matrices, warp, zoom_matrices
from mmix_eval.evaluate.metrics import nll, reliability_bins
from mmix_eval.methods.mixing import mix, sample_lambda, sample_layer, sample_permutation, soft_targets

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- mixing -------------------------------------------------------------------------------------------

batch = st.integers(1, 12)
lam = st.floats(0.0, 1.0, allow_nan=False)


@SETTINGS
@given(n=batch, c=st.integers(2, 10), lam=lam, seed=st.integers(0, 2**31 - 1))
def test_soft_targets_are_distributions_with_lambda_on_the_own_label(n, c, lam, seed):
    rng = np.random.default_rng(seed)
    y = torch.from_numpy(rng.integers(0, c, n))
    perm = sample_permutation(rng, n)
    t = soft_targets(y, c, perm, lam)
    assert torch.allclose(t.sum(1), torch.ones(n), atol=1e-6)
    assert (t >= 0).all() and (t <= 1 + 1e-6).all()
    own = t[torch.arange(n), y]
    assert (own >= lam - 1e-6).all()  # the own label keeps at least λ (more if the partner shares it)


@SETTINGS
@given(n=batch, lam=lam, seed=st.integers(0, 2**31 - 1))
def test_mix_is_the_convex_combination_and_its_gradient_is_autograds(n, lam, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    perm = sample_permutation(np.random.default_rng(seed), n)
    out = mix(h, perm, lam)
    ref = lam * h + (1 - lam) * h[perm]
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((out * w).sum(), h)
    (gb,) = torch.autograd.grad((ref * w).sum(), h)
    assert torch.allclose(ga, gb, atol=1e-12)
    assert torch.equal(mix(h.detach(), perm, 1.0), h.detach())  # λ = 1 is exactly the identity


@SETTINGS
@given(
    alpha=st.floats(0.01, 50.0),
    eligible=st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True),
    n=batch,
    seed=st.integers(0, 2**31 - 1),
)
def test_samplers_stay_in_their_supports(alpha, eligible, n, seed):
    rng = np.random.default_rng(seed)
    assert sample_layer(rng, eligible) in eligible
    assert 0.0 <= sample_lambda(rng, alpha) <= 1.0
    assert sorted(sample_permutation(rng, n).tolist()) == list(range(n))


# ---- deformation maps ---------------------------------------------------------------------------------

angle = st.floats(-60.0, 60.0, allow_nan=False)


@SETTINGS
@given(theta=angle, shear=st.floats(-80.0, 80.0), zoom=st.floats(0.5, 2.0))
def test_matrices_compose_with_their_inverse_to_the_identity(theta, shear, zoom):
    r = rotation_matrices(torch.tensor([theta], dtype=torch.float64))[0]
    assert torch.allclose(
        r @ rotation_matrices(torch.tensor([-theta], dtype=torch.float64))[0],
        torch.eye(2, dtype=torch.float64),
        atol=1e-12,
    )
    s = shear_matrices(torch.tensor([shear], dtype=torch.float64))[0]
    assert torch.allclose(s @ torch.linalg.inv(s), torch.eye(2, dtype=torch.float64), atol=1e-9)
    z = zoom_matrices(torch.tensor([zoom], dtype=torch.float64))[0]
    assert torch.allclose(
        z @ zoom_matrices(torch.tensor([1 / zoom], dtype=torch.float64))[0],
        torch.eye(2, dtype=torch.float64),
        atol=1e-12,
    )
    assert math.isclose(float(torch.linalg.det(r)), 1.0, abs_tol=1e-12)  # rotations keep areas


def _interior(a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    """Output pixels p whose warp-by-b sample point q = c + B(p − c) has all four bilinear neighbours r
    inside the image with their own warp-by-a sample c + A(r − c) inside too."""
    c = (size - 1) / 2
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64) - c, torch.arange(size, dtype=torch.float64) - c, indexing="ij"
    )
    qx, qy = b[0, 0] * xs + b[0, 1] * ys + c, b[1, 0] * xs + b[1, 1] * ys + c
    ok = torch.ones(size, size, dtype=torch.bool)
    for rx in (qx.floor(), qx.floor() + 1):
        for ry in (qy.floor(), qy.floor() + 1):
            inside = (rx >= 0) & (rx <= size - 1) & (ry >= 0) & (ry <= size - 1)
            sx = a[0, 0] * (rx - c) + a[0, 1] * (ry - c) + c
            sy = a[1, 0] * (rx - c) + a[1, 1] * (ry - c) + c
            ok &= inside & (sx >= 0) & (sx <= size - 1) & (sy >= 0) & (sy <= size - 1)
    return ok


@SETTINGS
@given(
    kind=st.sampled_from(["rotation", "shear", "zoom"]),
    value=st.floats(-40.0, 40.0),
    zoom=st.floats(0.6, 1.6),
    gx=st.floats(-0.02, 0.02),
    gy=st.floats(-0.02, 0.02),
)
def test_warping_then_warping_back_is_the_identity_on_the_interior(kind, value, zoom, gx, gy):
    """On a linear ramp image bilinear sampling is exact, so warp(warp(x, A), A⁻¹) = x wherever both
    sampling steps stay inside the image."""
    size = 24
    mats = {"rotation": rotation_matrices, "shear": shear_matrices}
    a = (
        mats[kind](torch.tensor([value], dtype=torch.float64))
        if kind != "zoom"
        else zoom_matrices(torch.tensor([zoom], dtype=torch.float64))
    )[0]
    b = torch.linalg.inv(a)
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    x = (0.5 + gx * (xs - size / 2) + gy * (ys - size / 2)).float()[None, None].repeat(1, 3, 1, 1)
    back = warp(warp(x, a[None], "bilinear"), b[None], "bilinear")
    mask = _interior(a, b, size)
    assume(mask.sum() >= 4)
    assert torch.allclose(back[0, :, mask], x[0, :, mask], atol=2e-4)


# ---- calibration metrics ------------------------------------------------------------------------------


@st.composite
def logits_and_labels(draw):
    n, c = draw(st.integers(1, 60)), draw(st.integers(2, 8))
    z = draw(arrays(np.float64, (n, c), elements=st.floats(-30, 30)))
    y = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    return torch.from_numpy(z), torch.from_numpy(y)


@SETTINGS
@given(data=logits_and_labels(), shift=st.floats(-100, 100), bins=st.integers(1, 20), seed=st.integers(0, 1000))
def test_ece_nll_invariants(data, shift, bins, seed):
    z, y = data
    assert nll(z + shift, y) == np.float64(nll(z + shift, y))  # deterministic
    assert math.isclose(nll(z + shift, y), nll(z, y), rel_tol=1e-9, abs_tol=1e-9)  # softmax shift-invariance
    assert nll(z, y) >= 0
    conf, correct = top_label(z, y)
    counts, acc, mconf = reliability_bins(conf, correct, bins)
    assert counts.sum() == len(y)
    ece = ece_from_bins(counts, acc, mconf)
    assert 0.0 <= ece <= 1.0
    m = counts > 0
    assert ece <= float(np.abs(acc[m] - mconf[m]).max()) + 1e-12  # ECE is a weighted mean of gaps: <= MCE
    perm = np.random.default_rng(seed).permutation(len(y))
    assert math.isclose(ece, ece_from_bins(*reliability_bins(conf[perm], correct[perm], bins)), abs_tol=1e-12)


@settings(max_examples=25, deadline=None)
@given(data=logits_and_labels(), bins=st.integers(1, 20))
def test_our_bins_agree_with_netcal(data, bins):
    z, y = data
    conf, correct = top_label(z, y)
    assume(conf.min() > 0 and conf.max() < 1)  # netcal clips exact 0 / 1 confidences
    ours = ece_from_bins(*reliability_bins(conf, correct, bins))
    theirs, _ = netcal_ece_mce(conf, correct, bins)
    assert math.isclose(ours, theirs, abs_tol=1e-9)


@SETTINGS
@given(bins=st.integers(1, 15), used=st.lists(st.integers(0, 14), min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_a_calibrated_predictor_has_zero_ece(bins, used, seed):
    """In every bin it uses, the predictor is right exactly as often as its confidence says: ECE 0.
    Bin k holds 2·bins images at confidence (k + ½)/bins, 2k + 1 of them correct."""
    conf, correct = [], []
    for k in sorted({u % bins for u in used}):
        m = 2 * bins
        conf += [(k + 0.5) / bins] * m
        correct += [1] * (2 * k + 1) + [0] * (m - 2 * k - 1)
    perm = np.random.default_rng(seed).permutation(len(conf))
    conf, correct = np.array(conf)[perm], np.array(correct)[perm]
    assert math.isclose(ece_from_bins(*reliability_bins(conf, correct, bins)), 0.0, abs_tol=1e-12)


# ---- config parsing -----------------------------------------------------------------------------------

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
sections = st.dictionaries(
    st.sampled_from(["data", "model", "method", "train", "trian", "extra"]),
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "epochs",
                "lr",
                "batch_size",
                "alpha",
                "eligible",
                "kwargs",
                "seed",
                "schedule",
                "milestones",
                "val_size",
                "amp",
                "flip",
                "x",
            ]
        ),
        yaml_values,
        max_size=4,
    )
    | yaml_values,
    max_size=4,
)


@SETTINGS
@given(doc=sections | yaml_values)
def test_random_config_documents_give_a_config_or_the_documented_error(doc, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(path)
    except UserError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert isinstance(cfg, Config)


@SETTINGS
@given(text=st.text(max_size=200))
def test_random_yaml_text_never_crashes_the_parser(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except UserError as e:
        assert "\n" not in str(e)


@SETTINGS
@given(text=st.text(max_size=80))
@example(text="\x85")  # NEL: a line break to str.splitlines, once echoed unescaped
@example(text="train.x\u2028=1")
def test_random_overrides_give_a_config_or_the_documented_error(text):
    """Either a Config with the given section.key set, or one of --set's documented one-line errors."""
    try:
        cfg = merge(Config(), parse_override(text), f"--set {text}")
    except UserError as e:
        message = as_flags(e)  # as the command line shows it
        assert message.startswith("--set ") and len(message.splitlines()) == 1, message  # control characters escaped
        assert "expected" in message, message  # every documented error says what was expected
    else:
        section, _, key = text.partition("=")[0].strip().partition(".")
        assert isinstance(cfg, Config) and section in ("data", "model", "method", "train") and key
