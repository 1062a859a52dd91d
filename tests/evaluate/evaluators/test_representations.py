"""Issue 17: the spectra evaluator on constructed representations, its hooks and batch independence, the
spiral command end to end at a tiny size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import raises_as_shown

from mmix_eval.cli import main
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import EvalOptions, get_evaluator, run_evaluator
from mmix_eval.evaluate.evaluators.spectra import spectrum_metrics
from mmix_eval.evaluate.images import Images
from mmix_eval.evaluate.target import Target
from mmix_eval.models import create_model


def test_a_rank_one_class_has_share_one_and_effective_rank_one():
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(16, generator=g)
    h = torch.randn(40, 1, generator=g) * direction + 3.0  # every point on one line
    m = spectrum_metrics(h, torch.zeros(40, dtype=torch.long))
    assert m["top_share"] == pytest.approx(1.0, abs=1e-6) and m["eff_rank"] == pytest.approx(1.0, abs=1e-5)
    assert m["dirs90"] == 1 and m["dirs99"] == 1 and m["spectrum"][0] == pytest.approx(1.0, abs=1e-6)


def test_an_isotropic_class_has_an_effective_rank_near_its_dimension():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(20000, 8, generator=g)
    m = spectrum_metrics(h, torch.zeros(20000, dtype=torch.long))
    assert 7.9 < m["eff_rank"] <= 8.0 and m["top_share"] == pytest.approx(1 / 8, abs=0.01)
    assert m["dirs90"] == 8 and m["dirs99"] == 8


def test_metrics_by_hand_on_a_two_class_diagonal_case():
    # class 0: points (±3, 0), (0, ±1) -> centred singular values √18, √2: share 3/4, 90 % needs 1 direction
    # (variance 18 of 20); class 1: the same shifted by (10, 0). Within: tr Cov = 20/3 each; between: the two
    # means (0,0), (10,0): tr Cov = 50. Effective rank exp(−(¾ ln ¾ + ¼ ln ¼)) = 1.7548.
    pts = torch.tensor([[3.0, 0], [-3, 0], [0, 1], [0, -1]], dtype=torch.float64)
    h = torch.cat([pts, pts + torch.tensor([10.0, 0])])
    m = spectrum_metrics(h, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    assert m["top_share"] == pytest.approx(0.75) and m["dirs90"] == 1 and m["dirs99"] == 2
    assert m["eff_rank"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert m["within_between"] == pytest.approx((20 / 3) / 50)


def _target(n=60, classes=3, seed=0):
    torch.manual_seed(seed)
    model = create_model("mlp", classes, 1, hidden=[16, 8, 4], image_size=4, linear_stages=[3]).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
    return Target(model, Images(x, torch.arange(n) % classes), run="mlp", base={"run": "mlp"})


def test_same_numbers_at_batch_sizes_7_and_64_and_hooks_removed():
    ev = get_evaluator("spectra")
    t = _target()
    a = run_evaluator(ev, t, {}, EvalOptions(progress=False, batch_size=7))
    b = run_evaluator(ev, _target(), {}, EvalOptions(progress=False, batch_size=64))
    assert [(r["condition"], r["metric"], r["bin"]) for r in a] == [(r["condition"], r["metric"], r["bin"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra["value"] == pytest.approx(rb["value"], rel=1e-5, abs=1e-9)
    assert {r["condition"] for r in a} == {"1", "2", "3"}
    assert all(not m._forward_hooks for m in t.model.modules())  # every hook removed after the run
    # projection of a wide layer is recorded
    wide = run_evaluator(ev, _target(), {"max_dim": 4}, EvalOptions(progress=False))
    assert {r["settings"]["projected"] for r in wide if r["condition"] == "1"} == {True}


def test_bad_layers_and_too_few_images_per_class():
    ev = get_evaluator("spectra")
    with pytest.raises(UserError, match=r"layer 'stages\.9' expected a module name of MLP"):
        run_evaluator(ev, _target(), {"layers": ["stages.9"]}, EvalOptions(progress=False))
    rows = run_evaluator(ev, _target(), {"layers": ["stages.2"]}, EvalOptions(progress=False))
    assert {r["condition"] for r in rows} == {"stages.2"}

    class Pair(torch.nn.Module):  # a layer returning a tuple
        def forward(self, x):
            return x, x

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pair, self.head = Pair(), torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.pair(x.flatten(1))[0])

    odd = _target()
    odd.model = Net().eval()
    with pytest.raises(UserError, match="layer 'pair' expected a tensor output, got tuple"):
        run_evaluator(ev, odd, {"layers": ["pair"]}, EvalOptions(progress=False))
    assert not odd.model.pair._forward_hooks  # removed when the run fails too
    with raises_as_shown(UserError, match="Net has no numbered stages; give module names with --layers"):
        run_evaluator(ev, odd, {}, EvalOptions(progress=False))
    t = _target(n=6)
    t.test = Images(t.test.x[:5], torch.tensor([0, 1, 0, 1, 2]))  # one image of class 2
    with pytest.raises(UserError, match="class 2 expected at least 2 test images, got 1"):
        run_evaluator(ev, t, {}, EvalOptions(progress=False))


def test_spiral_end_to_end_at_a_tiny_size(tmp_path, capsys):
    out = tmp_path / "spiral"
    assert (
        main(
            [
                "spiral",
                "--methods",
                "vanilla,manifold_mixup",
                "--seeds",
                "0",
                "--epochs",
                "3",
                "--data",
                "spiral:points=200",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads((out / "results.json").read_text())
    for m in ("vanilla", "manifold_mixup"):
        for k, v in rec["metrics"][m].items():
            assert all(np.isfinite(x) for x in v["values"]), (m, k)
        assert 0 <= rec["metrics"][m]["low_conf_fraction"]["mean"] <= 100
    assert (out / "spiral.png").stat().st_size > 10_000 and "data:image/png;base64," in (out / "index.html").read_text()
    assert "| bottleneck: largest singular value's share (mean over classes) |" in (out / "results.md").read_text()
    assert main(["spiral", "--methods", "vanila", "--out", str(tmp_path / "bad")]) == 2
    assert "vanila" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["spiral", "--data", "digits", "--out", str(tmp_path / "bad2")]) == 2
