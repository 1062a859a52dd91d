from __future__ import annotations

import pytest
import torch

from mmix_eval.errors import UserError
from mmix_eval.models import MODELS, create_model, num_mix_points

# (stage count, channels after each stage for width defaults) per registered model.
EXPECTED_STAGES = {
    "preactresnet18": [64, 128, 256, 512],
    "preactresnet34": [64, 128, 256, 512],
    "preactresnet18_he": [64, 128, 256, 512],
    "preactresnet34_he": [64, 128, 256, 512],
    "wrn28_10": [160, 320, 640],
    "wrn": [64, 128, 256],
    "smallnet": [32, 64, 128],
}


def test_every_registered_model_has_expected_stages():
    assert set(MODELS.names()) == set(EXPECTED_STAGES) | {"mlp"}  # the MLP: its own test below


def test_mlp_stages_bottleneck_and_bad_sizes():
    model = create_model("mlp", 10, 1, hidden=[16, 8, 3], image_size=8, linear_stages=[3]).eval()
    h = model.normalize(torch.rand(5, 1, 8, 8))
    widths = []
    for stage in model.stages:
        h = stage(h)
        widths.append(h.shape[1])
    assert widths == [16, 8, 3] and num_mix_points(model) == 4
    assert not isinstance(model.stages[2][-1], torch.nn.ReLU) and isinstance(model.stages[1][-1], torch.nn.ReLU)
    assert (h < 0).any()  # the linear bottleneck keeps negative values
    for kwargs, message in [
        ({"hidden": []}, "'hidden' expected a non-empty list"),
        ({"hidden": [4], "linear_stages": [2]}, "'linear_stages' expected stage numbers in 1..1"),
        ({"image_size": 0}, "'image_size' expected a positive integer"),
    ]:
        with pytest.raises(UserError, match=message):
            create_model("mlp", 10, 1, **kwargs)


@pytest.mark.parametrize("name", sorted(EXPECTED_STAGES))
def test_stages_shapes_and_forward_is_the_stage_walk(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=3).eval()
    x = torch.rand(2, 3, 32, 32)
    h = model.normalize(x)
    shapes = []
    for stage in model.stages:
        h = stage(h)
        shapes.append(tuple(h.shape[1:]))
    widths = EXPECTED_STAGES[name]
    assert [s[0] for s in shapes] == widths
    assert [s[1] for s in shapes] == [32 // 2**i for i in range(len(widths))]  # stride 2 after the first stage
    with torch.no_grad():
        assert torch.equal(model.head(h), model(x))
    assert model(x).shape == (2, 7)
    assert num_mix_points(model) == len(widths) + 1


def test_the_paper_preactresnets_have_no_final_bn_and_the_he_variants_do():
    """The official preresnet.py: layer4 -> avg_pool2d(4) -> linear; He et al.'s variant adds BN-ReLU first."""
    for name, blocks in (("preactresnet18", 8), ("preactresnet34", 16)):
        official, he = create_model(name, 10, 3), create_model(name + "_he", 10, 3)
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in official.modules()) == 2 * blocks
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in he.modules()) == 2 * blocks + 1
        assert [k for k in official.state_dict() if k.startswith("head.")] == ["head.linear.weight", "head.linear.bias"]
        assert "head.bn.weight" in he.state_dict()
        torch.manual_seed(0)
        h = torch.randn(3, 512, 4, 4)
        with torch.no_grad():  # avg_pool2d(4) on the 4x4 maps of a 32x32 input, then linear: no BN, no ReLU
            ref = official.head.linear(torch.nn.functional.avg_pool2d(h, 4).flatten(1))
            assert torch.allclose(official.head(h), ref, atol=1e-6)


def test_a_checkpoint_written_before_the_official_head_reads_as_the_he_variant(tmp_path):
    """Old checkpoints named preactresnet18 hold a head.bn: they rebuild as preactresnet18_he and say so."""
    from mmix_eval.checkpoint import load_checkpoint, read_metadata, save_checkpoint

    torch.manual_seed(0)
    old = create_model("preactresnet18_he", 10, 3, width=4).eval()
    kwargs = {"num_classes": 10, "in_channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "width": 4}
    save_checkpoint(
        tmp_path / "old.safetensors",
        old,
        {"model": {"name": "preactresnet18", "kwargs": kwargs}, "data": {"classes": [str(i) for i in range(10)]}},
    )
    meta = read_metadata(tmp_path / "old.safetensors")
    assert meta["model"]["name"] == "preactresnet18_he" and meta["model"]["upgraded_from"] == "preactresnet18"
    assert meta["model"]["layout"].startswith("He et al. 2016 (final BN-ReLU")
    model, _ = load_checkpoint(tmp_path / "old.safetensors")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), old(x))
    # a checkpoint of the official network keeps its name
    new = create_model("preactresnet18", 10, 3, width=4).eval()
    save_checkpoint(
        tmp_path / "new.safetensors",
        new,
        {"model": {"name": "preactresnet18", "kwargs": kwargs}, "data": {"classes": [str(i) for i in range(10)]}},
    )
    assert read_metadata(tmp_path / "new.safetensors")["model"] == {"name": "preactresnet18", "kwargs": kwargs}


@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32), (4, 20)])
def test_any_channel_count_and_image_size(channels, size):
    model = create_model("smallnet", 10, channels, mean=[0.5] * channels, std=[0.2] * channels, width=4)
    assert model(torch.rand(3, channels, size, size)).shape == (3, 10)


def test_normalisation_lives_inside_the_model():
    model = create_model("smallnet", 3, 2, mean=[0.25, 0.5], std=[0.5, 0.25], width=4)
    x = torch.ones(1, 2, 4, 4)
    assert torch.allclose(model.normalize(x)[0, :, 0, 0], torch.tensor([1.5, 2.0]))
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


def test_bad_model_arguments():
    with pytest.raises(UserError, match=r"unknown model 'preactresnet81' \(did you mean 'preactresnet18'\?\)"):
        create_model("preactresnet81", 10)
    with pytest.raises(UserError, match="mean: expected 3 values .* got 1"):
        create_model("smallnet", 10, 3, mean=[0.5])
    with pytest.raises(UserError, match="unknown argument\\(s\\) depth"):
        create_model("smallnet", 10, 3, depth=3)
    with pytest.raises(UserError, match="num_classes: expected an integer >= 2, got 1"):
        create_model("smallnet", 1)
    with pytest.raises(UserError, match="depth: expected 6n\\+4"):
        create_model("wrn", 10, depth=11)
