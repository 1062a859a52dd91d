"""Golden geometry for the deformations: markers land where the matrix says."""

from __future__ import annotations

import math

import pytest
import torch

from mmix_eval.errors import UserError
from mmix_eval.evaluate.geometry import (TABLE4, TABLE9, Deformation, load_grid, rotation_matrices, sample_matrices,
                                         shear_matrices, warp, zoom_matrices)


def marker(h, w, x, y):
    img = torch.zeros(1, 1, h, w)
    img[0, 0, y, x] = 1.0
    return img


def where(img):
    return [(int(x), int(y)) for y, x in (img[0, 0] == 1).nonzero().tolist()]


@pytest.mark.parametrize("size,src,dst", [
    (5, (4, 2), (2, 0)),  # right of centre -> above it: +90° turns content counter-clockwise on screen
    (6, (5, 1), (1, 0)),  # even size: true centre (2.5, 2.5), offset (2.5, -1.5) -> (-1.5, -2.5)
    (7, (3, 0), (0, 3)),  # above centre -> left of it
])
def test_plus_90_degree_rotation_moves_a_marker_counter_clockwise(size, src, dst):
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
    # Zoom in x2: output offset (2, dy) samples input (1, dy/2); nearest rounds ties half to even,
    # so rows 3..5 (dy = -1, 0, 1 -> -0.5, 0, 0.5 -> 0) all show the marker: it is enlarged, at offset 2.
    out = warp(marker(9, 9, 5, 4), zoom_matrices(torch.tensor([0.5])))
    assert where(out) == [(6, 3), (6, 4), (6, 5)]


def test_shear_marker_on_the_vertical_axis_stays_and_off_axis_one_follows_the_official_matrix():
    s = torch.tensor([30.0])
    out = warp(marker(9, 9, 4, 6), shear_matrices(s))  # x = 0: x_in = 0, y_in = y -> unchanged
    assert where(out) == [(4, 6)]
    # output offset (2, 1) samples x_in = cos30·2 = 1.73 -> 2, y_in = 1 − sin30·2 = 0 -> input offset (2, 0)
    out = warp(marker(9, 9, 6, 4), shear_matrices(s))
    assert (6, 5) in where(out)


def reference_warp(img: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-pixel nearest-neighbour reference with zero fill, straight from the formula input = c + A (p − c)."""
    h, w = img.shape[-2:]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    out = torch.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sx = cx + float(a[0, 0]) * (x - cx) + float(a[0, 1]) * (y - cy)
            sy = cy + float(a[1, 0]) * (x - cx) + float(a[1, 1]) * (y - cy)
            ix, iy = round(sx), round(sy)
            if 0 <= ix < w and 0 <= iy < h:
                out[..., y, x] = img[..., iy, ix]
    return out


@pytest.mark.parametrize("a", [rotation_matrices(torch.tensor([17.0]))[0], rotation_matrices(torch.tensor([-33.0]))[0],
                               shear_matrices(torch.tensor([28.6]))[0], shear_matrices(torch.tensor([-100.0]))[0],
                               zoom_matrices(torch.tensor([0.6]))[0], zoom_matrices(torch.tensor([1.4]))[0]],
                         ids=["rot17", "rot-33", "shear28.6", "shear-100", "zoom60", "zoom140"])
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
    assert [d.name for d in TABLE4] == ["rotation20", "rotation40", "shear28.6", "shear57.3",
                                        "zoom_in60", "zoom_in80", "zoom_out120", "zoom_out140"]
    assert len(TABLE9) == 17 and TABLE9[:8] == TABLE4
    assert math.isclose(math.radians(57.3), 1.0, rel_tol=1e-3)  # shear ranges are radians written in degrees
    assert TABLE4[0].label == "Rotation U(−20°, 20°)" and TABLE4[6].label == "Zoom out (120 % rescale)"


def test_user_grid_and_its_errors(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("- {rotation: 30}\n- {name: tiny_zoom, zoom: 90}\n")
    name, grid = load_grid(str(f))
    assert [(d.name, d.kind, d.value) for d in grid] == [("rotation30", "rotation", 30.0), ("tiny_zoom", "zoom", 90.0)]
    for text, match in [("- {zoom: 0}\n", "'zoom' expected a percentage > 0, got 0"),
                        ("- {zoom: -50}\n", "'zoom' expected a percentage > 0"),
                        ("- {rotate: 10}\n", "unknown key\\(s\\) rotate; expected name and one of rotation, shear, zoom"),
                        ("- {rotation: 10, zoom: 90}\n", "expected exactly one of rotation, shear, zoom, got 2"),
                        ("- {rotation: ten}\n", "'rotation' expected a finite number, got 'ten'"),
                        ("- {rotation: 10}\n- {rotation: 10}\n", "duplicate condition name 'rotation10'"),
                        ("{}\n", "expected a non-empty list")]:
        f.write_text(text)
        with pytest.raises(UserError, match=match):
            load_grid(str(f))
    with pytest.raises(UserError, match="expected table4, table9 or a .yaml file, got 'table5'"):
        load_grid("table5")
