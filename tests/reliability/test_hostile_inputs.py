"""Hostile and unlucky inputs outside the result files (issue 32): YAML budgets, option bounds, the command
line's list and switch forms, and state dicts made elsewhere checked from their header before anything is
hashed or read. Each case is a one-line error (exit 2) and nothing written, or the documented behaviour."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmix_eval.cli import main
from mmix_eval.io import MAX_YAML_DEPTH, MAX_YAML_NODES, YamlLimit, parse_yaml
from mmix_eval.models import create_model


def one_error(capsys, argv, message, out: Path | None = None):
    assert main(argv) == 2, message
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], (message, err)
    assert "Traceback" not in err[0]
    if out is not None:
        assert not out.exists(), f"{out} was written"


def laughs(levels: int = 9) -> str:
    """A billion laughs: 9 levels of 9 aliases each expand to 9^9 (387 million) leaves."""
    rows = ["&a0 [a, a, a, a, a, a, a, a, a]"]
    for k in range(1, levels):
        rows.append(f"&a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]")
    return "[" + ", ".join(rows) + "]"


# ---------------------------------------------------------------- 2. YAML with a budget


@pytest.mark.parametrize(
    "where", ["report:\n  checks: {}\n", "launcher:\n  slurm_extra: {}\n", "evaluate:\n  fgsm: {{eps: {}}}\n"]
)
def test_an_alias_bomb_anywhere_in_a_bench_is_refused_before_anything(tmp_path, capsys, where):
    """It was refused at the top level only; inside report.checks or launcher.slurm_extra RSS passed 5 GB."""
    cfg = tmp_path / "bench.yaml"
    cfg.write_text("methods: [vanilla]\ndata: {name: digits}\n" + where.format(laughs()))
    t = time.perf_counter()
    one_error(
        capsys,
        ["bench", str(cfg), "--out", str(tmp_path / "b")],
        f"expected a YAML document of a configuration's size, got one more than {MAX_YAML_NODES:,} values once its "
        f"aliases are expanded",
        tmp_path / "b",
    )
    assert time.perf_counter() - t < 5


def test_yaml_depth_tags_and_legitimate_anchors():
    with pytest.raises(YamlLimit, match=f"nested more than {MAX_YAML_DEPTH} levels deep"):
        parse_yaml("a: " + "[" * 100_000 + "]" * 100_000)  # a RecursionError traceback before
    assert parse_yaml("base: &b {lr: 0.1}\nrun: {<<: *b, epochs: 2}") == {
        "base": {"lr": 0.1},
        "run": {"lr": 0.1, "epochs": 2},
    }
    assert parse_yaml("[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1)) is not None  # the limit, not below it


def test_a_deep_yaml_a_python_tag_and_a_huge_seed_in_a_bench_are_one_line_and_leave_nothing(tmp_path, capsys):
    cases = [
        ("a: " + "[" * 100_000 + "]" * 100_000, f"got one nested more than {MAX_YAML_DEPTH} levels deep"),
        (
            "methods: [vanilla]\nx: !!python/object/apply:os.system [echo]\n",
            "expected plain YAML (no language-specific tags), got the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        (
            "methods: [vanilla]\ndata: {name: digits}\nseeds: [100000000000000000000000]\n",
            "'train.seed' expected an integer from 0 to 4,294,967,295, got 100000000000000000000000",
        ),
    ]
    for k, (text, message) in enumerate(cases):
        cfg = tmp_path / f"b{k}.yaml"
        cfg.write_text(text)
        one_error(capsys, ["bench", str(cfg), "--out", str(tmp_path / f"out{k}")], message, tmp_path / f"out{k}")


# ---------------------------------------------------------------- 2. upper bounds on count-like options


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--method",
                "vanilla",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--set",
                "train.device=cpu",
                "--set",
                "data.train_limit=200",
                "--no-progress",
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--bins", "1000000000"], "--bins: expected an integer from 1 to 10,000, got 1000000000"),
        (["--batch-size", "1000000000"], "--batch-size: expected an integer from 1 to 65,536, got 1000000000"),
        (["--limit", "10000000000"], "--limit: expected an integer from 1 to 1,000,000,000, got 10000000000"),
        (["--seed", str(10**23)], "--seed: expected an integer from 0 to 4,294,967,295"),
        (
            ["--evaluators", "fgsm", "--attack", "pgd", "--pgd-steps", "1000000000"],
            "--pgd-steps: expected an integer from 1 to 10,000, got 1000000000",
        ),
        (
            ["--evaluators", "spectra", "--set", "spectra.max_dim=1000000000"],
            "max_dim: expected an integer from 2 to 65,536",
        ),
        (
            ["--evaluators", "attack", "--set", "attack.norm=L2", "--set", "attack.eps=1000000000"],
            "expected L2 norms <= 1000",
        ),
        (
            ["--evaluators", "attack", "--norm", "L2"],
            "--norm: an option of the fgsm evaluator, which is not among the evaluators run (attack)",
        ),
    ],
)
def test_count_like_options_have_upper_bounds_checked_before_any_work(ckpt, tmp_path, capsys, flags, message):
    one_error(
        capsys,
        ["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "res"), "--no-progress", *flags],
        message,
        tmp_path / "res",
    )


def test_the_bounds_are_stated_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for stated in ("at most 10,000)", "(at most 65,536)", "at most 10^9)", "(0 to 2^32 - 1)"):
        assert stated in text, stated


def test_set_takes_a_yaml_list_and_quick_is_a_switch(ckpt, tmp_path, capsys):
    """`--set fgsm.eps=[1,2]` was refused ('[1' is not a number); `attack --quick` needed a value."""
    assert (
        main(
            [
                "evaluate",
                "--ckpt",
                str(ckpt),
                "--evaluators",
                "fgsm",
                "--set",
                "fgsm.eps=[1,2]",
                "--limit",
                "20",
                "--out",
                str(tmp_path / "r1"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (tmp_path / "r1" / "run" / "fgsm.jsonl").read_text().splitlines()]
    assert sorted({r["settings"].get("eps_255") for r in rows if r["condition"] != "clean"}) == [1.0, 2.0]
    from mmix_eval.cli import build_parser

    args = build_parser().parse_args(["attack", "--ckpt", "x", "--quick", "--limit", "5"])
    assert args.opt_attack_quick == "true" and args.common_limit == "5"
    args = build_parser().parse_args(["attack", "--ckpt", "x", "--quick", "false"])
    assert args.opt_attack_quick == "false"


# ---------------------------------------------------------------- 5 and 10. state dicts made elsewhere


def _smallnet_sd() -> dict:
    return {
        k: v.clone() for k, v in create_model("smallnet", num_classes=10, in_channels=1, width=8).state_dict().items()
    }


def _eval(path, *extra):
    return [
        "calibration",
        "--ckpt",
        str(path),
        "--model",
        "smallnet",
        "--model-arg",
        "width=8",
        "--data",
        "digits",
        "--limit",
        "20",
        "--no-progress",
        *extra,
    ]


def _sparse_file(path: Path, header: dict, size: int) -> None:
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(size)  # sparse: a few kB on disk


def test_a_1_tb_sparse_safetensors_is_refused_from_its_header_in_seconds(tmp_path, capsys):
    """It was hashed whole (about 50 minutes) before any header or shape check, then materialised."""
    sd = _smallnet_sd()
    ok = tmp_path / "ok.safetensors"
    save_file(sd, str(ok))
    header_len = struct.unpack("<Q", ok.read_bytes()[:8])[0]
    header = json.loads(ok.read_bytes()[8 : 8 + header_len])
    data = ok.stat().st_size - 8 - header_len
    big = tmp_path / "big.safetensors"
    _sparse_file(big, header, 1 << 40)  # a small network's header, then 1 TB
    t = time.perf_counter()
    one_error(
        capsys,
        _eval(big, "--out", str(tmp_path / "r1")),
        f"expected {data} bytes of tensor data after the header, as the header says, got a file of {1 << 40} bytes",
    )
    # a header that itself describes 1 TB: the shape is refused against the model's, before any byte is hashed
    name = next(k for k in header if k.endswith("weight") and k != "__metadata__")
    huge = {name: {"dtype": "F32", "shape": [1 << 38], "data_offsets": [0, 1 << 40]}}
    _sparse_file(tmp_path / "huge.safetensors", huge, 8 + len(json.dumps(huge).encode()) + (1 << 40))
    one_error(
        capsys,
        _eval(tmp_path / "huge.safetensors", "--out", str(tmp_path / "r2")),
        "state dict does not fit model 'smallnet'",
    )
    _sparse_file(tmp_path / "zeros.pt", {}, 1 << 40)  # no header at all: 1 TB of zeros after 10 bytes
    with open(tmp_path / "zeros.pt", "r+b") as f:
        f.write(bytes(16))
    one_error(
        capsys,
        _eval(tmp_path / "zeros.pt", "--out", str(tmp_path / "r4")),
        "expected a safetensors file or a torch.save file (zip or pickle), got 9+ bytes starting 0000000000000000",
    )
    assert time.perf_counter() - t < 20
    assert main(_eval(ok, "--out", str(tmp_path / "r3"))) == 0  # the control: the same weights, whole, evaluate


@pytest.mark.parametrize(
    "kind, make, message",
    [
        ("sparse", lambda v: v.to_sparse() if v.dim() > 1 else v, "expected a plain dense tensor, got a sparse one"),
        ("int8", lambda v: v.to(torch.int8) if v.is_floating_point() else v, "expected a floating-point dtype"),
        ("bool", lambda v: v.bool() if v.is_floating_point() else v, "expected a floating-point dtype"),
        ("complex", lambda v: v.to(torch.complex64) if v.is_floating_point() else v, "expected a floating-point dtype"),
        ("meta", lambda v: v.to("meta"), "expected data, got a meta tensor"),
        (
            "quantized",
            lambda v: torch.quantize_per_tensor(v, 0.1, 0, torch.qint8) if v.is_floating_point() else v,
            "expected a plain dense tensor, got a quantized one",
        ),
        (
            "nested",
            lambda v: torch.nested.nested_tensor([v, v]) if v.dim() == 1 and v.is_floating_point() else v,
            "tensor '",
        ),
    ],
)
def test_tensors_of_the_wrong_kind_in_a_state_dict_are_one_line_naming_the_key(tmp_path, capsys, kind, make, message):
    """Sparse and meta tensors gave tracebacks; int8, bool and complex weights were cast silently."""
    sd = {k: make(v) for k, v in _smallnet_sd().items()}
    path = tmp_path / f"{kind}.pt"
    torch.save(sd, path)
    one_error(capsys, _eval(path, "--out", str(tmp_path / "r")), message, tmp_path / "r")
    assert main(_eval(path, "--out", str(tmp_path / "r"))) == 2
    assert "': tensor '" in capsys.readouterr().err  # the key is named


def test_a_nested_dict_of_tensors_is_refused_in_one_line(tmp_path, capsys):
    sd = _smallnet_sd()
    torch.save({"weights": sd, "other": {"x": torch.zeros(1)}}, tmp_path / "nested.pt")
    one_error(
        capsys, _eval(tmp_path / "nested.pt", "--out", str(tmp_path / "r")), "expected a state dict (names -> tensors)"
    )


def test_mean_and_std_that_contradict_the_files_own_normalisation_are_refused(tmp_path, capsys):
    """They silently replaced the file's normalisation buffers; now the file's win unless they agree."""
    net = create_model("smallnet", num_classes=10, in_channels=1, width=8, mean=[0.2], std=[0.3])
    path = tmp_path / "own.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    one_error(
        capsys,
        _eval(path, "--out", str(tmp_path / "r1"), "--mean", "0.5", "--std", "0.5"),
        "--mean/--std: the file holds its own normalisation",
        tmp_path / "r1",
    )
    assert main(_eval(path, "--out", str(tmp_path / "r2"), "--mean", "0.2", "--std", "0.3")) == 0  # agreeing: fine
    assert main(_eval(path, "--out", str(tmp_path / "r3"))) == 0  # none given: the file's own


# ---------------------------------------------------------------- 7. a bench refuses before the first run trains


@pytest.mark.parametrize(
    "evaluate, message",
    [
        ("{evaluators: [ood], ood: {ood: ['imagefolder:/no/such/folder']}}", "/no/such/folder"),
        (
            "{evaluators: [ood], ood: {ood: [digits]}}",
            "ood: source 'digits' expected data other than the in-distribution set",
        ),
        (
            "{evaluators: [spectra], spectra: {layers: [stages.9]}}",
            "spectra: layer 'stages.9' expected a module name of SmallNet",
        ),
        (
            "{evaluators: [ood], ood: {feature_layers: [stages.9]}}",
            "ood: layer 'stages.9' expected a module name of SmallNet",
        ),
        (
            "{evaluators: [ood], ood: {ood: ['openood:cifar10']}, data_root: /no/such/root}",
            "ood: expected OpenOOD's image list /no/such/root/openood/benchmark_imglist/cifar10/",
        ),
        (
            "{evaluators: [spectra], limit: 2}",
            "spectra: expected at least 2 test images per class, so a limit of at least 20",
        ),
        (
            "{evaluators: [corruptions], corruptions: {corruptions: [brightness], source: generated}}",
            "corruptions: brightness expected 3-channel (RGB) images, got 1 channel(s) in digits",
        ),
        (
            "{evaluators: [corruptions], corruptions: {source: files}}",
            "corruptions: expected files: FOLDER for data 'digits'",
        ),
        ("{evaluators: [attack], attack: {norm: L2, eps: [1000000000]}}", "expected L2 norms <= 1000"),
    ],
)
def test_a_bench_refuses_what_an_evaluator_would_refuse_after_training_before_anything_trains(
    tmp_path, capsys, evaluate, message
):
    """These were refused only after the first run had trained: partial results and no report."""
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(
        "methods: [vanilla]\ndata: {name: digits}\nmodel: {name: smallnet, kwargs: {width: 4}}\n"
        f"train: {{epochs: 1, device: cpu}}\nevaluate: {evaluate}\n"
    )
    one_error(capsys, ["bench", str(cfg), "--out", str(tmp_path / "b"), "--no-progress"], message, tmp_path / "b")


# ---------------------------------------------------------------- 10. plugin evaluators that collide or raise

PLUGIN = """
from mmix_eval.evaluate import Evaluator, MetricSpec, record


class Boom(Evaluator):
    name = "boom"
    metrics = {"acc": MetricSpec("accuracy (%)", "higher", ".2f")}

    def run(self, target, options, common):
        if target.run.endswith("s1"):
            raise ZeroDivisionError("the plugin's own bug")
        return [record({**target.base, "evaluator": self.name, "n": len(target.test)}, "c", "acc", 1.0)]


class SlashName(Boom):
    name = "a/b"


class ColonName(Boom):
    name = "a:b"
"""


def test_plugin_names_that_sanitise_to_one_file_are_refused(tmp_path, capsys, monkeypatch):
    """'a/b' and 'a:b' both wrote a_b.jsonl: one overwrote the other."""
    (tmp_path / "hostile_plugins.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    from mmix_eval.evaluate.runner import make_plan

    with pytest.raises(Exception, match=r"evaluators 'a/b' and 'a:b' would both write a_b\.jsonl"):
        make_plan(["hostile_plugins:SlashName", "hostile_plugins:ColonName"])


def test_a_raising_plugin_fails_its_run_only_the_bench_reports_the_rest_and_keeps_the_traceback(
    tmp_path, capsys, monkeypatch
):
    """It aborted the whole bench: no report, and no traceback for its author."""
    (tmp_path / "hostile_plugins.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(
        "methods: [vanilla]\nseeds: [0, 1, 2]\ndata: {name: digits, train_limit: 200}\n"
        "model: {name: smallnet, kwargs: {width: 4}}\ntrain: {epochs: 1, device: cpu}\n"
        "evaluate: {evaluators: [calibration, 'hostile_plugins:Boom'], limit: 50}\n"
    )
    assert main(["bench", str(cfg), "--out", str(tmp_path / "b"), "--no-progress"]) == 1
    got = capsys.readouterr()
    err = got.out + got.err
    assert (
        "run vanilla-s1 failed: evaluator 'boom' failed on run 'vanilla-s1': ZeroDivisionError: the plugin's own bug"
        in err
    )
    md = (tmp_path / "b" / "report.md").read_text()
    assert "(n=3)" in md  # the calibration rows of all three runs; boom's of the two that worked
    tb = (tmp_path / "b" / "results" / "vanilla-s1" / "boom.error.log").read_text()
    assert "hostile_plugins.py" in tb and "ZeroDivisionError: the plugin's own bug" in tb
    assert "Traceback" in (tmp_path / "b" / "logs" / "vanilla-s1.log").read_text()
