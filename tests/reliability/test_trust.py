"""Issue 14 (numbers a user can trust): class order, comparable records, validation before training, labels, locks."""

from __future__ import annotations

import shutil

import pytest
from builders import write_tree
from conftest import ROOT, raises_as_shown

from mmix_eval.cli import main
from mmix_eval.evaluate.records import read_records


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A checkpoint trained on an image folder of classes cat, dog, emu (pixels encode the class)."""
    root = tmp_path_factory.mktemp("trust")
    tree = write_tree(root / "tree", per_class=12)
    run = root / "run"
    assert (
        main(
            [
                "train",
                "--data",
                f"imagefolder:{tree}",
                "--epochs",
                "8",
                "--set",
                "train.device=cpu",
                "--set",
                "model.kwargs={width: 4}",
                "--set",
                "train.batch_size=12",
                "--set",
                "train.crop_padding=0",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    return tree, run / "model.safetensors"


def acc_of(folder):
    rows = read_records(next(folder.glob("*/calibration.jsonl")))
    return next(r["value"] for r in rows if r["condition"] == "test" and r["metric"] == "acc"), rows


def test_renamed_class_folder_is_refused_then_remapped_by_name(folder_run, tmp_path, capsys):
    tree, ckpt = folder_run
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(ckpt),
                "--data",
                f"imagefolder:{tree}",
                "--out",
                str(tmp_path / "same"),
                "--no-progress",
            ]
        )
        == 0
    )
    base_acc, _ = acc_of(tmp_path / "same")
    assert base_acc >= 90.0  # the model learned its classes, so shuffled labels would score differently
    renamed = tmp_path / "renamed"
    shutil.copytree(tree, renamed)
    for split in ("train", "test"):  # 'cat' -> 'zcat': the alphabetical order, hence every label, shifts
        (renamed / split / "cat").rename(renamed / split / "zcat")
    code = main(
        [
            "calibration",
            "--ckpt",
            str(ckpt),
            "--data",
            f"imagefolder:{renamed}",
            "--out",
            str(tmp_path / "bad"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "class 0 is 'dog' in the evaluation data but 'cat' in the checkpoint" in err
    assert not (tmp_path / "bad").exists()
    # with a map, the labels are remapped and the accuracy is the one on the original folder
    cmap = tmp_path / "map.yaml"
    cmap.write_text("zcat: cat\n")
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(ckpt),
                "--data",
                f"imagefolder:{renamed}",
                "--class-map",
                str(cmap),
                "--out",
                str(tmp_path / "mapped"),
                "--no-progress",
            ]
        )
        == 0
    )
    mapped_acc, rows = acc_of(tmp_path / "mapped")
    assert mapped_acc == base_acc and {r["settings"]["class_map"] for r in rows} == {str(cmap)}
    # by-name cannot match 'zcat' to any class of the checkpoint: said so
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(ckpt),
                "--data",
                f"imagefolder:{renamed}",
                "--class-map",
                "by-name",
                "--out",
                str(tmp_path / "byname"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "class 'zcat' of" in capsys.readouterr().err


def test_reordered_but_same_names_remap_by_name(folder_run, tmp_path, capsys):
    tree, ckpt = folder_run
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(ckpt),
                "--data",
                f"imagefolder:{tree}",
                "--out",
                str(tmp_path / "same"),
                "--no-progress",
            ]
        )
        == 0
    )
    base_acc, _ = acc_of(tmp_path / "same")
    moved = tmp_path / "moved"
    shutil.copytree(tree, moved)
    for split in ("train", "test"):  # same three names, but 'a_emu' now sorts first
        (moved / split / "emu").rename(moved / split / "a_emu")
    cmap = tmp_path / "m.yaml"
    cmap.write_text("a_emu: emu\n")
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(ckpt),
                "--data",
                f"imagefolder:{moved}",
                "--class-map",
                str(cmap),
                "--out",
                str(tmp_path / "m"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert acc_of(tmp_path / "m")[0] == base_acc


def test_report_refuses_records_that_cannot_be_compared_and_splits_them_on_request(tmp_path, capsys):
    from builders import fake_results

    fake_results(tmp_path / "res" / "a", data="digits")
    fake_results(tmp_path / "res" / "b", data="cifar10-other-copy")
    code = main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert code == 2 and "got 2 groups that cannot" in err and "data cifar10-other-copy" in err and "data digits" in err
    assert not (tmp_path / "rep").exists()
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep"), "--split-by"]) == 0
    parts = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert parts == ["group1-digits-n100", "group2-cifar10-other-copy-n100"]
    for p in parts:  # each report holds its own runs only: 2 seeds per method, never 4
        md = (tmp_path / "rep" / p / "report.md").read_text()
        assert "(n=2)" in md and "(n=4)" not in md


def test_a_duplicate_run_is_an_error_naming_both_files(tmp_path, capsys):
    import shutil

    from builders import fake_results

    res = fake_results(tmp_path / "res")
    shutil.copytree(res / "vanilla-s0", res / "copy" / "vanilla-s0")
    assert main(["report", str(res), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "run 'vanilla-s0' is in two places" in err and "copy/vanilla-s0" in err
    shutil.rmtree(res / "copy")
    shutil.copytree(res / "vanilla-s0", res / "vanilla-again")  # the same method and seed under another run name
    for f in (res / "vanilla-again").glob("*.jsonl"):
        f.write_text(f.read_text().replace('"run": "vanilla-s0"', '"run": "vanilla-again"'))
    assert main(["report", str(res), "--out", str(tmp_path / "rep")]) == 2
    assert "vanilla seed 0 is both run 'vanilla-again' and run 'vanilla-s0'" in capsys.readouterr().err


def test_every_imported_package_is_declared_and_every_declared_one_is_used():
    """matplotlib and scipy were imported but arrived only through netcal; nothing works by accident now."""
    import ast
    import re
    import sys

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = ROOT
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    name = lambda req: re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()
    declared = {name(r) for r in project["dependencies"]}
    extras = {name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    dist = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml"}  # import name -> distribution name
    imported = set()
    for f in (root / "mmix_eval").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {dist.get(m, m).lower() for m in imported if m not in sys.stdlib_module_names and m != "mmix_eval"}
    assert third_party - declared - extras == set()
    # optional imports: --launcher slurm, --model timm:NAME, hf:// and push, export --to mlflow / trackio (wandb and
    # tensorboard through importlib, by the tracker's name)
    assert third_party & extras == {"submitit", "timm", "huggingface_hub", "mlflow", "trackio"}
    # declared but not imported: only the security floor on a dependency's dependency (see pyproject.toml)
    assert declared - third_party == {"requests"}


@pytest.mark.parametrize("prefix", [b"<" + b"\0" * 7, b"\x14" + b"\0" * 7, b"<html>\0\0"])
def test_a_pickle_behind_a_short_prefix_is_named_a_pickle(tmp_path, prefix):
    import pickle

    from mmix_eval.checkpoint import read_header
    from mmix_eval.errors import UserError

    f = tmp_path / "model.safetensors"
    f.write_bytes(prefix + pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UserError, match=f"got a pickle behind a {len(prefix)}-byte prefix; refused without unpickling"):
        read_header(f)


def test_a_safetensors_length_field_that_looks_like_a_pickle_opcode_is_not_refused(tmp_path):
    import json
    import struct

    from mmix_eval.checkpoint import read_header

    header = json.dumps({"__metadata__": {"pad": "x" * (0x28010 - 40)}}).encode()
    n = len(header)
    assert struct.pack("<Q", n)[1:3] == b"\x80\x02"  # bytes 1-2 of the length read like a pickle's opcode
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", n) + header)
    assert read_header(f)[0]["__metadata__"]["pad"].startswith("xxx")


def test_resume_with_every_state_file_damaged_refuses_instead_of_restarting(tmp_path):
    from conftest import make_data, tiny_config

    from mmix_eval.errors import UserError
    from mmix_eval.training import train

    run, data, cfg = tmp_path / "run", make_data(), tiny_config("vanilla", epochs=3)
    assert train(cfg, run, progress=False, data=data, stop_after_epoch=2) is None  # "killed" after epoch 2
    for name in ("state.pt", "state.prev.pt"):
        (run / name).write_bytes(b"garbage")
    with (
        pytest.warns(UserWarning, match="unreadable state file"),
        raises_as_shown(
            UserError,
            match=r"expected a readable state file, got only damaged ones \(state.pt, state.prev.pt\); pass --overwrite",
        ),
    ):
        train(cfg, run, resume=True, progress=False, data=data)
    assert (run / "state.pt").read_bytes() == b"garbage" and not (run / "model.safetensors").exists()


PLUGIN = """
import torch

from mmix_eval.methods import Method, StepOutput, soft_targets


class Noisy(Method):
    name = "noisy"
    SIGMA = {sigma}

    def step(self, model, x, y, rng):
        logits = model((x + self.SIGMA * torch.randn_like(x)).clamp(0, 1))
        return StepOutput(self.loss_fn(logits, soft_targets(y, logits.shape[1])), logits)
"""


def test_an_edited_plugin_is_retrained_not_reused(tmp_path, monkeypatch, capsys):
    import sys

    import yaml

    (tmp_path / "my_regs.py").write_text(PLUGIN.format(sigma=0.05))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_regs", None)
    bench = tmp_path / "b.yaml"
    bench.write_text(
        yaml.safe_dump(
            {
                "data": {"name": "digits", "train_limit": 100, "test_limit": 40},
                "model": {"name": "smallnet", "kwargs": {"width": 4}},
                "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
                "methods": ["my_regs:Noisy"],
                "seeds": [0],
                "evaluate": {"evaluators": ["calibration"]},
                "report": {"baseline": None},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 0
    assert "my_regs_Noisy-s0: trained" in capsys.readouterr().out
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 0
    assert "my_regs_Noisy-s0: done already" in capsys.readouterr().out
    (tmp_path / "my_regs.py").write_text(PLUGIN.format(sigma=0.2))  # the plugin edited, its settings unchanged
    sys.modules.pop("my_regs", None)
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "re-training, the method changed since it was trained (source_sha256)" in captured.err


@pytest.mark.parametrize(
    "report, message",
    [
        (
            {"baseline": "vanila"},
            "'report.baseline' expected one of the bench's methods (vanilla, input_mixup) or null, got 'vanila'",
        ),
        (
            {"checks": ["manifold_mixup.rotation20 >= vanilla.rotation20"]},
            "method 'manifold_mixup' expected one of the bench's methods",
        ),
        ({"checks": ["vanilla.rotation20 => input_mixup.rotation20"]}, "expected 'LEFT OP RIGHT' with OP one of"),
    ],
)
def test_report_settings_are_checked_before_any_training(tmp_path, capsys, report, message):
    import yaml

    bench = tmp_path / "b.yaml"
    bench.write_text(
        yaml.safe_dump(
            {
                "data": {"name": "digits", "train_limit": 100, "test_limit": 40},
                "model": {"name": "smallnet", "kwargs": {"width": 4}},
                "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
                "methods": ["vanilla", "input_mixup"],
                "seeds": [0],
                "report": report,
            }
        )
    )
    assert main(["bench", str(bench), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before the first training step


def test_a_bench_without_vanilla_reports_against_its_first_method():
    from mmix_eval.bench import baseline_and_checks

    assert baseline_and_checks({}, [], ["manifold_mixup", "my_regs:X"], "b") == "manifold_mixup"
    assert baseline_and_checks({}, [], ["input_mixup", "vanilla"], "b") == "vanilla"
    assert baseline_and_checks({"baseline": None}, [], ["vanilla"], "b") is None


MODEL_PLUGIN = '''
from torch import nn

from mmix_eval.models.base import Normalize, StagedNet


class Flat(StagedNet):
    """Forgets to pool: the head sees every pixel and returns one logit per pixel and class."""

    def __init__(self, num_classes, in_channels, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stages = nn.ModuleList([nn.Conv2d(in_channels, 4, 3, 1, 1)])
        self.head = nn.Conv2d(4, num_classes, 1)


def flat(num_classes, in_channels, mean, std):
    return Flat(num_classes, in_channels, mean, std)
'''


def _bench_yaml(tmp_path, methods, model=None):
    import yaml

    bench = tmp_path / "b.yaml"
    bench.write_text(
        yaml.safe_dump(
            {
                "data": {"name": "digits", "train_limit": 100, "test_limit": 40},
                "model": model or {"name": "smallnet", "kwargs": {"width": 4}},
                "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
                "methods": methods,
                "seeds": [0, 1],
                "evaluate": {"evaluators": ["calibration"]},
            }
        )
    )
    return bench


def test_bench_checks_every_runs_eligible_layers_before_the_first_trains(tmp_path, capsys):
    # vanilla would train first; the mistake is in the last method. Before: found after vanilla had trained.
    bench = _bench_yaml(tmp_path, ["vanilla", {"name": "manifold_mixup", "eligible": [0, 7]}])
    assert main(["bench", str(bench), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bench b, run manifold_mixup-s0: eligible layer 7: expected one of 0..3 for SmallNet" in err
    assert not (tmp_path / "out").exists()


def test_a_model_plugin_with_the_wrong_output_shape_fails_on_the_probe(tmp_path, monkeypatch, capsys):
    import sys

    (tmp_path / "my_nets.py").write_text(MODEL_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_nets", None)
    bench = _bench_yaml(tmp_path, ["vanilla"], model={"name": "my_nets:flat"})
    assert main(["bench", str(bench), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        "model 'my_nets:flat': expected logits of shape (2, 10) (batch, classes) on a 2-image probe batch, "
        "got (2, 10, 8, 8)" in err
    )
    assert not (tmp_path / "out").exists()
    # train checks the same, before its run folder is made
    code = main(
        [
            "train",
            "--data",
            "digits",
            "--method",
            "vanilla",
            "--set",
            "model.name=my_nets:flat",
            "--epochs",
            "1",
            "--set",
            "train.device=cpu",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert code == 2 and "expected logits of shape (2, 10)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


from mmix_eval.methods import Method, StepOutput, soft_targets  # noqa: E402


class FlattensLogits(Method):
    """A method plugin returning the logits flattened to one row (the loss still a scalar with grad)."""

    def step(self, model, x, y, rng):
        logits = model(x)
        return StepOutput(self.loss_fn(logits, soft_targets(y, logits.shape[1])), logits.reshape(1, -1))


def test_a_method_returning_logits_of_the_wrong_shape_fails_on_the_probe(capsys, tmp_path):
    code = main(
        [
            "train",
            "--method",
            "reliability.test_trust:FlattensLogits",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--epochs",
            "1",
            "--set",
            "train.device=cpu",
            "--set",
            "model.kwargs={width: 4}",
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "method 'reliability.test_trust:FlattensLogits': step() expected logits of shape (2, 10) (batch, classes) "
        "on a 2-image probe batch, got (1, 20)"
        in err
    )
    assert not (tmp_path / "run").exists()


def test_yaml_labels_name_the_report_columns_and_checks_quote_them(tmp_path, capsys):
    import yaml

    bench = tmp_path / "b.yaml"
    bench.write_text(
        yaml.safe_dump(
            {
                "data": {"name": "digits", "train_limit": 100, "test_limit": 40},
                "model": {"name": "smallnet", "kwargs": {"width": 4}},
                "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
                "seeds": [0],
                "methods": [
                    "vanilla",
                    {"name": "manifold_mixup", "alpha": 0.2, "label": "manifold_mixup α=0.2"},
                    {"name": "manifold_mixup", "alpha": 2.0, "label": "mm (α=2.0)"},
                ],
                "evaluate": {"evaluators": ["calibration"]},
                "report": {
                    "checks": [
                        '"manifold_mixup α=0.2".test:acc >= 0',
                        "'mm (α=2.0)'.test:acc <= 100",
                        "vanilla.test:acc >= 101",
                    ]
                },
            }
        )
    )
    out = tmp_path / "out"
    # before: the labels were ignored (both columns 'manifold_mixup …' from their α) and a dotted label could not be checked
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 1  # the last check fails ...
    printed = capsys.readouterr().out
    assert 'PASS: "manifold_mixup α=0.2".test:acc >= 0' in printed and "PASS: 'mm (α=2.0)'.test:acc <= 100" in printed
    assert "FAIL: vanilla.test:acc >= 101" in printed
    md = (out / "report.md").read_text()  # ... after the report is written
    assert "| condition | vanilla | manifold_mixup α=0.2 | mm (α=2.0) |" in md
    rows = read_records(out / "records.jsonl")
    assert {r["method_label"] for r in rows} == {None, "manifold_mixup α=0.2", "mm (α=2.0)"}
    # a bench check may name a label; an unknown one is refused before training
    bad = yaml.safe_load(bench.read_text())
    bad["report"]["checks"] = ['"manifold_mixup α=0.3".test:acc >= 0']
    bench.write_text(yaml.safe_dump(bad))
    assert main(["bench", str(bench), "--out", str(tmp_path / "out2"), "--no-progress"]) == 2
    assert "method 'manifold_mixup α=0.3' expected one of the bench's methods" in capsys.readouterr().err


def test_one_label_for_two_different_methods_is_an_error():
    from mmix_eval.errors import UserError
    from mmix_eval.report.labels import method_labels

    row = lambda run, alpha, label: {
        "run": run,
        "method": "manifold_mixup",
        "method_settings": {"alpha": alpha},
        "method_label": label,
    }
    assert method_labels([row("a", 0.2, "mine"), row("b", 0.2, "mine")]) == {"a": "mine", "b": "mine"}
    with pytest.raises(UserError, match=r"label 'mine' names two different methods, run 'a' and run 'b'"):
        method_labels([row("a", 0.2, "mine"), row("b", 2.0, "mine")])


def test_a_second_bench_on_the_same_out_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    import json
    import socket
    import subprocess
    import sys

    bench = _bench_yaml(tmp_path, ["vanilla"])
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live bench holds the lock (before: both trained the same runs, or one failed mid-way)
        (out / ".bench.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "t0"}))
        assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"got one locked by pid {holder.pid} on {socket.gethostname()} since t0" in err
        assert not (out / "runs").exists() and (out / ".bench.lock").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, taken over with a warning, and released at the end
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 0
    assert f"taking over a stale lock (pid {holder.pid}, no longer running)" in capsys.readouterr().err
    assert (out / "report.md").exists() and not (out / ".bench.lock").exists()
    # a half-written lock file is stale too
    (out / ".bench.lock").write_text('{"pid": ')
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 0
    assert "taking over a stale lock (an unreadable lock file)" in capsys.readouterr().err
    assert not (out / ".bench.lock").exists()


def test_one_bin_count_per_report_stated_for_every_evaluator(folder_run, tmp_path):
    # before: clean ECE came from a fixed 15-bin computation beside the 10-bin ones, unlabelled
    _, ckpt = folder_run
    assert (
        main(
            [
                "evaluate",
                "--ckpt",
                str(ckpt),
                "--bins",
                "10",
                "--eps",
                "1",
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [r for f in (tmp_path / "res").glob("*/*.jsonl") for r in read_records(f)]
    assert {r["settings"]["bins"] for r in rows if r["metric"] in ("ece", "mce")} == {10}
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "bins 10" in html and "bins 15" not in html
    clean_ece = {line for line in md.splitlines() if line.startswith("| Clean test images: ECE") and "(n=" in line}
    assert len(clean_ece) == 1  # repeated at the head of each evaluator's ECE rows, always the one 10-bin value


def test_user_strings_are_drawn_literally_in_plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmix_eval.report.plots import plot_text

    # before: '$\\frac{$' crashed the mathtext parser (report rc 1), 'mix $5 a$b' was typeset, '_x' vanished
    for name in ["$\\frac{$", "mix $5 a$b", "_hidden"]:
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], label=plot_text(name))
        ax.set_title(plot_text(name))
        leg = ax.legend()
        fig.canvas.draw()  # mathtext parse errors surface here
        assert [t.get_text() for t in leg.get_texts()] == [plot_text(name)]
        plt.close(fig)
    assert plot_text("_hidden").endswith("_hidden") and not plot_text("_hidden").startswith("_")


HELPED = """
import torch

from mmix_eval.methods import Method, StepOutput, soft_targets
from noise_helper import SIGMA


class Noisy(Method):
    name = "noisy"

    def step(self, model, x, y, rng):
        logits = model((x + SIGMA * torch.randn_like(x)).clamp(0, 1))
        return StepOutput(self.loss_fn(logits, soft_targets(y, logits.shape[1])), logits)
"""


def test_an_edited_helper_module_of_a_plugin_is_noticed(tmp_path, monkeypatch, capsys):
    """Issue 32: a helper module the plugin imports was edited and the stale weights were reused."""
    import sys

    import yaml

    (tmp_path / "helped_regs.py").write_text(HELPED)
    (tmp_path / "noise_helper.py").write_text("SIGMA = 0.05\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in ("helped_regs", "noise_helper"):
        sys.modules.pop(m, None)
    bench = tmp_path / "b.yaml"
    bench.write_text(
        yaml.safe_dump(
            {
                "data": {"name": "digits", "train_limit": 100, "test_limit": 40},
                "model": {"name": "smallnet", "kwargs": {"width": 4}},
                "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
                "methods": ["helped_regs:Noisy"],
                "seeds": [0],
                "evaluate": {"evaluators": ["calibration"]},
                "report": {"baseline": None},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 0
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 0
    assert "helped_regs_Noisy-s0: done already" in capsys.readouterr().out
    (tmp_path / "noise_helper.py").write_text("SIGMA = 0.2\n")  # only the helper edited
    for m in ("helped_regs", "noise_helper"):
        sys.modules.pop(m, None)
    assert main(["bench", str(bench), "--out", str(out), "--no-progress"]) == 0
    assert "re-training, the method changed since it was trained (source_sha256)" in capsys.readouterr().err
