"""Pixel agreement of the deformation renderings with the official one (scipy.ndimage.affine_transform,
order 0, constant 0, about the true centre) on real CIFAR-10 test images from ../shared/data.

    python benchmarks/deformation_agreement.py [--images 200]

Prints, per fixed parameter, the share of pixels equal to the official rendering for mmix-eval's nearest
path and for the first version's (kornia remap / grid_sample nearest, float32 coordinates, opposite rotation
sign), which the committed report's old records used.
"""

from __future__ import annotations

import argparse
import io
import math
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import affine_transform

from mmix_eval.evaluate.evaluators.deformations.geometry import rotation_matrices, shear_matrices, warp, zoom_matrices

ROOT = Path(__file__).resolve().parent.parent
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


def official(img: np.ndarray, kind: str, value: float) -> np.ndarray:
    if kind == "rotation":
        t = math.radians(value)
        m = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    elif kind == "shear":
        s = math.radians(value)
        m = np.array([[1.0, -math.sin(s)], [0.0, math.cos(s)]])
    else:
        m = np.diag([value / 100.0] * 2)
    c = (np.array(img.shape[-2:], dtype=np.float64) - 1) / 2
    return np.stack([affine_transform(ch, m, offset=c - m @ c, order=0, mode="constant", cval=0.0) for ch in img])


def matrices(kind: str, value: float, n: int) -> torch.Tensor:
    v = torch.full((n,), value, dtype=torch.float64)
    return (
        rotation_matrices(v) if kind == "rotation" else shear_matrices(v) if kind == "shear" else zoom_matrices(v / 100)
    )


def first_version(x: torch.Tensor, kind: str, value: float, old_sign: bool = True) -> torch.Tensor:
    """mmix-eval 0.1's nearest path: kornia remap (grid_sample nearest, zero padding), float32 maps, and
    (``old_sign``) rotation with the opposite sign."""
    from kornia.geometry.transform import remap

    a = matrices(kind, -value if kind == "rotation" and old_sign else value, x.shape[0]).float()
    b, _, h, w = x.shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) - cy, torch.arange(w, dtype=torch.float32) - cx, indexing="ij"
    )
    map_x = a[:, 0, 0, None, None] * xs + a[:, 0, 1, None, None] * ys + cx
    map_y = a[:, 1, 0, None, None] * xs + a[:, 1, 1, None, None] * ys + cy
    return remap(x, map_x, map_y, mode="nearest", padding_mode="zeros", align_corners=True)


def test_images(n: int) -> torch.Tensor:
    archive = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    rng = np.random.default_rng(0)
    wanted = {
        f"test/{c}/{i:04d}.jpg"
        for c, i in zip(
            rng.choice(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"], n),
            rng.integers(0, 1000, n),
        )
    }
    found = {}
    with tarfile.open(archive) as tar:
        for m in tar:
            name = m.name[m.name.index("test/") :] if "test/" in m.name else m.name
            if name in wanted:
                found[name] = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
    return torch.from_numpy(np.stack([found[k] for k in sorted(found)])).permute(0, 3, 1, 2).float() / 255


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    x = test_images(p.parse_args().images)
    print(f"{len(x)} CIFAR-10 test images; share of pixels equal to the official rendering")
    print(f"{'case':<14}{'mmix-eval':>12}{'first version':>16}{'first, sign matched':>22}")
    for kind, value in CASES:
        ref = np.stack([official(img, kind, value) for img in x.numpy()])
        new = float((warp(x, matrices(kind, value, len(x)), "nearest").numpy() == ref).mean())
        old = float((first_version(x, kind, value).numpy() == ref).mean())
        same = float((first_version(x, kind, value, old_sign=False).numpy() == ref).mean())
        print(f"{kind + f' {value:g}':<14}{100 * new:>11.2f}%{100 * old:>15.2f}%{100 * same:>21.2f}%")


if __name__ == "__main__":
    main()
