"""Issue 31, natural shift: CIFAR-10.1 / 10.2 / image folders through the shift evaluator, accuracy on the line
and effective robustness (checked against an independent fit), and its bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from mmix_eval.cli import main
from mmix_eval.evaluate.outcomes import read_outcomes_own
from mmix_eval.evaluate.records import read_records
from mmix_eval.report.sections.shift import fit_line, predicted, probit

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_probit_fit_and_effective_robustness_match_scipy():
    pts = [("a", 0, 60.0, 40.0), ("a", 1, 70.0, 52.0), ("b", 0, 80.0, 61.0), ("b", 1, 90.0, 80.0)]
    a, b = fit_line(pts)
    x = stats.norm.ppf([p[2] / 100 for p in pts])
    y = stats.norm.ppf([p[3] / 100 for p in pts])
    ref = stats.linregress(x, y)
    assert a == pytest.approx(ref.slope, abs=1e-9) and b == pytest.approx(ref.intercept, abs=1e-9)
    assert probit(97.5) == pytest.approx(stats.norm.ppf(0.975), abs=1e-12)
    for _, _, c, v in pts:  # effective robustness: the residual mapped back to accuracy
        want = v - 100 * stats.norm.cdf(ref.slope * stats.norm.ppf(c / 100) + ref.intercept)
        assert v - predicted((a, b), c) == pytest.approx(want, abs=1e-9)
    assert fit_line(pts[:2]) is None and fit_line([pts[0]] * 3) is None  # < 3 distinct clean accuracies


def _images(labels, rng, noise=60):
    """Learnable CIFAR-shaped images: class k is a grey level of 20 + 22k, plus noise (more noise: a shift)."""
    x = 20 + 22 * np.asarray(labels)[:, None, None, None] + rng.normal(0, noise, (len(labels), 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


def _cifar_tree(root, per_class=3, seed=0, classes=CLASSES):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for j, img in enumerate(_images([CLASSES.index(c)] * per_class, rng)):
                Image.fromarray(img).save(root / split / c / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def shift_runs(tmp_path_factory):
    """Three small CIFAR-shaped checkpoints (two vanilla seeds, one input mixup) and the two shift sets."""
    tmp = tmp_path_factory.mktemp("shift")
    data = _cifar_tree(tmp / "cifar", per_class=8)
    # trained for 1, 4 and 12 epochs: three clean accuracies, so there is a line to fit
    for name, method, seed, epochs in (
        ("vanilla-s0", "vanilla", 0, 1),
        ("vanilla-s1", "vanilla", 1, 4),
        ("mixup-s0", "input_mixup", 0, 12),
    ):
        assert (
            main(
                [
                    "train",
                    "--data",
                    f"imagefolder:{data}",
                    "--method",
                    method,
                    "--epochs",
                    str(epochs),
                    "--seed",
                    str(seed),
                    "--set",
                    "train.device=cpu",
                    "--set",
                    "model.kwargs={width: 4}",
                    "--set",
                    "train.batch_size=10",
                    "--out",
                    str(tmp / "runs" / name),
                    "--no-progress",
                ]
            )
            == 0
        )
    rng = np.random.default_rng(5)
    (tmp / "c101").mkdir()
    np.save(tmp / "c101" / "cifar10.1_v6_data.npy", _images(np.arange(30) % 10, rng, noise=80))
    np.save(tmp / "c101" / "cifar10.1_v6_labels.npy", np.arange(30) % 10)
    np.savez(tmp / "cifar102_test.npz", images=_images(np.arange(25) % 10, rng, noise=100), labels=np.arange(25) % 10)
    return tmp


def test_shift_sets_give_rows_outcomes_and_a_report_with_the_line(shift_runs, capsys):
    tmp = shift_runs
    sets = f"cifar10.1:{tmp / 'c101'},cifar10.2:{tmp / 'cifar102_test.npz'}"
    assert (
        main(["shift", "--ckpt", str(tmp / "runs" / "*"), "--sets", sets, "--out", str(tmp / "res"), "--no-progress"])
        == 0
    )
    rows = read_records(tmp / "res" / "vanilla-s0" / "shift.jsonl")
    acc = {r["condition"]: r for r in rows if r["metric"] == "acc"}
    assert set(acc) == {"clean", "cifar10.1", "cifar10.2"}
    assert (acc["cifar10.1"]["settings"]["set_images"], acc["cifar10.2"]["settings"]["set_images"]) == (30, 25)
    assert acc["clean"]["n"] == acc["cifar10.2"]["n"] == 80  # n: the evaluated test subset, as every evaluator's
    assert {"nll", "ece", "brier", "rel_acc"} <= {r["metric"] for r in rows if r["condition"] == "cifar10.1"}
    indices, bits, own = read_outcomes_own(tmp / "res" / "vanilla-s0" / "shift.outcomes.npz")
    assert len(indices) == 80 and list(own["cifar10.2"]) == list(range(25)) and len(bits["cifar10.2"]) == 25
    assert 100 * bits["cifar10.1"].mean() == pytest.approx(acc["cifar10.1"]["value"])  # the outcomes are the rows'
    assert main(["report", str(tmp / "res"), "--out", str(tmp / "rep"), "--baseline", "vanilla"]) == 0
    md = (tmp / "rep" / "report.md").read_text()
    assert "cifar10.1: effective robustness (pp above the line)" in md
    assert "probit fit over 3 checkpoints" in md
    assert (tmp / "rep" / "plots" / "shift-accuracy-on-the-line.png").stat().st_size > 10_000
    # the effective robustness cells are the residuals of the records' own accuracies about their probit fit
    import csv
    import io

    pts = {}
    for run in ("vanilla-s0", "vanilla-s1", "mixup-s0"):
        got = {
            r["condition"]: r["value"]
            for r in read_records(tmp / "res" / run / "shift.jsonl")
            if r["metric"] == "acc" and r["calibrator"] == "none"
        }
        pts[run] = (got["clean"], got["cifar10.1"])
    assert len({c for c, _ in pts.values()}) == 3
    fit = stats.linregress(
        [stats.norm.ppf(c / 100) for c, _ in pts.values()], [stats.norm.ppf(s / 100) for _, s in pts.values()]
    )
    er = {k: s - 100 * stats.norm.cdf(fit.slope * stats.norm.ppf(c / 100) + fit.intercept) for k, (c, s) in pts.items()}
    rows = [
        r
        for r in csv.DictReader(io.StringIO((tmp / "rep" / "table.csv").read_text()))
        if r["metric"] == "eff_rob" and r["condition"] == "cifar10.1"
    ]
    (row,) = rows
    assert float(row["vanilla mean"]) == pytest.approx((er["vanilla-s0"] + er["vanilla-s1"]) / 2, abs=1e-6)
    assert float(row["input_mixup mean"]) == pytest.approx(er["mixup-s0"], abs=1e-6)


def test_a_set_of_other_classes_or_sizes_is_refused_or_remapped_by_name(shift_runs, capsys):
    tmp = shift_runs
    swapped = _cifar_tree(tmp / "swapped", per_class=2, classes=["cat", "dog"])  # 2 classes, labels 0 and 1
    args = ["shift", "--ckpt", str(tmp / "runs" / "vanilla-s0"), "--out", str(tmp / "r2"), "--no-progress"]
    assert main(args + ["--sets", f"imagefolder:{swapped}"]) == 2
    assert "class 0 is 'cat' in the evaluation data but 'airplane' in the checkpoint" in capsys.readouterr().err
    assert not (tmp / "r2").exists()
    assert main(args + ["--sets", f"imagefolder:{swapped}", "--class-map", "by-name"]) == 0
    rows = read_records(tmp / "r2" / "vanilla-s0" / "shift.jsonl")
    assert {r["condition"] for r in rows} == {"clean", "imagefolder-swapped"}
    small = tmp / "small"
    for c in ("cat", "dog"):
        for split in ("train", "test"):
            (small / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(small / split / c / "0.png")
    assert main(args + ["--sets", f"imagefolder:{small}", "--class-map", "by-name", "--out", str(tmp / "r3")]) == 2
    assert (
        "expected images of the model's input, 3 x 32 x 32 (channels x height x width), got 3 x 16 x 16 (give "
        "?image_size=S"
    ) in capsys.readouterr().err
    assert (
        main(
            args + ["--sets", f"imagefolder:{small}?image_size=32", "--class-map", "by-name", "--out", str(tmp / "r3")]
        )
        == 0
    )
    assert main(args + ["--sets", "cifar10.3"]) == 2
    assert "got 'cifar10.3' (did you mean 'cifar10.2'?)" in capsys.readouterr().err


def test_top5_accuracy_is_recorded_beyond_ten_classes_and_equals_numpys():
    import torch

    from mmix_eval.evaluate.metrics import condition_rows

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(300, 12, generator=g), torch.randint(0, 12, (300,), generator=g)
    rows = {r["metric"]: r["value"] for r in condition_rows({"run": "m"}, "clean", logits, y)}
    top5 = np.argsort(-logits.numpy(), axis=1)[:, :5]
    assert rows["acc_top5"] == pytest.approx(100 * np.mean([yi in t for yi, t in zip(y.numpy(), top5)]), abs=1e-9)
    assert rows["acc_top5"] >= rows["acc"]
    assert "acc_top5" not in {r["metric"] for r in condition_rows({"run": "m"}, "clean", logits[:, :10], y % 10)}


def test_the_evaluation_data_itself_is_not_a_shift_set(shift_runs, capsys):
    tmp = shift_runs
    assert (
        main(
            [
                "shift",
                "--ckpt",
                str(tmp / "runs" / "vanilla-s0"),
                "--sets",
                f"imagefolder:{tmp / 'cifar'}/",
                "--out",
                str(tmp / "r4"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "shift: set 'imagefolder:" in (err := capsys.readouterr().err)
    assert "expected data other than the evaluation data, got the evaluation data itself" in err
    assert not (tmp / "r4").exists()


def test_line_points_skip_non_finite_values_and_clip_perfect_accuracies():
    from mmix_eval.report.sections.shift import points

    base = {"evaluator": "shift", "metric": "acc", "bin": None, "calibrator": "none"}
    recs = [
        {**base, "run": "a", "train_seed": 0, "condition": "clean", "value": 100.0},
        {**base, "run": "a", "train_seed": 0, "condition": "cifar10.1", "value": 0.0},
        {**base, "run": "b", "train_seed": 0, "condition": "clean", "value": 80.0},
        {**base, "run": "b", "train_seed": 0, "condition": "cifar10.1", "value": float("nan")},
        {**base, "run": "c", "train_seed": 1, "condition": "clean", "value": float("nan")},
        {**base, "run": "c", "train_seed": 1, "condition": "cifar10.1", "value": 50.0},
    ]
    got = points(recs, {"a": "m", "b": "m", "c": "v"})
    assert got == {"cifar10.1": [("m", 0, 100.0, 0.0)]}  # the NaN shift and the NaN clean point are left out
    assert probit(100.0) == pytest.approx(stats.norm.ppf(1 - 1e-4)) and probit(0.0) == pytest.approx(
        stats.norm.ppf(1e-4)
    )
    assert fit_line(got["cifar10.1"]) is None and points([], {}) == {}


def test_a_copy_of_the_evaluated_test_images_is_refused_by_content(shift_runs, capsys):
    """Issue 44 item 4: a CIFAR-10.1 set holding the evaluated test images was accepted (accuracy = clean, 100 %
    relative); an OOD source naming the test folder under a decode policy (cropped) was accepted too."""
    from mmix_eval.data import load_data

    tmp = shift_runs
    d = load_data(f"imagefolder:{tmp / 'cifar'}")
    copy = tmp / "copy101"
    copy.mkdir()
    np.save(copy / "cifar10.1_v6_data.npy", d.test.x.numpy().transpose(0, 2, 3, 1))
    np.save(copy / "cifar10.1_v6_labels.npy", d.test.y.numpy())
    assert (
        main(
            [
                "shift",
                "--ckpt",
                str(tmp / "runs" / "vanilla-s0"),
                "--sets",
                f"cifar10.1:{copy}",
                "--out",
                str(tmp / "r5"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"shift: set 'cifar10.1:{copy}' expected images other than the evaluated test images, got 80 of its 80 "
        f"images identical to them" in err
    ), err
    assert (
        main(
            [
                "ood",
                "--ckpt",
                str(tmp / "runs" / "vanilla-s0"),
                "--ood",
                f"imagefolder:{tmp / 'cifar'}?image_size=32",
                "--out",
                str(tmp / "r6"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "got the evaluation data itself" in capsys.readouterr().err
    assert not (tmp / "r5").exists() and not (tmp / "r6").exists()
