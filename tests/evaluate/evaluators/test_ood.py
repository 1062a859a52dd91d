"""Issue 16, the OOD half: ranking metrics on constructed scores (and by hand), sources, the evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmix_eval.cli import main
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import EvalOptions, OptionError, get_evaluator, run_evaluator
from mmix_eval.evaluate.evaluators.ood import ood_images, ranking_metrics
from mmix_eval.evaluate.images import Images
from mmix_eval.evaluate.records import read_records
from mmix_eval.evaluate.target import Target


def test_separated_scores_give_auroc_one_and_identical_ones_one_half():
    m = ranking_metrics(np.array([0.9, 0.8, 0.95]), np.array([0.1, 0.2]))
    assert m["auroc"] == 1.0 and m["aupr_in"] == 1.0 and m["aupr_out"] == 1.0 and m["fpr95"] == 0.0
    tie = ranking_metrics(np.full(50, 0.5), np.full(50, 0.5))  # every score tied: no ranking at all
    assert tie["auroc"] == 0.5 and tie["fpr95"] == 1.0


def test_fpr95_and_auroc_by_hand():
    # in: 20 scores 1..20; out: 10 scores, 0.5 and 10.5, 11.5, ..., 18.5. TPR >= 95 % needs the threshold at
    # 2 (19 of 20 in-scores >= 2); OOD scores >= 2: 10.5 … 18.5, 9 of 10 -> FPR95 = 0.9.
    s_in = np.arange(1, 21, dtype=float)
    s_out = np.array([0.5] + [10.5 + k for k in range(9)])
    m = ranking_metrics(s_in, s_out)
    assert m["fpr95"] == pytest.approx(0.9)
    # AUROC: P(in > out) over the 200 pairs; 0.5 is below all 20; 10.5 + k is below 20 − (10 + k) in-scores
    wins = 20 + sum(20 - (10 + k) for k in range(9))
    assert m["auroc"] == pytest.approx(wins / 200)


def test_noise_sources_are_seeded_in_range_and_data_sets_are_mapped_to_the_input():
    a = ood_images("noise:gaussian", 8, (3, 16, 16), seed=0)
    assert a.dtype == torch.uint8 and a.shape == (8, 3, 16, 16)
    assert torch.equal(a, ood_images("noise:gaussian", 8, (3, 16, 16), seed=0))
    assert not torch.equal(a, ood_images("noise:gaussian", 8, (3, 16, 16), seed=1))
    blobs = ood_images("noise:blobs", 4, (1, 32, 32), seed=0)
    assert set(blobs.unique().tolist()) <= {0, 255}  # binary blobs
    d = ood_images("digits", 5, (3, 32, 32), seed=0)  # 1 x 8 x 8 digits -> 3 x 32 x 32
    assert d.shape == (5, 3, 32, 32) and torch.equal(d[:, 0], d[:, 2])


def _target(n=60):
    class Net(torch.nn.Module):  # confident on bright images, unsure on dark ones
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([10 * (m - 0.5), torch.zeros_like(m)], 1)

    x = torch.full((n, 1, 8, 8), 250, dtype=torch.uint8)
    return Target(
        Net().eval(), Images(x, torch.zeros(n, dtype=torch.long)), run="net", base={"run": "net", "data": "digits"}
    )


def test_the_evaluator_scores_every_source_and_refuses_the_in_distribution_set():
    ev = get_evaluator("ood")
    rows = run_evaluator(ev, _target(), {"ood": ["noise:uniform"]}, EvalOptions(progress=False))
    auroc = {r["condition"]: r["value"] for r in rows if r["metric"] == "auroc"}
    assert set(auroc) == {"noise:uniform/msp", "noise:uniform/max_logit", "noise:uniform/energy"}
    assert auroc["noise:uniform/msp"] == 1.0  # bright in-distribution images, mid-grey noise: separated
    hist = [r["value"] for r in rows if r["metric"] == "hist_in"]
    assert len(hist) == 20 and sum(hist) == pytest.approx(1.0)
    with pytest.raises(UserError, match="source 'digits' expected data other than the in-distribution set"):
        run_evaluator(ev, _target(), {"ood": ["digits"]}, EvalOptions(progress=False))
    for bad, message in [
        (["noise:pink"], "expected noise:gaussian|uniform|blobs"),
        (["svhm"], "did you mean 'svhn'?"),
        ([], "expected at least one OOD source"),
    ]:
        with pytest.raises(OptionError, match=message.replace("|", r"\|").replace("?", r"\?")):
            ev.validate(type("O", (), {"ood": bad})())


def test_cli_and_report_on_a_trained_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--method",
                "vanilla",
                "--epochs",
                "2",
                "--set",
                "train.device=cpu",
                "--set",
                "model.kwargs={width: 4}",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "ood",
                "--ckpt",
                str(run),
                "--ood",
                "noise:gaussian,noise:blobs",
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = read_records(next((tmp_path / "res").glob("*/ood.jsonl")))
    assert {r["settings"]["ood"] for r in rows} == {"noise:gaussian", "noise:blobs"}
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| noise:blobs, energy score: AUROC |" in md and "FPR at 95 % TPR" in md
    assert (tmp_path / "rep" / "plots" / "ood.png").exists()
    # issue 45: the feature scores, fitted on the checkpoint's training images, fill the evaluator's section and the
    # layer-by-layer figure, not the main comparison table
    feature = {r["condition"] for r in rows if "@" in r["condition"]}
    assert "noise:blobs/mahalanobis@1" in feature and "noise:blobs/vim@penultimate" in feature
    (fit,) = {r["settings"]["feature_fit"] for r in rows}
    assert fit == "1497 of 1497 training images (seeded subset)"  # digits' training split (5,000 asked at most)
    comparison = md.split("### Comparison", 1)[1].split("\n### ", 1)[0]
    assert "score at layer" not in comparison and "| noise:blobs, knn score at layer 2: AUROC |" in md
    assert (tmp_path / "rep" / "plots" / "ood_layers.png").exists()


def test_the_in_distribution_set_is_refused_by_path_and_by_content_not_by_its_spelling(tmp_path, capsys, monkeypatch):
    """Issue 32, item 6: `--ood imagefolder:./odd` was refused only as the exact string; `odd/`, an absolute
    path or a symlink passed and reported AUROC 0.4956. Now paths are resolved and a copy is caught by content."""
    import shutil

    from tests.builders import write_tree

    write_tree(tmp_path / "odd", size=8, per_class=6)
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "train",
                "--data",
                "imagefolder:./odd",
                "--method",
                "vanilla",
                "--epochs",
                "1",
                "--set",
                "train.device=cpu",
                "--set",
                "model.kwargs={width: 4}",
                "--out",
                "run",
                "--no-progress",
            ]
        )
        == 0
    )
    (tmp_path / "link").symlink_to(tmp_path / "odd")
    shutil.copytree(tmp_path / "odd", tmp_path / "copy")
    for spec in ("imagefolder:odd/", f"imagefolder:{tmp_path / 'odd'}", "imagefolder:link"):
        assert main(["ood", "--ckpt", "run", "--ood", spec, "--out", "res", "--no-progress"]) == 2, spec
        assert (
            "expected data other than the in-distribution set, got the evaluation data itself"
            in capsys.readouterr().err
        )
    assert main(["ood", "--ckpt", "run", "--ood", "imagefolder:copy", "--out", "res", "--no-progress"]) == 2
    assert "got images identical to the evaluated test images (18 of 18)" in capsys.readouterr().err  # 3 classes x 6
    assert not (tmp_path / "res").exists()
    assert main(["ood", "--ckpt", "run", "--ood", "noise:uniform", "--out", "res", "--no-progress"]) == 0  # control


def test_a_deep_ensembles_energy_and_max_logit_come_from_its_members_mean_logits():
    """Issue 42: an ensemble's logits are log(mean softmax), whose logsumexp is 0 for every image; its energy and
    max-logit scores are computed from the members' mean logits instead, checked here by hand."""
    from mmix_eval.evaluate.ensemble import Ensemble, MeanLogits
    from mmix_eval.evaluate.evaluators.ood import scores

    class Member(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = torch.tensor(w)

        def forward(self, x):
            m = x.float().mean(dim=(1, 2, 3), keepdim=False).view(-1, 1)
            return m * self.w

    ens = Ensemble([Member([3.0, 0.0, -1.0]), Member([1.0, 2.0, 0.0])]).eval()
    x = torch.linspace(0.1, 1.0, 7).view(7, 1, 1, 1).expand(7, 1, 2, 2)
    got = {k: v.numpy() for k, v in scores(ens(x), MeanLogits(ens)(x)).items()}
    m = np.linspace(0.1, 1.0, 7)[:, None]
    z1, z2 = m * np.array([3.0, 0.0, -1.0]), m * np.array([1.0, 2.0, 0.0])
    p = (np.exp(z1) / np.exp(z1).sum(1, keepdims=True) + np.exp(z2) / np.exp(z2).sum(1, keepdims=True)) / 2
    mean = (z1 + z2) / 2
    assert got["msp"] == pytest.approx(p.max(1), rel=1e-5)
    assert got["max_logit"] == pytest.approx(mean.max(1), rel=1e-5)
    assert got["energy"] == pytest.approx(np.log(np.exp(mean).sum(1)), rel=1e-5)
    assert np.ptp(got["energy"]) > 0.5  # not the constant the ensemble's own logits give
    assert np.allclose(torch.logsumexp(ens(x), 1).numpy(), 0, atol=1e-5)  # (the constant)

    # through the evaluator: the rows say how an ensemble is scored, and record no calibrated energy
    n = 40
    target = Target(
        ens,
        Images(torch.full((n, 1, 8, 8), 250, dtype=torch.uint8), torch.zeros(n, dtype=torch.long)),
        run="ens",
        base={"run": "ens", "data": "digits"},
        val=Images(torch.full((20, 1, 8, 8), 240, dtype=torch.uint8), torch.zeros(20, dtype=torch.long)),
    )
    rows = run_evaluator(get_evaluator("ood"), target, {"ood": ["noise:uniform"]}, EvalOptions(progress=False))
    assert all("max logit and energy from the members' mean logits" in r["settings"]["ensemble_scores"] for r in rows)
    calibrated = {r["settings"]["score"] for r in rows if r["calibrator"] not in (None, "none")}
    assert calibrated == {"msp"}


def test_auroc_differences_get_paired_intervals_over_seeds_and_images(tmp_path):
    """Issue 45, item 5: each run stores AUROC's bootstrap replicates, so a report's method claims on AUROC take the
    test images as a sample too (not 'no per-image data') and its network claims are the replicate z-test."""
    for method in ("vanilla", "input_mixup"):
        for seed in (0, 1):
            run = tmp_path / f"{method}-s{seed}"
            argv = ["train", "--data", "digits", "--method", method, "--epochs", "1", "--seed", str(seed)]
            argv += [
                "--set",
                "train.device=cpu",
                "--set",
                "model.kwargs={width: 4}",
                "--out",
                str(run),
                "--no-progress",
            ]
            assert main(argv) == 0
            argv = [
                "ood",
                "--ckpt",
                str(run),
                "--ood",
                "noise:blobs",
                "--scores",
                "msp,knn",
                "--out",
                str(tmp_path / "res"),
            ]
            assert main([*argv, "--no-progress"]) == 0
    assert (tmp_path / "res" / "vanilla-s0" / "ood.outcomes.npz").exists()
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep"), "--baseline", "vanilla"]) == 0
    claims = (tmp_path / "rep" / "claims.md").read_text()
    line = next(x for x in claims.splitlines() if "| noise:blobs, msp score: AUROC |" in x)
    assert "2 seed pairs × 300 images" in line and "bootstrap z-test" in line
    line = next(x for x in claims.splitlines() if "| noise:blobs, knn score at layer 2: AUROC |" in x)
    assert "2 seed pairs × 300 images" in line and "bootstrap z-test" in line
    line = next(x for x in claims.splitlines() if "| noise:blobs, msp score: FPR at 95 % TPR |" in x)
    assert "no per-image data" in line  # replicates are AUROC's only
