"""The paper's novel deformations as explicit inverse maps, applied to whole batches with kornia.

Every deformation is a 2x2 matrix A per image, mapping an output pixel's offset from the image centre to
the input offset it samples from (the official transforms' convention: an output -> input map):
    input = c + A (output - c),   c = ((W - 1) / 2, (H - 1) / 2)   (the true centre; the official code's
                                                                    size/2 + 0.5 is one pixel off)
Coordinates are pixels (x right, y down). Built as sampling maps for ``kornia.geometry.transform.remap``
rather than forward matrices for ``warp_affine``: Table 9's ±171.9° shear crosses cos s = 0, where the
map is singular and has no forward matrix. Fill is 0 (black in [0, 1] pixel space).

Rendering. ``nearest`` reproduces the official transform (``scipy.ndimage.affine_transform``, order 0,
``mode="constant"``, ``cval=0``) exactly: source coordinates in float64, computed as scipy does
(``M @ out + offset`` with ``offset = c − M @ c``), a source outside [0, size − 1] is 0 in every channel,
else the pixel at floor(coord + 0.5) (ties at exact halves go up), then one batched gather. ``bilinear``
is kornia's ``remap`` (``grid_sample``, align_corners=True, zero padding): sources are blended with 0
outside the image, so a pixel half a pixel outside is half its border neighbour.

rotation r:  θ ~ U(−r, r) degrees per image; the official matrix [[cos θ, −sin θ], [sin θ, cos θ]] in
             (row, col) order, i.e. x_in = cos θ · x + sin θ · y, y_in = −sin θ · x + cos θ · y (content turns
             clockwise on screen for θ > 0, as the official transform and scipy.ndimage.rotate's
             inverse map do; mmix-eval 0.1 had the opposite sign).
shear r:     s ~ U(−r, r) per image, r given in degrees of a radian value (28.6° = 0.5 rad); the official
             matrix [[1, −sin s], [0, cos s]] in (row, col) order: x_in = cos s · x, y_in = y − sin s · x.
zoom k:      z = k / 100 multiplies the sampling offsets; k < 100 enlarges a centred box of k % to full
             size (zoom in), k > 100 shrinks the image to 100/k inside a black border (zoom out).
"""

from __future__ import annotations

import zlib

import torch

from mmix_eval.evaluate.evaluators.deformations.grids import (  # noqa: F401
    GRIDS,
    INTERPOLATIONS,
    KINDS,
    RENDERER,
    TABLE4,
    TABLE9,
    Deformation,
    load_grid,
)


def sample_matrices(d: Deformation, n: int, seed: int) -> torch.Tensor:
    """(n, 2, 2) output -> input maps, one per image, from a generator keyed by (seed, condition name).

    Common random numbers: image i gets the same parameters for every checkpoint, every batch size.
    """
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(d.name.encode())) % 2**63)
    u = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1  # U(−1, 1)
    if d.kind == "rotation":
        return rotation_matrices(u * d.value)
    if d.kind == "shear":
        return shear_matrices(u * d.value)
    return zoom_matrices(torch.full((n,), d.value / 100.0, dtype=torch.float64))


def rotation_matrices(degrees: torch.Tensor) -> torch.Tensor:
    t = torch.deg2rad(degrees.to(torch.float64))
    c, s = torch.cos(t), torch.sin(t)
    # (x, y) order of the official (row, col) matrix [[cos, −sin], [sin, cos]]
    return torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)


def shear_matrices(degrees: torch.Tensor) -> torch.Tensor:
    s = torch.deg2rad(degrees.to(torch.float64))
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    # (x, y) order: x_in = cos s · x ; y_in = y − sin s · x  (the official [[1, −sin s], [0, cos s]] in (row, col))
    return torch.stack([torch.stack([torch.cos(s), zero], -1), torch.stack([-torch.sin(s), one], -1)], -2)


def zoom_matrices(z: torch.Tensor) -> torch.Tensor:
    z = z.to(torch.float64)
    zero = torch.zeros_like(z)
    return torch.stack([torch.stack([z, zero], -1), torch.stack([zero, z], -1)], -2)


def source_coordinates(a: torch.Tensor, h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W) float64 source x and y of every output pixel, computed as scipy's affine_transform does:
    in = A @ out + (c − A @ c)."""
    a = a.to(device=device, dtype=torch.float64)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ox = cx - (a[:, 0, 0] * cx + a[:, 0, 1] * cy)  # offset = c − A c
    oy = cy - (a[:, 1, 0] * cx + a[:, 1, 1] * cy)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float64),
        torch.arange(w, device=device, dtype=torch.float64),
        indexing="ij",
    )
    sx = a[:, 0, 0, None, None] * xs + a[:, 0, 1, None, None] * ys + ox[:, None, None]
    sy = a[:, 1, 0, None, None] * xs + a[:, 1, 1, None, None] * ys + oy[:, None, None]
    return sx, sy


def warp_nearest(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The official nearest-neighbour rendering, batched: a gather of floor(source + 0.5), 0 outside."""
    b, ch, h, w = x.shape
    sx, sy = source_coordinates(a, h, w, x.device)
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    ix = torch.floor(sx + 0.5).clamp_(0, w - 1).long()
    iy = torch.floor(sy + 0.5).clamp_(0, h - 1).long()
    flat = (iy * w + ix).view(b, 1, h * w).expand(b, ch, h * w)
    out = x.reshape(b, ch, h * w).gather(2, flat).view(b, ch, h, w)
    return out * inside.unsqueeze(1).to(out.dtype)


def warp(x: torch.Tensor, a: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Sample each image of x (B, C, H, W) in [0, 1] at c + A (p − c) for every output pixel p."""
    if mode == "nearest":
        return warp_nearest(x, a)
    from kornia.geometry.transform import remap

    b, _, h, w = x.shape
    a = a.to(device=x.device, dtype=torch.float32)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=torch.float32) - cy,
        torch.arange(w, device=x.device, dtype=torch.float32) - cx,
        indexing="ij",
    )
    map_x = a[:, 0, 0, None, None] * xs + a[:, 0, 1, None, None] * ys + cx
    map_y = a[:, 1, 0, None, None] * xs + a[:, 1, 1, None, None] * ys + cy
    # align_corners=True: pixel centres at integer coordinates 0..W-1, so c is the true centre.
    return remap(x, map_x, map_y, mode=mode, padding_mode="zeros", align_corners=True)
