"""Issue 18: a new regularizer benchmarked for real: its own settings, the baselines it must beat (label
smoothing, RegMixup), sweeps as bench axes with a sweep table and plot, and models made elsewhere."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import HELPERS, ROOT
from PIL import Image

from mmix_eval.bench import load_bench
from mmix_eval.checkpoint import load_checkpoint
from mmix_eval.cli import main
from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import read_records
from mmix_eval.methods import create_method
from mmix_eval.methods.base import fingerprint
from mmix_eval.methods.losses import bce_softmax, soft_ce


@pytest.fixture
def helpers_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HELPERS))
    monkeypatch.setenv("PYTHONPATH", f"{HELPERS}{os.pathsep}{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


# ---------------------------------------------------------------- method settings


def test_method_settings_are_checked_against_the_signature_before_anything_runs(helpers_on_path):
    with pytest.raises(
        UserError,
        match=r"method 'cutmix': unknown argument 'probb' \(did you mean 'prob'\?\); "
        r"its arguments: alpha, prob, loss",
    ):
        create_method("cutmix", {"probb": 0.5})
    with pytest.raises(UserError, match="method 'cutmix': argument 'prob' expected float, got 'high'"):
        create_method("cutmix", {"prob": "high"})
    with pytest.raises(UserError, match="method 'noisy:InputNoise': argument 'sigma' expected float, got True"):
        create_method("noisy:InputNoise", {"sigma": True})
    with pytest.raises(
        UserError, match=r"method 'noisy:InputNoise': could not be built .*prob: expected a number in \[0, 1\]"
    ):
        create_method("noisy:InputNoise", {"prob": 2.0})
    # a plugin with no describe(): its settings are its signature's defaults and what was given
    m = create_method("noisy:InputNoise", {"sigma": 0.3})
    f = fingerprint(m)
    assert f["name"] == "input_noise" and f["settings"] == {"sigma": 0.3, "prob": 1.0, "loss": "bce_softmax"}
    assert len(f["source_sha256"]) == 16
    # ints are taken as floats where the annotation says float; tuples are written as lists
    assert fingerprint(create_method("manifold_mixup", {"alpha": 1}))["settings"] == {
        "alpha": 1.0,
        "eligible": [0, 1, 2],
        "loss": "bce_softmax",
    }


def test_method_args_reach_the_checkpoint_the_records_and_the_report_label(helpers_on_path, tmp_path, capsys):
    common = [
        "--data",
        "digits",
        "--train-limit",
        "200",
        "--test-limit",
        "60",
        "--epochs",
        "1",
        "--set",
        "model.kwargs={width: 4}",
        "--set",
        "train.device=cpu",
        "--no-progress",
    ]
    for prob in ("0.25", "1.0"):
        assert (
            main(
                [
                    "train",
                    "--method",
                    "noisy:InputNoise",
                    "--method-arg",
                    "sigma=0.2",
                    "--method-arg",
                    f"prob={prob}",
                    "--out",
                    str(tmp_path / f"p{prob}"),
                    *common,
                ]
            )
            == 0
        )
    meta = load_checkpoint(tmp_path / "p0.25" / "model.safetensors")[1]
    assert meta["method"]["settings"] == {"sigma": 0.2, "prob": 0.25, "loss": "bce_softmax"}
    assert meta["config"]["method"] == {"name": "noisy:InputNoise", "kwargs": {"sigma": 0.2, "prob": 0.25}}
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(tmp_path / "p0.25"),
                str(tmp_path / "p1.0"),
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = read_records(tmp_path / "res" / "p0.25" / "calibration.jsonl")
    assert {json.dumps(r["method_settings"], sort_keys=True) for r in rows} == {
        json.dumps({"sigma": 0.2, "prob": 0.25, "loss": "bce_softmax"}, sort_keys=True)
    }
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    # the two runs differ only in prob: that is what names their columns
    assert "| condition | input_noise prob=0.25 | input_noise prob=1.0 |" in md
    # no vanilla in the results: the baseline is the first method, and the report says so
    assert "Baseline for the differences: input_noise prob=0.25 (no vanilla run in the results" in md
    # bad input: one line, exit 2, nothing written
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--method",
                "noisy:InputNoise",
                "--method-arg",
                "sigmaa=1",
                "--out",
                str(tmp_path / "bad"),
                *common,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "mmix-eval: error: method 'noisy:InputNoise': unknown argument 'sigmaa' (did you mean 'sigma'?); "
        "its arguments: sigma, prob, loss"
    ]
    assert not (tmp_path / "bad").exists()
    assert main(["train", "--method-arg", "no-equals", "--out", str(tmp_path / "bad"), *common]) == 2
    assert "--method-arg 'no-equals': expected KEY=VALUE" in capsys.readouterr().err


def test_a_first_version_configuration_reads_its_method_keys_as_settings():
    from mmix_eval.config import Config, merge

    old = {"method": {"name": "manifold_mixup", "alpha": 1.5, "eligible": None, "loss": "bce_softmax"}}
    assert merge(Config(), old, "old").method.kwargs == {"alpha": 1.5}
    assert merge(
        Config(), {"method": {"name": "vanilla", "alpha": None, "eligible": None, "loss": "soft_ce"}}, "old"
    ).method.kwargs == {"loss": "soft_ce"}


# ---------------------------------------------------------------- the baselines' maths


def test_label_smoothing_targets_and_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    model = lambda x: logits  # noqa: E731  (the method sees logits straight from its model)
    for loss, fn in (("soft_ce", soft_ce), ("bce_softmax", bce_softmax)):
        out = create_method("label_smoothing", {"epsilon": 0.3, "loss": loss}).step(
            model, torch.zeros(2, 1, 2, 2), y, np.random.default_rng(0)
        )
        target = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])  # (1 − 0.3)·onehot + 0.3/3
        assert torch.allclose(out.loss, fn(logits, target))
    # by hand for soft_ce: −Σ t log softmax, mean over the batch
    p = torch.softmax(logits.detach(), 1)
    hand = -(torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]) * p.log()).sum(1).mean()
    out = create_method("label_smoothing", {"epsilon": 0.3, "loss": "soft_ce"}).step(
        model, None, y, np.random.default_rng(0)
    )
    assert abs(out.loss.item() - hand.item()) < 1e-6
    with pytest.raises(UserError, match=r"epsilon: expected a number in \[0, 1\), got 1.0"):
        create_method("label_smoothing", {"epsilon": 1.0})


def test_regmixup_loss_is_the_clean_loss_plus_eta_times_the_mixup_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))  # no BatchNorm: the 2B batch is two batches
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 1, 0])
    method = create_method("regmixup", {"alpha": 10.0, "eta": 0.5, "loss": "soft_ce"})
    out = method.step(net, x, y, np.random.default_rng(7))
    twin = np.random.default_rng(7)  # the same draws: λ, then the permutation
    lam, perm = float(twin.beta(10.0, 10.0)), torch.from_numpy(twin.permutation(5))
    onehot = F.one_hot(y, 3).float()
    x_mix, y_mix = lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]
    expected = (
        -(onehot * F.log_softmax(net(x), 1)).sum(1).mean() - 0.5 * (y_mix * F.log_softmax(net(x_mix), 1)).sum(1).mean()
    )
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert torch.allclose(out.logits, net(x), atol=1e-6)  # the clean half's logits
    assert 0.2 < lam < 0.8  # α = 10 keeps λ near 1/2
    with pytest.raises(UserError, match="eta: expected a finite number >= 0, got -1"):
        create_method("regmixup", {"eta": -1.0})


# ---------------------------------------------------------------- sweeps


def _bench(tmp_path, **changes) -> Path:
    raw = {
        "name": "sw",
        "data": {"name": "digits", "train_limit": 200, "test_limit": 60},
        "model": {"name": "smallnet", "kwargs": {"width": 4}},
        "train": {"epochs": 1, "batch_size": 50, "schedule": "cosine", "device": "cpu"},
        "methods": ["vanilla", "manifold_mixup"],
        "seeds": [0],
        "evaluate": {"evaluators": ["calibration"], "limit": 100},
    }
    raw.update(changes)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_sweep_axes_expand_into_runs_named_by_their_settings(tmp_path, helpers_on_path):
    b = load_bench(_bench(tmp_path, sweep={"alpha": [0.5, 2.0], "train.epochs": [1, 2]}, seeds=[0, 1]))
    names = [r.name for r in b.runs]
    # vanilla takes no alpha: it is swept over the training key only
    assert names[:4] == ["vanilla-epochs1-s0", "vanilla-epochs1-s1", "vanilla-epochs2-s0", "vanilla-epochs2-s1"]
    assert names[4:6] == ["manifold_mixup-alpha0.5-epochs1-s0", "manifold_mixup-alpha0.5-epochs1-s1"]
    assert len(names) == 4 + 8
    run = next(r for r in b.runs if r.name == "manifold_mixup-alpha2-epochs2-s1")
    assert run.cfg.method.kwargs == {"alpha": 2.0} and run.cfg.train.epochs == 2 and run.cfg.train.seed == 1
    assert run.sweep == {"alpha": 2.0, "train.epochs": 2} and run.method["settings"]["alpha"] == 2.0
    # eligible sets and model kwargs
    b = load_bench(
        _bench(tmp_path, methods=["manifold_mixup"], sweep={"eligible": [[0], [0, 1]], "model.kwargs.width": [4, 6]})
    )
    assert [r.name for r in b.runs] == [
        "manifold_mixup-eligible0-width4-s0",
        "manifold_mixup-eligible0-width6-s0",
        "manifold_mixup-eligible0_1-width4-s0",
        "manifold_mixup-eligible0_1-width6-s0",
    ]
    assert b.runs[1].cfg.model.kwargs == {"width": 6} and b.runs[2].cfg.method.kwargs == {"eligible": [0, 1]}


@pytest.mark.parametrize(
    "changes, match",
    [
        (
            {"sweep": {"probb": [0.1, 0.2]}},
            r"sweep 'probb': expected a setting of one of the bench's methods or a "
            r"section.key of the configuration, got a key no method takes \(their "
            r"arguments: vanilla: loss; manifold_mixup: alpha, eligible, loss\)",
        ),
        (
            {"sweep": {"train.epohcs": [1, 2]}},
            r"sweep 'train.epohcs': unknown key 'train.epohcs' \(did you mean 'train.epochs'\?\)",
        ),
        ({"sweep": {"alpha": [0.5, 0.5]}}, r"sweep 'alpha': expected distinct values"),
        ({"sweep": {"alpha": 0.5}}, r"sweep 'alpha': expected a non-empty list of values, got 0.5"),
        ({"sweep": {"train.seed": [0, 1]}}, r"sweep 'train.seed': expected seeds under 'seeds'"),
        (
            {"sweep": {"alpha": ["a", "b"]}},
            r"methods\[1\]: method 'manifold_mixup': argument 'alpha' expected float, got 'a'",
        ),
        (
            {"sweep": {"alpha": [1.0, 2.0]}, "methods": [{"name": "manifold_mixup", "alpha": 1.0}]},
            r"methods\[0\]: sets 'alpha', which the sweep sweeps; give it in one place",
        ),
        (
            {"sweep": {"alpha": [1, 1.0]}, "methods": ["manifold_mixup"]},
            r"two runs are both named 'manifold_mixup-alpha1-s0' \(methods\[0\] α=1 and methods\[0\] α=1\); give one method a "
            r"'label', or sweep values that differ once written as names",
        ),
        (
            {"methods": [{"name": "cutmix", "kwargs": {"probb": 1}}]},
            r"methods\[0\]: method 'cutmix': unknown argument 'probb'",
        ),
    ],
)
def test_bad_sweeps_and_method_settings_fail_before_training(tmp_path, capsys, changes, match):
    import re

    path = _bench(tmp_path, **changes)
    assert main(["bench", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_plugin_swept_against_manifold_mixup_without_vanilla_gets_a_sweep_table_and_plot(
    tmp_path, helpers_on_path, capsys
):
    """The issue's 'done when': a plugin with two settings, benched in a sweep over one of them against manifold
    mixup, no vanilla; the report shows the sweep table and plot with the right labels."""
    path = _bench(
        tmp_path,
        methods=[{"name": "noisy:InputNoise", "label": "noise", "kwargs": {"prob": 0.5}}, "manifold_mixup"],
        sweep={"sigma": [0.05, 0.2]},
        seeds=[0, 1],
    )
    out = tmp_path / "out"
    assert main(["bench", str(path), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "bench sw: 6 of 6 runs in the report" in text
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| condition |"))
    # the baseline (the bench's first method) first
    assert [c.strip() for c in header.split("|")[2:-1]] == ["noise sigma=0.05", "noise sigma=0.2", "manifold_mixup"], (
        header
    )
    assert "Baseline for the differences: noise sigma=0.05 (the bench has no vanilla, so its first method" in md
    assert "### Sweep over sigma" in md
    sweep_head = next(line for line in md.splitlines() if line.startswith("| metric | method |"))
    assert [c.strip() for c in sweep_head.split("|")[1:-1]] == ["metric", "method", "sigma=0.05", "sigma=0.2"]
    assert "Not swept over sigma:" in md  # manifold_mixup, in a table of its own: no empty cells
    assert (out / "plots" / "sweep-sigma.png").stat().st_size > 10_000
    # sweep.csv: the same means as the main table, per swept value
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    table = list(csv.DictReader((out / "table.csv").open()))
    acc = {r["label"]: r for r in table if (r["condition"], r["metric"]) == ("test", "acc")}
    got = {
        (r["value"], r["method"]): float(r["mean"]) for r in rows if (r["condition"], r["metric"]) == ("test", "acc")
    }
    assert got[("0.05", "noise")] == float(next(iter(acc.values()))["noise sigma=0.05 mean"])
    assert got[("0.2", "noise")] == float(next(iter(acc.values()))["noise sigma=0.2 mean"])
    assert got[("not swept", "manifold_mixup")] == float(next(iter(acc.values()))["manifold_mixup mean"])
    # each value's records say what was swept, and the run trained with it
    recs = read_records(out / "results" / "noise-sigma0.2-s1" / "calibration.jsonl")
    assert {json.dumps(r["sweep"]) for r in recs} == {'{"sigma": 0.2}'}
    assert load_checkpoint(out / "runs" / "noise-sigma0.2-s1" / "model.safetensors")[1]["method"]["settings"] == {
        "sigma": 0.2,
        "prob": 0.5,
        "loss": "bce_softmax",
    }
    # idempotent: a second bench trains nothing
    assert main(["bench", str(path), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("done already") == 6


def _records(data="cifar10", model="preactresnet18"):
    """Synthetic records of an eligible-set sweep (hand-chosen accuracies), two seeds each."""
    from mmix_eval.evaluate.records import record

    rows = []
    values = {(0,): (90.0, 92.0), (0, 1, 2): (95.0, 96.0)}
    for eligible, accs in values.items():
        for seed, acc in enumerate(accs):
            run = f"mm-{'+'.join(map(str, eligible))}-s{seed}"
            base = {
                "run": run,
                "model": model,
                "method": "manifold_mixup",
                "data": data,
                "subset": "x",
                "n": 100,
                "eval_seed": 0,
                "train_seed": seed,
                "evaluator": "calibration",
                "sweep": {"eligible": list(eligible)},
                "method_settings": {"alpha": 2.0, "eligible": list(eligible), "loss": "bce_softmax"},
            }
            r = record(base, "clean", "acc", acc)
            r.update(direction="higher", format=".2f", metric_label="accuracy (%)", headline=True)
            rows.append(r)
    for seed, acc in enumerate((88.0, 89.0)):
        r = record(
            {
                "run": f"v-s{seed}",
                "model": model,
                "method": "vanilla",
                "data": data,
                "subset": "x",
                "n": 100,
                "eval_seed": 0,
                "train_seed": seed,
                "evaluator": "calibration",
                "method_settings": {"loss": "bce_softmax"},
            },
            "clean",
            "acc",
            acc,
        )
        r.update(direction="higher", format=".2f", metric_label="accuracy (%)", headline=True)
        rows.append(r)
    return rows


def test_sweep_table_means_and_the_papers_table5_beside_them(tmp_path):
    from mmix_eval.evaluate.records import write_records
    from mmix_eval.report import build_report

    write_records(_records(), tmp_path / "res" / "calibration")
    res = build_report([tmp_path / "res"], tmp_path / "rep", "vanilla")
    md = (tmp_path / "rep" / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| clean: accuracy (%) | manifold_mixup |"))
    # mean ± sample std over the two seeds, by hand: (90, 92) -> 91 ± 1.41; (95, 96) -> 95.5 ± 0.71; the best, not bold:
    # paired by seed the differences 5 and 4 give [−1.85, +10.85] with one degree of freedom (no bold without a test)
    assert line == "| clean: accuracy (%) | manifold_mixup | 91.00 ± 1.41 (n=2) | 95.50 ± 0.71 (n=2) |"  # no empty cell
    paper = next(ln for ln in md.splitlines() if "paper (Table 5)" in ln)
    assert paper == "| clean: accuracy (%) | paper (Table 5): manifold_mixup | *96.73* | *97.23* |"
    vanilla = next(ln for ln in md.splitlines() if ln.startswith("| clean: accuracy (%) | vanilla |"))
    assert vanilla == "| clean: accuracy (%) | vanilla | 88.50 ± 0.71 (n=2) |"  # the unswept method: its own table
    assert res["table"].methods == ["vanilla", "manifold_mixup S=[0]", "manifold_mixup S=[0, 1, 2]"]
    rows = list(csv.DictReader((tmp_path / "rep" / "sweep.csv").open()))
    assert [(r["value"], r["method"], r["mean"], r["paper"]) for r in rows] == [
        ("[0]", "manifold_mixup", "91.0", "96.73"),
        ("[0, 1, 2]", "manifold_mixup", "95.5", "97.23"),
        ("not swept", "vanilla", "88.5", ""),
    ]
    assert (tmp_path / "rep" / "plots" / "sweep-eligible.png").exists()
    # not the paper's setting (another data set): no paper row
    write_records(_records(data="digits"), tmp_path / "res2" / "calibration")
    build_report([tmp_path / "res2"], tmp_path / "rep2", "vanilla")
    assert "paper (Table 5)" not in (tmp_path / "rep2" / "report.md").read_text()


# ---------------------------------------------------------------- models made elsewhere


class OfficialBlock(torch.nn.Module):
    """The official Manifold Mixup code's PreActBlock (models/preresnet.py), names and forward as there."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = torch.nn.BatchNorm2d(in_planes)
        self.conv1 = torch.nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class OfficialPreActResNet(torch.nn.Module):
    """The official code's PreActResNet (supervised/models/preresnet.py), structure and names as there: conv1,
    layer1..4, then avg_pool2d(4) and linear, no final BN; no normalisation inside (the official data pipeline
    normalises). ``in_channels`` only so that the error tests can use 1-channel digits."""

    def __init__(self, num_blocks=(2, 2, 2, 2), initial_channels=4, num_classes=10, in_channels=3):
        super().__init__()
        self.in_planes = initial_channels
        self.conv1 = torch.nn.Conv2d(in_channels, initial_channels, 3, 1, 1, bias=False)
        for i, (n, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2)), start=1):
            planes, layers = initial_channels * 2 ** (i - 1), []
            for s in [stride] + [1] * (n - 1):
                layers.append(OfficialBlock(self.in_planes, planes, s))
                self.in_planes = planes
            setattr(self, f"layer{i}", torch.nn.Sequential(*layers))
        self.linear = torch.nn.Linear(initial_channels * 8, num_classes)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


OFFICIAL_KEYS = re.compile(
    r"^(conv1\.weight|linear\.(weight|bias)|layer[1-4]\.\d+\.(bn[12]\.(weight|bias|running_mean|"
    r"running_var|num_batches_tracked)|conv[12]\.weight|shortcut\.0\.weight))$"
)


def _official(num_classes=10, in_channels=3, seed=0, num_blocks=(2, 2, 2, 2)):
    torch.manual_seed(seed)
    net = OfficialPreActResNet(num_blocks=num_blocks, num_classes=num_classes, in_channels=in_channels)
    for m in net.modules():  # non-trivial BatchNorm statistics, so a misplaced one shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def _rgb_folder(root: Path, classes: int = 10, size: int = 32, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("model,blocks", [("preactresnet18", (2, 2, 2, 2)), ("preactresnet34", (3, 4, 6, 3))])
def test_official_state_dict_with_exactly_its_keys_gives_the_official_logits(tmp_path, model, blocks):
    """Exactly the official key set, no normalisation given: the official layout's CIFAR mean/std are the
    default, and the logits equal the official forward on normalised inputs."""
    from mmix_eval.data import load_data
    from mmix_eval.foreign import OFFICIAL_CIFAR_MEAN, OFFICIAL_CIFAR_STD, Foreign, load_foreign, official_to_mmix

    net = _official(num_classes=10, in_channels=3, num_blocks=blocks)
    sd = net.state_dict()
    assert all(OFFICIAL_KEYS.match(k) for k in sd), [k for k in sd if not OFFICIAL_KEYS.match(k)]
    assert not any(k.startswith("bn.") for k in sd)
    mapped = official_to_mmix(sd)
    assert (
        mapped["stages.0.0.weight"] is sd["conv1.weight"]
        and mapped["stages.0.1.bn1.weight"] is sd["layer1.0.bn1.weight"]
    )
    assert mapped["stages.1.0.shortcut.weight"] is sd["layer2.0.shortcut.0.weight"]
    assert mapped["head.linear.weight"] is sd["linear.weight"] and len(mapped) == len(sd)
    folder = _rgb_folder(tmp_path / "rgb")
    path = tmp_path / "official.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    model_, meta = load_foreign(path, "cpu", Foreign(model, f"imagefolder:{folder}", {"width": 4}))
    assert meta["method"]["settings"]["key_layout"] == "official"
    assert (
        meta["model"]["kwargs"]["mean"] == OFFICIAL_CIFAR_MEAN and meta["model"]["kwargs"]["std"] == OFFICIAL_CIFAR_STD
    )
    x = load_data(f"imagefolder:{folder}", need_train=False).test.x.float() / 255
    mean, std = torch.tensor(OFFICIAL_CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(OFFICIAL_CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, theirs = model_(x), net((x - mean) / std)
    assert (ours - theirs).abs().max().item() < 1e-5
    # He et al.'s variant is a different network: the official keys do not fit it
    with pytest.raises(UserError, match=r"5 missing, first \['head.bn.bias', 'head.bn.num_batches_tracked'"):
        load_foreign(path, "cpu", Foreign(model + "_he", f"imagefolder:{folder}", {"width": 4}))


def test_official_layout_with_a_given_normalisation_and_one_channel(tmp_path):
    from mmix_eval.foreign import Foreign, load_foreign

    net = _official(num_classes=10, in_channels=1)
    path = tmp_path / "official.pt"
    torch.save(net.state_dict(), path)
    model, meta = load_foreign(path, "cpu", Foreign("preactresnet18", "digits", {"width": 4}, [0.5], [0.25]))
    assert meta["model"]["kwargs"]["mean"] == [0.5] and "normalisation" not in meta["method"]["settings"]
    x = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - 0.5) / 0.25), atol=1e-5)


def test_state_dicts_that_do_not_fit_are_one_line_errors(tmp_path, capsys):
    net = _official(num_classes=10, in_channels=1)
    sd = net.state_dict()
    bad = dict(sd)
    del bad["linear.weight"]
    bad["extra.weight"] = torch.zeros(2)
    torch.save(bad, tmp_path / "bad.pt")
    torch.save(net, tmp_path / "whole.pt")  # a whole model: a pickle of objects, refused by weights_only=True
    torch.save(sd, tmp_path / "ok.pt")
    base = ["calibration", "--data", "digits", "--limit", "50", "--out", str(tmp_path / "res"), "--no-progress"]
    cases = [
        (
            ["--ckpt", str(tmp_path / "bad.pt"), "--model", "preactresnet18", "--model-arg", "width=4"],
            "state dict does not fit model 'preactresnet18' (key layout official): 1 missing, first ['head.linear.weight']; "
            "1 unexpected, first ['extra.weight']",
        ),
        (
            ["--ckpt", str(tmp_path / "ok.pt"), "--model", "preactresnet18", "--model-arg", "width=8"],
            "tensor 'stages.0.0.weight' has shape (4, 1, 3, 3) in the file, the model (--model-arg {'width': 8}) expects (8, 1, 3, 3)",
        ),
        (
            ["--ckpt", str(tmp_path / "whole.pt"), "--model", "preactresnet18"],
            "expected a state dict that torch.load(weights_only=True) reads, got a file it refuses",
        ),
        (["--ckpt", str(tmp_path / "ok.pt")], "refused without unpickling it"),
        (["--ckpt", str(tmp_path / "ok.pt"), "--model", "preactresnet99"], "unknown model 'preactresnet99'"),
        (["--ckpt", str(tmp_path / "ok.pt"), "--mean", "0.5"], "--mean: expected --model too"),
        (
            ["--ckpt", str(tmp_path / "ok.pt"), "--model", "preactresnet18", "--mean", "0.5"],
            "--mean/--std: expected both",
        ),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)
    assert not (tmp_path / "res").exists()
    # without --data: the state dict does not say what it was trained on
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(tmp_path / "ok.pt"),
                "--model",
                "preactresnet18",
                "--out",
                str(tmp_path / "res"),
            ]
        )
        == 2
    )
    assert "--data: expected the data set model 'preactresnet18' was trained on" in capsys.readouterr().err


def test_torchvision_state_dict_evaluates_and_is_labelled_by_its_file(tmp_path, capsys):
    import torchvision

    from mmix_eval.data import load_data

    torch.manual_seed(0)
    net = torchvision.models.get_model("resnet18", weights=None, num_classes=10).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "tv_resnet.safetensors"))
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(tmp_path),
                "--model",
                "torchvision:resnet18",
                "--data",
                "digits",
                "--limit",
                "40",
                "--mean",
                "0.1",
                "--std",
                "0.5",
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 2
    )  # digits has one channel: the torchvision net's 3-channel stem does not fit
    assert "tensor 'net.conv1.weight' has shape (64, 3, 7, 7) in the file" in capsys.readouterr().err
    net1 = torchvision.models.get_model("resnet18", weights=None, num_classes=10)
    net1.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    net1.eval()
    save_file({k: v.contiguous() for k, v in net1.state_dict().items()}, str(tmp_path / "tv_resnet.safetensors"))
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(tmp_path),
                "--model",
                "torchvision:resnet18",
                "--data",
                "digits",
                "--limit",
                "40",
                "--mean",
                "0.2",
                "--std",
                "0.5",
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = read_records(tmp_path / "res" / "tv_resnet" / "calibration.jsonl")
    acc = next(r["value"] for r in rows if (r["condition"], r["metric"]) == ("test", "acc"))
    assert rows[0]["method"] == "external" and rows[0]["method_label"] == "tv_resnet"
    # the same number as a plain loop over the same 40 images, normalised by hand
    data = load_data("digits")
    idx = np.sort(np.random.default_rng([0, 0x74657374]).permutation(len(data.test.y))[:40])
    x, y = data.test.x[torch.from_numpy(idx)], data.test.y[torch.from_numpy(idx)]
    with torch.no_grad():  # a plain loop: [0, 1] images, normalised by hand, straight into torchvision's network
        logits = net1((x.float() / 255 - 0.2) / 0.5)
    assert abs((logits.argmax(1) == y).float().mean().item() * 100 - acc) < 1e-4


@pytest.mark.slow
def test_official_state_dict_through_every_evaluator_on_real_cifar10(tmp_path, capsys, shared_decode_cache):
    """The issue's command, on the shared CIFAR-10 JPEGs: a state dict with exactly the official PreActResNet18
    key set, its normalisation the official layout's default, through every built-in evaluator and a report."""
    archive = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        pytest.skip("../shared/data not beside the checkout")
    from mmix_eval.report import build_report

    net = _official(num_classes=10, in_channels=3)
    assert all(OFFICIAL_KEYS.match(k) for k in net.state_dict())
    torch.save(net.state_dict(), tmp_path / "x.pt")
    common = [
        "--ckpt",
        str(tmp_path / "x.pt"),
        "--key-layout",
        "official",
        "--model",
        "preactresnet18",
        "--model-arg",
        "width=4",
        "--data",
        f"imagefolder:{archive}",
        "--limit",
        "100",
        "--out",
        str(tmp_path / "res"),
        "--no-progress",
    ]
    assert main(["deformations", *common]) == 0, capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                *common,
                "--evaluators",
                "fgsm,calibration,corruptions,spectra,ood,attack",
                "--set",
                "fgsm.attack=fgsm_official",
                "--set",
                "corruptions.source=generated",
                "--set",
                "corruptions.severities=3",
                "--set",
                "attack.attack=pgd",
                "--set",
                "ood.ood=noise:gaussian",
            ]
        )
        == 0
    ), capsys.readouterr().err
    files = sorted(p.name for p in (tmp_path / "res" / "x").glob("*.jsonl"))
    assert files == [
        "attack-pgd7.jsonl",
        "calibration.jsonl",
        "corruptions.jsonl",
        "deformations.jsonl",
        "fgsm-fgsm_official.jsonl",
        "ood.jsonl",
        "spectra.jsonl",
    ], files
    rows = read_records(tmp_path / "res" / "x" / "deformations.jsonl")
    conds = [r["condition"] for r in rows if r["metric"] == "acc"]
    assert conds[0] == "clean" and "rotation20" in conds and rows[0]["data"] == f"imagefolder:{archive}"
    official = read_records(tmp_path / "res" / "x" / "fgsm-fgsm_official.jsonl")
    assert [r["condition"] for r in official if r["metric"] == "acc"] == [
        "clean",
        "official-eps0.01",
        "official-eps0.03",
    ]
    build_report([tmp_path / "res"], tmp_path / "rep", None)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "official code's FGSM ε = 0.03 (normalised; (1.890, 1.863, 2.001)/255 in pixels)" in md


def test_timm_state_dict_evaluates_through_timm_by_name(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "timm18.safetensors"))
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(tmp_path / "timm18.safetensors"),
                "--model",
                "timm:resnet18",
                "--data",
                "digits",
                "--limit",
                "30",
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 0
    ), capsys.readouterr().err
    rows = read_records(tmp_path / "res" / "timm18" / "calibration.jsonl")
    assert rows[0]["model"] == "timm:resnet18" and rows[0]["method_settings"]["key_layout"] == "plain"
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(tmp_path / "timm18.safetensors"),
                "--model",
                "timm:resnet1888",
                "--data",
                "digits",
                "--out",
                str(tmp_path / "res2"),
            ]
        )
        == 2
    )
    assert "unknown timm model 'resnet1888'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_baselines_preset_runs_on_digits_side_by_side(tmp_path, capsys, monkeypatch):
    """configs/bench/baselines-digits.yaml as shipped (CI-sized): six methods x two seeds, one report, with the
    default launcher (worker processes on the free cores; conftest's MMIX_EVAL_JOBS=1 off)."""
    monkeypatch.delenv("MMIX_EVAL_JOBS")
    out = tmp_path / "bl"
    assert (
        main(["bench", str(ROOT / "configs" / "bench" / "baselines-digits.yaml"), "--out", str(out), "--no-progress"])
        == 0
    ), capsys.readouterr().err
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| condition |"))
    assert [c.strip() for c in header.split("|")[2:-1]] == [  # the YAML's order
        "vanilla",
        "label_smoothing",
        "input_mixup",
        "cutmix",
        "regmixup",
        "manifold_mixup",
    ]
    # the cost table: RegMixup's clean + mixed batch through the network is visible as 2 forward passes per step
    cost = {
        ln.split("|")[1].strip(): ln.split("|")[2].strip()
        for ln in md.split("### Training cost")[1].split("###")[0].splitlines()
        if ln.startswith("| ") and not ln.startswith("| method")
    }
    assert cost["regmixup"] == "2" and cost["vanilla"] == "1" and cost["manifold_mixup"] == "1"
    assert (out / "claims.md").read_text().count(" − vanilla, ") >= 5  # a generated sentence per method
    settings = {r["method"]: r["method_settings"] for r in read_records(out / "records.jsonl")}
    assert settings["label_smoothing"] == {"epsilon": 0.1, "loss": "bce_softmax"}
    assert settings["regmixup"] == {"alpha": 10.0, "eta": 1.0, "loss": "bce_softmax"}
    assert settings["cutmix"] == {"alpha": 1.0, "prob": 0.5, "loss": "bce_softmax"}
    table = list(csv.DictReader((out / "table.csv").open()))
    clean = next(r for r in table if (r["evaluator"], r["condition"], r["metric"]) == ("", "clean", "acc"))
    assert all(float(clean[f"{m} mean"]) > 50 for m in settings)  # every method learned (10 classes: chance is 10 %)


def test_a_swept_training_key_names_the_columns_of_every_method():
    from mmix_eval.report.labels import method_labels

    rows = [
        {
            "run": f"{m}-e{e}",
            "method": m,
            "method_settings": {"loss": "bce_softmax"},
            "method_label": None,
            "sweep": {"train.epochs": e},
        }
        for m in ("vanilla", "cutmix")
        for e in (10, 40)
    ]
    rows.append(
        {
            "run": "mm",
            "method": "manifold_mixup",
            "method_settings": {"alpha": 2.0},
            "method_label": "MM",
            "sweep": {"alpha": 0.5, "train.epochs": 10},
        }
    )
    assert method_labels(rows) == {
        "vanilla-e10": "vanilla epochs=10",
        "vanilla-e40": "vanilla epochs=40",
        "cutmix-e10": "cutmix epochs=10",
        "cutmix-e40": "cutmix epochs=40",
        "mm": "MM α=0.5 epochs=10",
    }
