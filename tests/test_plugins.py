"""Issue 5: regularizers and models from outside the package, mixing at named layers, CutMix, the tutorial."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from mmix_eval.checkpoint import load_checkpoint
from mmix_eval.cli import main
from mmix_eval.errors import UserError
from mmix_eval.methods import METHODS, Method, StepOutput, create_method, mix, soft_targets
from mmix_eval.models import create_model


class NoisyVanilla(Method):
    """A plugin defined outside the package: vanilla on inputs with a little Gaussian noise."""

    name = "noisy_vanilla"

    def step(self, model, x, y, rng):
        noise = torch.from_numpy(rng.normal(0, 0.05, x.shape)).float()
        logits = model((x + noise).clamp(0, 1))
        return StepOutput(self.loss_fn(logits, soft_targets(y, logits.shape[1])), logits)


class ReturnsTuple(Method):
    def step(self, model, x, y, rng):
        logits = model(x)
        return logits.sum(), logits


class Explodes(Method):
    def step(self, model, x, y, rng):
        raise RuntimeError("boom")


def test_plugin_from_a_test_file_trains_is_evaluated_and_reported_under_its_name(tmp_path, capsys):
    run = tmp_path / "runs" / "noisy-s0"
    assert (
        main(
            [
                "train",
                "--method",
                "test_plugins:NoisyVanilla",
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
    meta = load_checkpoint(run / "model.safetensors")[1]
    assert {k: v for k, v in meta["method"].items() if k != "source_sha256"} == {
        "name": "noisy_vanilla",
        "settings": {"loss": "bce_softmax"},
    }
    assert len(meta["method"]["source_sha256"]) == 16  # a plugin: its source file's hash is recorded
    assert (
        main(
            [
                "evaluate",
                "--ckpt",
                str(run / "model.safetensors"),
                "--limit",
                "60",
                "--eps",
                "2",
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep"), "--baseline", "noisy_vanilla"]) == 0
    assert "| condition | noisy_vanilla |" in (tmp_path / "rep" / "report.md").read_text()


def _resnet():
    torch.manual_seed(0)
    return create_model("torchvision:resnet18", 4, 3)


def test_manifold_mixup_on_a_torchvision_resnet_mixes_exactly_at_the_named_layers():
    model = _resnet().eval()  # eval: BatchNorm uses running statistics, so a hand-applied mix is comparable
    names = ["layer1", "layer3"]
    method = create_method("manifold_mixup", eligible=names)
    method.validate(model)
    x, y = torch.rand(6, 3, 16, 16), torch.randint(0, 4, (6,))
    with torch.no_grad():
        clean = model(x)
    chosen = set()
    for seed in range(12):
        twin = np.random.default_rng(seed)  # the same draws the method makes: k, then λ, then the permutation
        k, lam, perm = names[int(twin.integers(2))], float(twin.beta(2.0, 2.0)), torch.from_numpy(twin.permutation(6))
        chosen.add(k)
        got = method.step(model, x, y, np.random.default_rng(seed)).logits
        hook = model.net.get_submodule(k).register_forward_hook(lambda m, i, o: mix(o, perm, lam))  # noqa: B023 (removed below)
        with torch.no_grad():
            expected = model(x)
        hook.remove()
        assert torch.allclose(got, expected, atol=1e-5), k
        assert not torch.allclose(got, clean, atol=1e-4)
    assert chosen == set(names)


def test_where_the_mixing_happens_is_recorded_by_hooks(monkeypatch):
    import mmix_eval.methods.mixup as mixup_module

    model = _resnet()
    calls = []
    real = mixup_module.forward_mixed
    monkeypatch.setattr(mixup_module, "forward_mixed", lambda m, x, k, mixer: calls.append(k) or real(m, x, k, mixer))
    method = create_method("manifold_mixup", eligible=["", "layer2"])
    rng = np.random.default_rng(0)
    for _ in range(25):
        method.step(model, torch.rand(4, 3, 16, 16), torch.randint(0, 4, (4,)), rng)
    assert set(calls) == {"", "layer2"}


def test_torchvision_models_train_and_reload_without_import_trust(tmp_path):
    out = tmp_path / "r18"
    assert (
        main(
            [
                "train",
                "--model",
                "torchvision:resnet18",
                "--eligible",
                "input,layer1,layer2",
                "--train-limit",
                "200",
                "--epochs",
                "1",
                "--set",
                "train.device=cpu",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    model, meta = load_checkpoint(out / "model.safetensors")
    assert meta["model"]["name"] == "torchvision:resnet18" and meta["method"]["settings"]["eligible"] == [
        "",
        "layer1",
        "layer2",
    ]
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)  # digits: 1 channel, 10 classes


def test_wrong_layer_names_and_bad_plugins(capsys, tmp_path):
    with pytest.raises(
        UserError, match=r"eligible layer 'layer9': expected a module name of TorchvisionNet .* 'layer1'"
    ):
        create_method("manifold_mixup", eligible=["", "layer9"]).validate(_resnet())
    with pytest.raises(UserError, match="has no numbered stages; give module names instead"):
        create_method("manifold_mixup").validate(create_model("torchvision:vgg11", 4, 3))
    cases = [
        ("no_such_module:Thing", "cannot import module 'no_such_module'"),
        ("test_plugins:Missing", "module 'test_plugins' has no attribute 'Missing'"),
        ("math:pi", "expected a Method subclass or a factory returning one, got float"),
        (
            "collections:OrderedDict",
            "expected a mmix_eval.methods.Method (step(model, x, y, rng) -> StepOutput), got OrderedDict",
        ),
        (
            "test_plugins:ReturnsTuple",
            "step() expected to return StepOutput(loss=<scalar tensor with grad>, logits), got tuple",
        ),
        ("test_plugins:Explodes", "step() failed on a 2-image probe batch (RuntimeError: boom)"),
    ]
    for spec, message in cases:
        out = tmp_path / spec.replace(":", "_")
        code = main(["train", "--method", spec, "--out", str(out), "--no-progress", "--epochs", "1"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    with pytest.raises(
        UserError, match="method 'test_plugins:NoisyVanilla': unknown argument 'alpha'; its arguments: loss"
    ):
        create_method("test_plugins:NoisyVanilla", alpha=1.0)


def test_methods_from_installed_entry_points(monkeypatch):
    ep = importlib.metadata.EntryPoint(name="noisy", value="test_plugins:NoisyVanilla", group="mmix_eval.methods")
    broken = importlib.metadata.EntryPoint(name="broken", value="no_such_pkg.mod:X", group="mmix_eval.methods")
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group=None: [ep, broken] if group == "mmix_eval.methods" else []
    )
    assert isinstance(create_method("noisy"), NoisyVanilla)
    assert "noisy" in METHODS.names()
    with pytest.raises(UserError, match="method 'broken': entry point no_such_pkg.mod:X failed to load"):
        create_method("broken")


def test_cutmix_box_and_target_by_hand():
    import math

    x = torch.stack([torch.zeros(1, 10, 10), torch.ones(1, 10, 10)])  # image 0 black, image 1 white
    y = torch.tensor([0, 1])
    method = create_method("cutmix")
    seen = {}
    method.loss_fn = lambda logits, target: seen.setdefault("t", target).sum() * 0 + logits.sum()  # capture the target

    def model(inp):
        seen["x"] = inp
        return torch.zeros(inp.shape[0], 2, requires_grad=True)

    mixed = 0
    for seed in range(30):
        seen.clear()
        twin = np.random.default_rng(seed)
        method.step(model, x, y, np.random.default_rng(seed))
        expected = x.clone()
        if twin.random() >= 0.5:  # probability 0.5: this batch trains unmixed
            assert torch.equal(seen["x"], x) and torch.equal(seen["t"], soft_targets(y, 2))
            continue
        mixed += 1
        lam, perm = float(twin.beta(1.0, 1.0)), torch.from_numpy(twin.permutation(2))
        cut = int(10 * math.sqrt(1 - lam))
        cy, cx = int(twin.integers(10)), int(twin.integers(10))
        y1, y2, x1, x2 = max(cy - cut // 2, 0), min(cy + cut // 2, 10), max(cx - cut // 2, 0), min(cx + cut // 2, 10)
        expected[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
        kept = 1 - (y2 - y1) * (x2 - x1) / 100
        assert torch.equal(seen["x"], expected)
        assert torch.allclose(seen["t"], soft_targets(y, 2, perm, kept))
    assert 5 <= mixed <= 25
    assert create_method("cutmix").describe() == {"name": "cutmix", "loss": "bce_softmax", "alpha": 1.0, "prob": 0.5}


@pytest.mark.slow
def test_tutorial_commands_run_as_written(tmp_path):
    doc = (ROOT / "docs" / "plugins.md").read_text()
    for _lang, name, body in re.findall(r"```(\w+) title=(\S+)\n(.*?)```", doc, re.S):
        (tmp_path / name).write_text(body)
    commands = [
        line for block in re.findall(r"```bash\n(.*?)```", doc, re.S) for line in block.splitlines() if line.strip()
    ]
    assert len(commands) == 2
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "mmix-eval"
        r = subprocess.run(
            [sys.executable, "-m", "mmix_eval", *argv[1:], "--no-progress"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr
    report = (tmp_path / "runs" / "my-bench" / "report.md").read_text()
    assert "| condition | vanilla | input_mixup | manifold_mixup | per_sample_mix |" in report  # the YAML's order
    assert "per_sample_mix − manifold_mixup" in report and "PASS" in report
