"""Issue 45, item 3: the OpenOOD v1.5 protocol's sets, read from synthetic files in its layout (nothing downloaded),
expanded into near / far groups, its validation split choosing the feature scores' settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import EvalOptions, OptionError, get_evaluator, run_evaluator
from mmix_eval.evaluate.evaluators.ood import ood_images
from mmix_eval.evaluate.evaluators.ood.openood import expand, group_of, image_names
from mmix_eval.evaluate.target import target_from_module
from tests.builders import staged_net

# each set as OpenOOD distributes it: its own folder, size, mode and format
SETS = {
    "cifar100": ((32, 32), "RGB", "png"),
    "tin": ((64, 64), "RGB", "jpg"),
    "mnist": ((28, 28), "L", "png"),
    "svhn": ((32, 32), "RGB", "png"),
    "texture": ((90, 60), "RGB", "jpg"),
    "places365": ((48, 48), "RGB", "jpg"),
}


def openood_root(tmp_path, n=12, val=10):
    root = tmp_path / "data"
    lists = root / "openood" / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (size, mode, ext) in SETS.items():
        folder = root / "openood" / "images_classic" / name / "test"
        folder.mkdir(parents=True)
        lines = []
        for k in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 40, shape, dtype=np.uint8), mode).save(folder / f"{k:04d}.{ext}")
            lines.append(f"{name}/test/{k:04d}.{ext} -1")
        (lists / f"test_{name}.txt").write_text("\n".join(lines) + "\n")
    (lists / "val_tin.txt").write_text("\n".join(f"tin/test/{k:04d}.jpg -1" for k in range(val)) + "\n")
    return root


Staged = staged_net()


def _tensors(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=g) * 0.5 + 0.5).clamp(0, 1), torch.arange(n) % 3


def test_the_protocol_expands_to_its_groups_and_implies_its_validation_split():
    ev = get_evaluator("ood")
    o = ev.options({"ood": "openood:cifar10"})
    assert o.ood == [f"openood:cifar10/{s}" for s in ("cifar100", "tin", "mnist", "svhn", "texture", "places365")]
    assert o.ood_val == "openood:cifar10/val"
    assert expand(["openood:cifar100", "noise:blobs"])[:2] == ["openood:cifar100/cifar10", "openood:cifar100/tin"]
    assert group_of("openood:cifar10/tin") == "near" and group_of("openood:cifar10/places365") == "far"
    for bad, message in [
        ("openood:mnist", "expected openood:cifar10|cifar100"),
        ("openood:cifar10/lsun", "got 'lsun'"),
    ]:
        with pytest.raises(OptionError, match=message.replace("|", r"\|")):
            ev.options({"ood": bad})


def test_each_set_is_read_as_distributed_and_mapped_to_the_input(tmp_path):
    root = openood_root(tmp_path)
    for name in SETS:
        x = ood_images(f"openood:cifar10/{name}", 5, (1, 8, 8), seed=0, data_root=root)
        assert x.shape == (5, 1, 8, 8) and x.dtype == torch.uint8
    a = ood_images("openood:cifar10/texture", 5, (3, 16, 16), seed=0, data_root=root)
    assert torch.equal(a, ood_images("openood:cifar10/texture", 5, (3, 16, 16), seed=0, data_root=root))
    # a seeded subset: another seed, other images (12 listed, 5 read)
    assert not torch.equal(a, ood_images("openood:cifar10/texture", 5, (3, 16, 16), seed=1, data_root=root))
    # by hand: image 0 of mnist, grey 28x28 -> RGB (as OpenOOD opens it) -> 8x8 by the evaluator's rule -> luminance
    want = np.asarray(Image.open(root / "openood/images_classic/mnist/test/0000.png").convert("RGB"))
    t = torch.from_numpy(want.copy()).permute(2, 0, 1)[None].float()
    t = torch.nn.functional.interpolate(t, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    t = t.round().clamp(0, 255)
    lum = (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).round().to(torch.uint8)
    every = ood_images("openood:cifar10/mnist", 12, (1, 8, 8), seed=0, data_root=root)  # all 12, in list order
    assert torch.equal(every[0], lum[0])


def test_missing_files_and_unsafe_paths_are_one_line_each(tmp_path):
    root = openood_root(tmp_path)
    (root / "openood/benchmark_imglist/cifar10/test_svhn.txt").unlink()
    with pytest.raises(UserError, match=r"expected OpenOOD's image list .*test_svhn.txt, got no such file"):
        ood_images("openood:cifar10/svhn", 4, (1, 8, 8), 0, root)
    (root / "openood/images_classic/mnist/test/0003.png").unlink()
    with pytest.raises(UserError, match=r"expected the image .*mnist/test/0003.png that test_mnist.txt lists"):
        ood_images("openood:cifar10/mnist", 12, (1, 8, 8), 0, root)
    (root / "openood/benchmark_imglist/cifar10/test_texture.txt").write_text("../../etc/passwd -1\nok.jpg -1\n")
    with pytest.raises(UserError, match=r"line 1 expected a path inside images_classic/, got '../../etc/passwd'"):
        image_names("openood:cifar10/texture", root)


def test_a_protocol_run_gives_every_set_its_group_means_and_settings_from_the_validation_split(tmp_path):
    root = openood_root(tmp_path)
    x, y = _tensors(12, 0)
    t = target_from_module(Staged().eval(), x, y, "net", val=_tensors(12, 2), train=_tensors(30, 1))
    common = EvalOptions(progress=False, data_root=str(root), calibrator="none")
    rows = run_evaluator(get_evaluator("ood"), t, {"ood": "openood:cifar10"}, common)
    auroc = {r["condition"]: r for r in rows if r["metric"] == "auroc"}
    near = auroc["openood:cifar10/near/msp"]
    sets = [auroc["openood:cifar10/cifar100/msp"]["value"], auroc["openood:cifar10/tin/msp"]["value"]]
    assert near["value"] == pytest.approx(sum(sets) / 2, abs=1e-15) and near["settings"]["group_sets"] == "cifar100,tin"
    assert near["headline"] and not auroc["openood:cifar10/cifar100/msp"]["headline"]  # the groups in the main table
    far = auroc["openood:cifar10/far/knn@penultimate"]
    parts = [auroc[f"openood:cifar10/{s}/knn@penultimate"]["value"] for s in ("mnist", "svhn", "texture", "places365")]
    assert far["value"] == pytest.approx(np.mean(parts), abs=1e-15) and far["settings"]["n_ood"] == 48
    assert auroc["openood:cifar10/svhn/msp"]["settings"]["ood_group"] == "far"
    assert (
        "openood:cifar10/val" in far["settings"]["chosen_by"] or "by validation AUROC" in far["settings"]["chosen_by"]
    )
    assert "against images of 'openood:cifar10/val', never by test images" in far["settings"]["feature_settings"]
    # without held-out images the implied validation split is skipped, said on the rows (not an error)
    t = target_from_module(Staged().eval(), x, y, "net", train=_tensors(30, 1))
    rows = run_evaluator(get_evaluator("ood"), t, {"ood": "openood:cifar10"}, common)
    assert "feature settings not chosen on 'openood:cifar10/val': net holds no validation split" in rows[0]["warnings"]
    assert not any("chosen_by" in r["settings"] for r in rows)
