"""Golden geometry for the deformations: markers land where the matrix says."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SHARED_DATA

from mmix_eval.errors import UserError
from mmix_eval.evaluate.evaluators.deformations.geometry import (
    TABLE4,
    TABLE9,
    Deformation,
    load_grid,
    rotation_matrices,
    sample_matrices,
    shear_matrices,
    warp,
    zoom_matrices,
)


def marker(h, w, x, y):
    img = torch.zeros(1, 1, h, w)
    img[0, 0, y, x] = 1.0
    return img


def where(img):
    return [(int(x), int(y)) for y, x in (img[0, 0] == 1).nonzero().tolist()]


@pytest.mark.parametrize(
    "size,src,dst",
    [
        (5, (4, 2), (2, 4)),  # right of centre -> below it: +90° turns content clockwise on screen (the official sign)
        (6, (5, 1), (4, 5)),  # even size: true centre (2.5, 2.5), offset (2.5, -1.5) -> (1.5, 2.5)
        (7, (3, 0), (6, 3)),  # above centre -> right of it
    ],
)
def test_plus_90_degree_rotation_moves_a_marker_clockwise_as_the_official_transform(size, src, dst):
    out = warp(marker(size, size, *src), rotation_matrices(torch.tensor([90.0])))
    assert where(out) == [dst]


def test_four_quarter_turns_are_the_identity():
    x = torch.rand(2, 3, 6, 6)
    a = rotation_matrices(torch.tensor([90.0, 90.0]))
    y = x
    for _ in range(4):
        y = warp(y, a)
    assert torch.equal(y, x)


def test_zoom_out_200_percent_halves_a_marker_offset_and_zoom_in_pushes_it_out():
    out = warp(marker(9, 9, 6, 4), zoom_matrices(torch.tensor([2.0])))  # input offset (2, 0) -> output (1, 0)
    assert where(out) == [(5, 4)]
    # Zoom in x2: output offset (dx, dy) samples input (dx/2, dy/2); the official rule rounds exact halves up
    # (floor(c + 0.5)), so input offset (1, 0) is seen from output dx in {1, 2} (0.5 -> 1, 1 -> 1) and
    # dy in {-1, 0} (-0.5 -> 0, 0 -> 0): a 2x2 enlargement.
    out = warp(marker(9, 9, 5, 4), zoom_matrices(torch.tensor([0.5])))
    assert where(out) == [(5, 3), (6, 3), (5, 4), (6, 4)]


def test_shear_marker_on_the_vertical_axis_stays_and_off_axis_one_follows_the_official_matrix():
    s = torch.tensor([30.0])
    out = warp(marker(9, 9, 4, 6), shear_matrices(s))  # x = 0: x_in = 0, y_in = y -> unchanged
    assert where(out) == [(4, 6)]
    # output offset (2, 1) samples x_in = cos30·2 = 1.73 -> 2, y_in = 1 − sin30·2 = 0 -> input offset (2, 0)
    out = warp(marker(9, 9, 6, 4), shear_matrices(s))
    assert (6, 5) in where(out)


def reference_warp(img: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-pixel nearest-neighbour reference from the official rule: input = c + A (p − c) in float64, 0 when
    the source lies outside [0, size − 1], else the pixel at floor(source + 0.5)."""
    h, w = img.shape[-2:]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    out = torch.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sx = cx + float(a[0, 0]) * (x - cx) + float(a[0, 1]) * (y - cy)
            sy = cy + float(a[1, 0]) * (x - cx) + float(a[1, 1]) * (y - cy)
            if 0 <= sx <= w - 1 and 0 <= sy <= h - 1:
                out[..., y, x] = img[..., math.floor(sy + 0.5), math.floor(sx + 0.5)]
    return out


@pytest.mark.parametrize(
    "a",
    [
        rotation_matrices(torch.tensor([17.0]))[0],
        rotation_matrices(torch.tensor([-33.0]))[0],
        shear_matrices(torch.tensor([28.6]))[0],
        shear_matrices(torch.tensor([-100.0]))[0],
        zoom_matrices(torch.tensor([0.6]))[0],
        zoom_matrices(torch.tensor([1.4]))[0],
    ],
    ids=["rot17", "rot-33", "shear28.6", "shear-100", "zoom60", "zoom140"],
)
def test_every_pixel_matches_the_matrix_formula(a):
    img = torch.arange(1, 1 + 3 * 11 * 11, dtype=torch.float32).view(1, 3, 11, 11) / 400.0
    assert torch.equal(warp(img, a[None]), reference_warp(img, a))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_zero_deformations_are_the_identity(mode):
    x = torch.rand(4, 3, 8, 8)
    for d in (Deformation("r", "rotation", 0.0), Deformation("s", "shear", 0.0), Deformation("z", "zoom", 100.0)):
        assert torch.allclose(warp(x, sample_matrices(d, 4, seed=3), mode), x, atol=1e-6)


def test_singular_shear_at_90_degrees_is_handled():
    out = warp(torch.rand(1, 3, 8, 8), shear_matrices(torch.tensor([90.0])))
    assert torch.isfinite(out).all()


def test_common_random_numbers():
    d = TABLE4[0]
    a, b = sample_matrices(d, 50, seed=0), sample_matrices(d, 80, seed=0)
    assert torch.equal(a, b[:50])  # image i's parameters do not depend on how many images follow
    assert not torch.equal(a, sample_matrices(d, 50, seed=1))
    assert not torch.equal(a, sample_matrices(TABLE4[1], 50, seed=0)[:, :, :])
    angles = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    assert float(angles.abs().max()) <= 20.0 + 1e-9 and float(angles.abs().max()) > 15.0


def test_named_grids():
    assert [d.name for d in TABLE4] == [
        "rotation20",
        "rotation40",
        "shear28.6",
        "shear57.3",
        "zoom_in60",
        "zoom_in80",
        "zoom_out120",
        "zoom_out140",
    ]
    assert len(TABLE9) == 17 and TABLE9[:8] == TABLE4
    assert math.isclose(math.radians(57.3), 1.0, rel_tol=1e-3)  # shear ranges are radians written in degrees
    assert TABLE4[0].label == "Rotation U(−20°, 20°)" and TABLE4[6].label == "Zoom out (120 % rescale)"


def test_user_grid_and_its_errors(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("- {rotation: 30}\n- {name: tiny_zoom, zoom: 90}\n")
    name, grid = load_grid(str(f))
    assert [(d.name, d.kind, d.value) for d in grid] == [("rotation30", "rotation", 30.0), ("tiny_zoom", "zoom", 90.0)]
    for text, match in [
        ("- {zoom: 0}\n", "'zoom' expected a percentage > 0, got 0"),
        ("- {zoom: -50}\n", "'zoom' expected a percentage > 0"),
        ("- {rotate: 10}\n", "unknown key\\(s\\) rotate; expected name and one of rotation, shear, zoom"),
        ("- {rotation: 10, zoom: 90}\n", "expected exactly one of rotation, shear, zoom, got 2"),
        ("- {rotation: ten}\n", "'rotation' expected a finite number, got 'ten'"),
        ("- {rotation: 10}\n- {rotation: 10}\n", "duplicate condition name 'rotation10'"),
        ("{}\n", "expected a non-empty list"),
    ]:
        f.write_text(text)
        with pytest.raises(UserError, match=match):
            load_grid(str(f))
    with pytest.raises(UserError, match="expected table4, table9 or a .yaml file, got 'table5'"):
        load_grid("table5")


# ---------------------------------------------------------------- the official rendering, pixel for pixel


def official_matrix(kind: str, value: float):
    """The official transform's output -> input matrix in (row, col) order, written here from PROTOCOL.md."""
    import numpy as np

    if kind == "rotation":
        t = math.radians(value)
        return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    if kind == "shear":
        s = math.radians(value)
        return np.array([[1.0, -math.sin(s)], [0.0, math.cos(s)]])
    return np.diag([value / 100.0, value / 100.0])


def official_render(img, kind: str, value: float):
    """scipy.ndimage.affine_transform, order 0, constant 0, about the true centre, channel by channel."""
    import numpy as np
    from scipy.ndimage import affine_transform

    m = official_matrix(kind, value)
    c = (np.array(img.shape[-2:], dtype=np.float64) - 1) / 2
    return np.stack([affine_transform(ch, m, offset=c - m @ c, order=0, mode="constant", cval=0.0) for ch in img])


def ours(x: torch.Tensor, kind: str, value: float) -> torch.Tensor:
    v = torch.full((x.shape[0],), value, dtype=torch.float64)  # float64, as sample_matrices draws them
    a = (
        rotation_matrices(v)
        if kind == "rotation"
        else shear_matrices(v)
        if kind == "shear"
        else zoom_matrices(v / 100.0)
    )
    return warp(x, a, "nearest")


CASES = [
    ("rotation", 7.0),
    ("rotation", -23.0),
    ("rotation", 40.0),
    ("shear", 10.0),
    ("shear", -28.6),
    ("shear", 57.3),
    ("zoom", 60.0),
    ("zoom", 80.0),
    ("zoom", 120.0),
    ("zoom", 140.0),
]


def cifar_test_images(k: int = 8) -> torch.Tensor:
    """k real CIFAR-10 test images from ../shared/data (two per class of the first k / 2 classes), uint8."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip("../shared/data/cifar10-jpeg.tar.gz is not beside the checkout")
    wanted = {f"test/{c}/{i:04d}.jpg" for c in ("airplane", "automobile", "bird", "cat") for i in (3, 517)}
    found = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            name = member.name.split("/", 1)[-1] if not member.name.startswith("test/") else member.name
            if name in wanted:
                found[name] = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
                if len(found) == len(wanted):
                    break
    assert len(found) == len(wanted), sorted(wanted - set(found))
    return torch.from_numpy(np.stack([found[n] for n in sorted(found)][:k])).permute(0, 3, 1, 2).contiguous()


@pytest.mark.slow
@pytest.mark.parametrize("kind,value", CASES, ids=[f"{k}{v:g}" for k, v in CASES])
def test_nearest_rendering_equals_the_official_scipy_rendering_on_real_cifar10(kind, value):
    x = cifar_test_images().float() / 255.0
    got = ours(x, kind, value).numpy()
    ref = __import__("numpy").stack([official_render(img, kind, value) for img in x.numpy()])
    agree = float((got == ref).mean())
    if kind == "zoom":
        assert agree == 1.0
    else:
        assert agree >= 0.999, agree


@pytest.mark.parametrize("kind,value", CASES, ids=[f"{k}{v:g}" for k, v in CASES])
def test_nearest_rendering_equals_scipy_exactly_on_synthetic_images(kind, value):
    import numpy as np

    x = torch.from_numpy(np.random.default_rng(3).random((3, 3, 32, 32), dtype=np.float64)).float()
    ref = np.stack([official_render(img, kind, value) for img in x.numpy()])
    assert np.array_equal(ours(x, kind, value).numpy(), ref)


def test_sources_just_outside_the_image_are_black_not_the_border_pixel():
    # zoom out 104 %: the first and last output rows and columns sample 7.5 ± 1.04 · 7.5 = −0.3 and 15.3, within
    # half a pixel of the edge, where grid_sample's nearest mode keeps the border pixel: officially they are 0.
    x = torch.ones(1, 3, 16, 16)
    out = warp(x, zoom_matrices(torch.tensor([1.04], dtype=torch.float64)), "nearest")
    assert pytest.approx(-0.3) == 7.5 - 1.04 * 7.5
    border = torch.ones(16, 16, dtype=torch.bool)
    border[1:15, 1:15] = False
    assert (out[0][:, border] == 0).all() and (out[0][:, ~border] == 1).all()
