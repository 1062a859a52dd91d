"""Issue 45: the OOD evaluator's feature-space scores against pytorch-ood's detectors and the papers' formulas
(numpy, written here), the taps, settings chosen on a validation source only, and the evaluator's rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood.detector import ASH, KNN, RMD, Mahalanobis, ReAct, ViM

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
from mmix_eval.evaluate.evaluators.ood.features import (
    Gaussians,
    Head,
    ash_s,
    ash_score,
    choose,
    fit_layer,
    knn_distances,
    normalised,
    react_score,
    react_threshold,
    vim_dim,
)
from mmix_eval.evaluate.evaluators.ood.features import ViM as OurViM
from mmix_eval.evaluate.evaluators.ood.ranking import ranking_metrics
from mmix_eval.evaluate.evaluators.ood.taps import resolve_taps
from mmix_eval.evaluate.target import target_from_module
from tests.builders import staged_net


def _features(n=300, d=8, c=3, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    means = torch.randn(c, d, generator=g, dtype=torch.float64) * 2
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5 + torch.eye(d, dtype=torch.float64)
    h = means[y] + torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + shift
    return h, y


def _head(d=8, c=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Head(torch.randn(c, d, generator=g, dtype=torch.float64), torch.randn(c, generator=g, dtype=torch.float64))


def test_mahalanobis_and_rmds_equal_pytorch_ood_up_to_its_covariance_scale():
    h, y = _features()
    q, _ = _features(n=50, seed=3, shift=0.7)
    ours = Gaussians.fit(h, y)
    # pytorch-ood: precision of the unnormalised scatter (N Σ), outlier scores 0.5 min MD and min (MD_c - MD_0)
    pm = Mahalanobis(None).fit_features(h.float(), y)
    pr = RMD(None).fit_features(h.float(), y)
    n = len(h)
    np.testing.assert_allclose(
        ours.mahalanobis(q).numpy(), -2 * n * pm.predict_features(q.float()).double().numpy(), rtol=1e-3
    )
    np.testing.assert_allclose(
        ours.rmds(q).numpy(), -n * pr.predict_features(q.float()).double().numpy(), rtol=2e-3, atol=1e-3
    )


def test_mahalanobis_by_the_formula_with_a_dead_unit():
    """Lee et al.'s score written out in numpy, on features with a unit that never fires (singular Σ: the
    pseudo-inverse, as OpenOOD's EmpiricalCovariance)."""
    h, y = _features(d=6)
    h[:, 2] = 0.0
    q, _ = _features(n=40, d=6, seed=5)
    q[:, 2] = 0.0
    H, Y, Q = h.numpy(), y.numpy(), q.numpy()
    mus = np.stack([H[c == Y].mean(0) for c in range(3)])
    cen = H - mus[Y]
    prec = np.linalg.pinv(cen.T @ cen / len(H), hermitian=True)
    md = np.stack([np.einsum("nd,de,ne->n", Q - m, prec, Q - m) for m in mus], 1)
    np.testing.assert_allclose(Gaussians.fit(h, y).mahalanobis(q).numpy(), -md.min(1), rtol=1e-9)
    # RMDS: minus the smallest class distance less the distance under the data's own Gaussian
    mu0 = H.mean(0)
    prec0 = np.linalg.pinv((H - mu0).T @ (H - mu0) / len(H), hermitian=True)
    md0 = np.einsum("nd,de,ne->n", Q - mu0, prec0, Q - mu0)
    np.testing.assert_allclose(Gaussians.fit(h, y).rmds(q).numpy(), -(md - md0[:, None]).min(1), rtol=1e-9, atol=1e-9)


def test_knn_equals_pytorch_ood_and_a_brute_force_distance():
    h, y = _features(n=200)
    q, _ = _features(n=2100, seed=4)  # more than one chunk of queries
    theirs = KNN(None, k=7).fit_features(h.float(), y).predict_features(q.float()).double().numpy()
    ours = knn_distances(normalised(h), q, (7, 1))
    np.testing.assert_allclose(ours[7].numpy(), theirs, atol=2e-5)
    zq, zh = (q / q.norm(dim=1, keepdim=True)).numpy(), (h / h.norm(dim=1, keepdim=True)).numpy()
    brute = np.sort(np.linalg.norm(zq[:, None, :] - zh[None, :, :], axis=2), axis=1)
    np.testing.assert_allclose(ours[1].numpy(), brute[:, 0], atol=2e-5)


def test_vim_equals_pytorch_ood():
    h, y = _features(d=12)
    q, _ = _features(n=60, d=12, seed=6, shift=0.5)
    head = _head(d=12)
    ours = OurViM.fit(h, head, dim=6)
    theirs = ViM(None, d=6, w=head.w.float(), b=head.b.float()).fit_features(h.float(), y)
    assert ours.alpha == pytest.approx(theirs.alpha, rel=1e-4)
    np.testing.assert_allclose(
        ours.score(q, head).numpy(), -theirs.predict_features(q.float()).double().numpy(), rtol=1e-4, atol=1e-4
    )
    assert vim_dim(512) == 256 and vim_dim(2) == 1 and vim_dim(64, 0.25) == 16


def test_react_and_ash_equal_pytorch_ood():
    h, y = _features(d=10)
    h, q = h.clamp(min=0), _features(n=60, d=10, seed=7)[0].clamp(min=0)  # post-ReLU features
    head = _head(d=10)
    lin = torch.nn.Linear(10, 3).double()
    with torch.no_grad():
        lin.weight.copy_(head.w), lin.bias.copy_(head.b)
    r = ReAct(backbone=None, head=lin, percentile=0.9).fit_feature_maps(h, y)
    c = react_threshold(h, 90.0)
    assert c == pytest.approx(r.threshold, rel=1e-12)
    np.testing.assert_allclose(react_score(q, head, c).numpy(), -r.predict_feature_maps(q).numpy(), rtol=1e-10)
    a = ASH(backbone=None, head=lambda x: lin(x.flatten(1)), variant="ash-s", percentile=0.7)
    theirs = -a.predict_feature_maps(q.view(len(q), 10, 1, 1)).numpy()
    np.testing.assert_allclose(ash_score(q, head, 70.0).numpy(), theirs, rtol=1e-10)


def test_ash_keeps_the_top_activations_and_rescales_by_hand():
    h = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    out = ash_s(h, 50.0)  # keep 2 of 4: 4 and 3; s1 = 10, s2 = 7
    np.testing.assert_allclose(out[0].numpy(), np.array([4, 0, 3, 0]) * np.exp(10 / 7))
    assert torch.equal(out[1], torch.zeros(4, dtype=torch.float64))  # nothing fires: zero, not NaN


def test_settings_are_chosen_on_validation_features_only():
    h, y = _features(n=200)
    fit = fit_layer("penultimate", h, y, _head(), knn_k=50)
    v_in, _ = _features(n=80, seed=11)
    v_out, _ = _features(n=80, seed=12, shift=1.5)
    told = choose(
        fit, ("knn", "react", "ash", "vim", "mahalanobis"), v_in, v_out, lambda a, b: ranking_metrics(a, b)["auroc"]
    )
    assert set(told) == {"knn", "react", "ash", "vim"}  # Mahalanobis has nothing to choose
    grid = (1, 5, 10, 20, 50, 100, 200)
    by_hand = [
        ranking_metrics(
            -knn_distances(fit.bank, v_in, (k,))[k].numpy(), -knn_distances(fit.bank, v_out, (k,))[k].numpy()
        )["auroc"]
        for k in grid
    ]
    assert fit.settings["knn"]["knn_k"] == grid[int(np.argmax(by_hand))]
    assert fit.settings["vim"]["vim_dim"] in (2, 4, 6)


Staged = staged_net()


def _tensors(n, seed, bright):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, 8, 8, generator=g) * 0.5 + (0.5 if bright else 0.0)).clamp(0, 1)
    return x, torch.arange(n) % 3


def test_taps_default_to_every_stage_and_the_penultimate_features():
    m = Staged()
    assert list(resolve_taps(m, [])) == ["1", "2", "penultimate"]
    with pytest.raises(UserError, match="ood: layer 'stages.9' expected a module name"):
        resolve_taps(m, ["stages.9"])


def test_the_evaluator_records_every_score_at_every_layer_fitted_on_training_images():
    x, y = _tensors(60, 0, True)
    t = target_from_module(Staged().eval(), x, y, "net", train=_tensors(90, 1, True))
    rows = run_evaluator(get_evaluator("ood"), t, {"ood": ["noise:uniform"]}, EvalOptions(progress=False))
    auroc = {r["condition"]: r for r in rows if r["metric"] == "auroc"}
    feature = {c for c in auroc if "@" in c}
    assert feature == {
        f"noise:uniform/{s}@{layer}" for s in ("mahalanobis", "rmds", "knn") for layer in ("1", "2", "penultimate")
    } | {f"noise:uniform/{s}@penultimate" for s in ("vim", "react", "ash")}
    r = auroc["noise:uniform/knn@2"]
    assert r["settings"]["knn_k"] == 50 and r["settings"]["layer"] == "2" and r["settings"]["width"] == 6
    assert r["settings"]["feature_fit"] == "90 of 90 training images (seeded subset)"
    # the penultimate Mahalanobis AUROC, recomputed from features hooked by hand and the formula's fit
    feats = {}
    hook = t.model.fc.register_forward_pre_hook(lambda m, i: feats.setdefault("h", []).append(i[0]))
    from mmix_eval.evaluate.evaluators.ood import ood_images

    noise = ood_images("noise:uniform", 60, (1, 8, 8), 0).float() / 255
    with torch.no_grad():
        tx, ty = _tensors(90, 1, True)
        t.model(tx), t.model(x), t.model(noise)
    hook.remove()
    g = Gaussians.fit(feats["h"][0].double(), ty)
    want = ranking_metrics(g.mahalanobis(feats["h"][1].double()).numpy(), g.mahalanobis(feats["h"][2].double()).numpy())
    assert auroc["noise:uniform/mahalanobis@penultimate"]["value"] == pytest.approx(want["auroc"], abs=1e-12)


def test_feature_scores_without_training_images_are_a_note_by_default_and_an_error_when_named():
    x, y = _tensors(30, 0, True)
    t = target_from_module(Staged().eval(), x, y, "net")
    rows = run_evaluator(get_evaluator("ood"), t, {"ood": ["noise:uniform"]}, EvalOptions(progress=False))
    assert not any("@" in r["condition"] for r in rows)
    assert "feature scores n/a: expected the model's training images" in rows[0]["warnings"]
    with pytest.raises(UserError, match=r"ood: feature scores \(knn\) expected the model's training images"):
        run_evaluator(get_evaluator("ood"), t, {"ood": ["noise:uniform"], "scores": "knn"}, EvalOptions(progress=False))


def test_a_validation_source_chooses_the_settings_and_a_test_source_cannot():
    x, y = _tensors(60, 0, True)
    kw = dict(train=_tensors(90, 1, True), val=_tensors(40, 2, True))
    ev = get_evaluator("ood")
    with pytest.raises(UserError, match="expected a validation source other than the test sources"):
        ev.options({"ood": "noise:uniform", "ood_val": "noise:uniform"})

    def run(test_source):
        t = target_from_module(Staged().eval(), x, y, "net", **kw)
        opts = {"ood": [test_source], "ood_val": "noise:gaussian", "scores": "knn,ash"}
        return {
            r["condition"].split("/")[1]: r["settings"]
            for r in run_evaluator(ev, t, opts, EvalOptions(progress=False))
            if r["metric"] == "auroc"
        }

    a, b = run("noise:uniform"), run("noise:blobs")
    assert set(a) == {"knn@1", "knn@2", "knn@penultimate", "ash@penultimate"}
    for k in a:  # the same choice whatever the test source
        chosen = [x for x in ("knn_k", "ash_percentile", "chosen_by") if x in a[k]]
        assert [a[k][x] for x in chosen] == [b[k][x] for x in chosen] and "by validation AUROC" in a[k]["chosen_by"]
    assert "never by test images" in a["knn@1"]["feature_settings"]
    # without held-out images there is nothing to choose on
    t = target_from_module(Staged().eval(), x, y, "net", train=kw["train"])
    with pytest.raises(UserError, match="ood_val expected held-out in-distribution images"):
        run_evaluator(ev, t, {"ood": ["noise:uniform"], "ood_val": "noise:gaussian"}, EvalOptions(progress=False))


def test_a_head_that_is_not_the_logits_leaves_the_head_scores_out():
    class Scaled(Staged):
        def forward(self, x):
            return 2 * super().forward(x)  # the last linear layer's output is not the logits

    x, y = _tensors(40, 0, True)
    t = target_from_module(Scaled().eval(), x, y, "net", train=_tensors(60, 1, True))
    rows = run_evaluator(get_evaluator("ood"), t, {"ood": ["noise:uniform"]}, EvalOptions(progress=False))
    conds = {r["condition"] for r in rows}
    assert "noise:uniform/mahalanobis@penultimate" in conds and "noise:uniform/vim@penultimate" not in conds
    assert "vim, react, ash n/a: the last linear layer's output is not the logits" in rows[0]["warnings"]


def test_non_finite_features_and_scores_are_one_line_or_a_stated_nan():
    from mmix_eval.evaluate.evaluators.ood.feature_run import ranked

    h, y = _features(n=20)
    h[3, 1] = float("inf")
    with pytest.raises(UserError, match="ood: layer '2' expected finite features on the training images, got 1 images"):
        fit_layer("2", h, y, None, knn_k=5)
    # ASH-S on features that are all negative: the kept ones sum to almost 0, exp(s1 / s2) overflows
    q = torch.tensor([[-1e-3, -1e-3, -500.0, -500.0]], dtype=torch.float64)
    s = ash_score(q, Head(torch.ones(2, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)), 50.0)
    assert not np.isfinite(s.numpy()).all()
    got, base = ranked(np.array([0.1, s.item()]), np.array([0.0, 0.2]), {"warnings": None}, "ash at layer penultimate")
    assert all(np.isnan(v) for v in got.values()) and set(got) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    assert base["warnings"] == "ash at layer penultimate: scores not finite (an overflow), no ranking"
    got, base = ranked(np.array([0.3, 0.4]), np.array([0.1, 0.2]), {"warnings": "w"}, "x")
    assert got["auroc"] == 1.0 and base == {"warnings": "w"}
