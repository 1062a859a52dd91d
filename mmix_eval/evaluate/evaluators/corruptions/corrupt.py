"""Common corruptions generated on the fly, batched in PyTorch on the evaluation device, with the **CIFAR**
parameters of the benchmark's generator (Hendrycks & Dietterich, ICLR 2019, ``make_cifar_c.py`` in
github.com/hendrycks/robustness, ``ImageNet-C/create_c/``); not the ImageNet-C levels that the
``imagecorruptions`` package and torch-uncertainty use (e.g. Gaussian noise σ 0.08–0.38 instead of
CIFAR's 0.04–0.10).

Parameter table (severity 1 … 5), as in make_cifar_c.py:

    gaussian_noise     σ                         0.04, 0.06, 0.08, 0.09, 0.10
    shot_noise         photons per unit          500, 250, 100, 75, 50
    impulse_noise      salt-and-pepper amount    0.01, 0.02, 0.03, 0.05, 0.07
    speckle_noise      σ (multiplicative)        0.06, 0.10, 0.12, 0.16, 0.20
    gaussian_blur      σ (px)                    0.4, 0.6, 0.7, 0.8, 1.0
    defocus_blur       (disk radius, alias σ)    (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)
    brightness         + V in HSV                0.05, 0.10, 0.15, 0.20, 0.30
    contrast           factor about the mean     0.75, 0.50, 0.40, 0.30, 0.15
    saturate           S·a + b in HSV            (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)
    pixelate           BOX down to ⌊32·c⌋ and up 0.95, 0.90, 0.85, 0.75, 0.65
    jpeg_compression   JPEG quality (Pillow)     80, 65, 58, 50, 40
    elastic_transform  (α, σ, affine jitter)·32  (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                                 (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)
    fog                (strength, wibble decay)  (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)

Like the published files, outputs are ``np.uint8`` of the result: the value, clipped to [0, 1] and times 255,
truncated to its 8-bit level. Truncation puts a value a few ulps below an integer one level down, so which
side of the integer a result lands on decides up to 8 % of the pixels of some cells; the deterministic
corruptions are therefore computed as ``make_cifar_c.py`` computes them, operation for operation, in its
float64 (float32 for the defocus kernel, as OpenCV makes it): the input as ``uint8 / 255.``; scipy's Gaussian
weights and its symmetric accumulation order; OpenCV's float32 disk kernel; scikit-image's HSV conversion (blue,
then green, then red taking the hue when channels tie); numpy's per-image mean for contrast; Pillow for pixelate
and JPEG. Measured against the reference functions at the CIFAR constants (tests/fixtures/corruption_reference.py):
every deterministic corruption × severity ≥ 99.9 % equal pixels on real CIFAR-10 test images, and a golden test
on a committed fixture. The one place not replicated is OpenCV's ``filter2D``, which correlates the 17x17 disk
through a DFT: its rounding noise (~1e-16) decides only results within that of an exact 8-bit level.

Randomness: image ``k`` of the test split (its index in the full split, so a subset changes nothing) draws
from its own generator keyed by (seed, corruption, severity, k): every checkpoint sees the very same
corrupted images (common random numbers), whatever the batch size, the device or ``--limit``.

Where our rendering differs from the generator's libraries (deliberately small, stated so a generated number
is never mistaken for the published benchmark): the random streams are PyTorch's, not NumPy's; the elastic
transform's two warps are ``grid_sample`` bilinear with the same border rules as cv2 / scipy (reflect-101,
then half-sample symmetric). glass_blur, motion_blur, zoom_blur, snow, frost and spatter need ImageMagick,
the benchmark's frost photographs or a per-pixel sequential shuffle: read them from the published files.
"""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from mmix_eval.evaluate.evaluators.corruptions.table import ALL, BENCHMARK, COLOUR, EXTRA, GENERATED, PARAMS, SEVERITIES  # noqa: F401


def param(name: str, severity: int):
    return PARAMS[name][severity - 1]


def generators(seed: int, name: str, severity: int, indices) -> list[torch.Generator]:
    """One CPU generator per image, keyed by (seed, corruption, severity, the image's test-split index)."""
    base = (seed * 1_000_003 + zlib.crc32(f"{name}/{severity}".encode())) % 2**61
    return [torch.Generator().manual_seed((base * 6_364_136_223 + int(k) * 1_442_695_041 + 1) % 2**63) for k in indices]


def _draw(gens, shape, fn=torch.rand) -> torch.Tensor:
    return torch.stack([fn(shape, generator=g) for g in gens])


def corrupt(name: str, severity: int, x: torch.Tensor, indices, seed: int) -> torch.Tensor:
    """``x`` float (B, C, H, W) on 8-bit levels in [0, 1] on any device, ``indices`` the images' test-split
    indices. Returns the corrupted batch on 8-bit levels (``np.uint8`` of the result, as the published files),
    in x's dtype, on x's device."""
    if name not in PARAMS:
        raise ValueError(f"corruption '{name}' has no generated implementation")
    c = param(name, severity)
    gens = generators(seed, name, severity, indices)
    dev = x.device
    shape = tuple(x.shape[1:])
    x64 = as_float64_levels(x)
    if name == "gaussian_noise":
        out = x64 + c * _draw(gens, shape, torch.randn).to(dev, torch.float64)
    elif name == "speckle_noise":
        out = x64 + x64 * _draw(gens, shape, torch.randn).to(dev, torch.float64) * c
    elif name == "shot_noise":
        rate = (x64 * c).cpu()
        out = torch.stack([torch.poisson(rate[k], generator=g) for k, g in enumerate(gens)]).to(dev) / c
    elif name == "impulse_noise":
        u = _draw(gens, (2, *shape)).to(dev)  # skimage's s&p: flip with p = amount; salt or pepper with p = 1/2
        flip, salt = u[:, 0] < c, u[:, 1] < 0.5
        out = torch.where(flip, salt.to(x64.dtype), x64)
    elif name == "gaussian_blur":
        out = scipy_gaussian(x64, c, truncate=4.0)
    elif name == "defocus_blur":
        out = _correlate_mirror(x64, disk_kernel(*c).to(dev, torch.float64))
    elif name == "brightness":
        h, s, v = rgb_to_hsv(x64)
        out = hsv_to_rgb(h, s, (v + c).clamp(0, 1))
    elif name == "saturate":
        h, s, v = rgb_to_hsv(x64)
        out = hsv_to_rgb(h, (s * c[0] + c[1]).clamp(0, 1), v)
    elif name == "contrast":
        means = image_means(x64)
        out = (x64 - means) * c + means
    elif name == "pixelate":
        return _pil_each(x, lambda im: _pixelate(im, c))
    elif name == "jpeg_compression":
        return _pil_each(x, lambda im: _jpeg(im, c))
    elif name == "elastic_transform":  # the generator's own is float32 here
        out = _elastic(x64.float(), gens, c)
    else:  # fog
        out = _fog(x64, gens, c)
    return to_uint8_levels(out).to(x.dtype)


def as_float64_levels(x: torch.Tensor) -> torch.Tensor:
    """The generator's ``np.array(img) / 255.``: images on 8-bit levels (decoded data, within 1e-4 of a level)
    become ``level / 255`` in float64, bitwise; values between levels are kept as they are, in float64."""
    x = x.double()
    scaled = x * 255.0
    level = torch.round(scaled)
    return torch.where((scaled - level).abs() < 1e-4, level / 255.0, x)


def to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """``np.uint8(np.clip(x, 0, 1) * 255) / 255``, in x's own precision: the 8-bit level at or below, as the
    published files store it (a value a few ulps below an integer goes down a level, as there)."""
    return torch.floor(x.clamp(0, 1) * 255.0) / 255.0


def image_means(x: torch.Tensor) -> torch.Tensor:
    """The generator's ``np.mean(img, axis=(0, 1), keepdims=True)`` of each HWC float64 image, by numpy itself
    over the whole batch in HWC layout (the same reduction, so bitwise the per-image call: tested), as
    (B, C, 1, 1). torch's mean sums in another order, which moves results a few ulps across 8-bit levels."""
    hwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())
    return torch.from_numpy(np.mean(hwc, axis=(1, 2))).to(x.device, x.dtype)[:, :, None, None]


# ---------------------------------------------------------------- blurs


def gaussian_1d(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage's Gaussian kernel: radius int(truncate·σ + 0.5), weights exp(−x²/2σ²), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def _pad(x: torch.Tensor, r: int, mode: str) -> torch.Tensor:
    """Pad H and W by r: 'nearest' (edge), 'mirror' (reflect-101: c b | a b c) or 'reflect' (half-sample: b a | a b)."""
    if r == 0:
        return x
    if mode == "nearest":
        return F.pad(x, (r, r, r, r), mode="replicate")
    if mode == "mirror":
        return F.pad(x, (r, r, r, r), mode="reflect")
    h, w = x.shape[-2:]  # half-sample symmetric, by indices (works for r up to the image size)
    rows = torch.arange(-r, h + r, device=x.device)
    cols = torch.arange(-r, w + r, device=x.device)
    fold = lambda i, n: torch.where(i < 0, -i - 1, torch.where(i >= n, 2 * n - 1 - i, i))
    return x[..., fold(rows, h), :][..., fold(cols, w)]


def scipy_gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d's weights, by its own numpy operations (bitwise): radius
    int(truncate·σ + 0.5), exp(−0.5/σ² · x²), divided by their numpy sum."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * t**2)
    return phi / phi.sum()


def _pad_axis(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Edge-replicate ``r`` samples on both sides of ``dim`` (scipy's 'nearest')."""
    n = x.shape[dim]
    idx = torch.arange(-r, n + r, device=x.device).clamp(0, n - 1)
    return x.index_select(dim, idx)


def scipy_gaussian(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter over H, then W of (B, C, H, W), mode 'nearest' (what skimage.filters.gaussian
    calls), in its operation order: scipy correlates a symmetric kernel as centre·w₀, then adds
    (left + right)·w_j from the outermost pair inwards, so in float64 the results are scipy's to the bit."""
    w = scipy_gaussian_weights(sigma, truncate).tolist()
    r = len(w) // 2
    for dim in (2, 3):
        n = x.shape[dim]
        xp = _pad_axis(x, r, dim)
        out = xp.narrow(dim, r, n) * w[r]
        for j in range(r, 0, -1):
            out = out + (xp.narrow(dim, r - j, n) + xp.narrow(dim, r + j, n)) * w[r - j]
        x = out
    return x


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """skimage.filters.gaussian / scipy.ndimage.gaussian_filter over H and W of (B, C, H, W) (separable)."""
    if sigma <= 0:
        return x
    k = gaussian_1d(sigma, truncate).to(x.device, x.dtype)
    r = (len(k) - 1) // 2
    b, c, h, w = x.shape
    y = _pad(x, r, mode).reshape(b * c, 1, h + 2 * r, w + 2 * r)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """make_cifar_c.py's ``disk`` exactly as OpenCV makes it, in float32: an aliased disk on a 17x17 grid
    (radius ≤ 8) divided by its sum, then cv2.GaussianBlur with a 3x3 kernel of σ = alias_blur (the kernel
    from double exponentials stored as float32; the symmetric row pass, then the column pass, border
    reflect-101). Checked bitwise against cv2 for the CIFAR parameters. Trimmed to its non-zero support
    (the zeros outside add nothing), returned as float64 values."""
    if radius > 8:
        raise ValueError(f"defocus radius expected <= 8 (the CIFAR table's), got {radius}")
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    d = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    d /= np.sum(d)
    t = np.arange(3) - 1.0
    g = np.exp((-0.5 / (alias_blur * alias_blur)) * t * t)
    g = (g * (1.0 / g.sum())).astype(np.float32)  # cv2.getGaussianKernel(3, σ, CV_32F)
    k0, k1 = g[1], g[0]
    p = np.pad(d, 1, mode="reflect")  # numpy's 'reflect' is reflect-101
    rows = p[:, 1:-1] * k0 + (p[:, :-2] + p[:, 2:]) * k1
    k = rows[1:-1, :] * k0 + (rows[:-2, :] + rows[2:, :]) * k1
    nz = np.argwhere(k != 0)
    span = int(max(8 - nz.min(), nz.max() - 8))
    return torch.from_numpy(k[8 - span : 8 + span + 1, 8 - span : 8 + span + 1].astype(np.float64))


def _correlate_mirror(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D (correlation, anchor at the centre, border reflect-101) on each channel."""
    b, c, h, w = x.shape
    r = kernel.shape[-1] // 2
    y = _pad(x, r, "mirror").reshape(b * c, 1, h + 2 * r, w + 2 * r)
    return F.conv2d(y, kernel[None, None]).reshape(b, c, h, w)


# ---------------------------------------------------------------- colour (skimage's HSV)


def rgb_to_hsv(x: torch.Tensor):
    """skimage.color.rgb2hsv on (B, 3, H, W): V = max, S = (max − min) / max (0 where max − min = 0),
    H = (h / 6) mod 1 where h is taken from the largest channel, blue before green before red where they tie
    (skimage assigns red's, then green's, then blue's over it), 0 where max − min = 0."""
    if x.shape[1] != 3:
        raise ValueError(f"HSV corruptions expect 3-channel images, got {x.shape[1]}")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v, _ = x.max(dim=1)
    mn, _ = x.min(dim=1)
    delta = v - mn
    s = torch.where(delta > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(b == v, 4.0 + (r - g) / safe, torch.where(g == v, 2.0 + (b - r) / safe, (g - b) / safe))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return h, s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb: the sector i = ⌊6h⌋ picks (v, t, p), (q, v, p), … ."""
    hi = torch.floor(h * 6.0)
    f = h * 6.0 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    i = hi.long() % 6
    sel = lambda *opts: sum(torch.where(i == k, o, torch.zeros_like(o)) for k, o in enumerate(opts))
    return torch.stack([sel(v, q, p, p, t, v), sel(t, v, v, q, p, p), sel(p, p, t, v, v, q)], dim=1)


# ---------------------------------------------------------------- Pillow-based (as the generator does)


def _pil_each(x: torch.Tensor, fn) -> torch.Tensor:
    from PIL import Image

    u8 = (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    mode = "RGB" if u8.shape[-1] == 3 else "L"
    outs = []
    for im in u8:
        pil = Image.fromarray(im if mode == "RGB" else im[..., 0], mode)
        arr = np.asarray(fn(pil), dtype=np.uint8)
        outs.append(arr if arr.ndim == 3 else arr[..., None])
    return torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


def _pixelate(im, c: float):
    from PIL import Image

    w, h = im.size
    return im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)


def _jpeg(im, quality: int):
    from PIL import Image

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert(im.mode)


# ---------------------------------------------------------------- elastic transform and fog


def _affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """cv2.getAffineTransform: the (2, 3) map taking the 3 points ``src`` to ``dst`` (x, y), batched."""
    ones = torch.ones(*src.shape[:-1], 1, dtype=src.dtype)
    a = torch.cat([src, ones], -1)  # (B, 3, 3)
    return torch.linalg.solve(a, dst).transpose(1, 2)  # (B, 2, 3)


def _sample(x: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, align: bool) -> torch.Tensor:
    """Bilinear samples of x at pixel coordinates (sx, sy) (B, H, W): ``align`` True reflects about the edge
    pixels' centres (reflect-101, cv2's BORDER_REFLECT_101), False about the image edges (scipy's 'reflect')."""
    h, w = x.shape[-2:]
    if align:
        gx, gy = 2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1
    else:
        gx, gy = (2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1
    grid = torch.stack([gx, gy], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=align)


def _elastic(x: torch.Tensor, gens, c) -> torch.Tensor:
    b, _, h, w = x.shape
    size = min(h, w)
    alpha, sigma, jitter = (v * size for v in c)
    dev = x.device
    # 1. a random affine: three points around the centre, each moved by U(−jitter, jitter)
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64)  # as make_cifar_c.py: float32(shape) // 2
    sq = size // 3
    pts1 = torch.stack([centre + sq, torch.stack([centre[0] + sq, centre[1] - sq]), centre - sq])
    u = _draw(gens, (3, 2), lambda s, generator: torch.rand(s, generator=generator, dtype=torch.float64))
    pts2 = pts1 + (u * 2 - 1) * jitter
    m = _affine_from_points(pts1.expand(b, 3, 2), pts2)  # forward map; warpAffine samples its inverse
    full = torch.cat([m, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(b, 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = torch.stack([xx, yy, torch.ones_like(xx)], 0).reshape(3, -1)
    src = inv @ pts  # (B, 2, H*W)
    y1 = _sample(x, src[:, 0].reshape(b, h, w).to(dev), src[:, 1].reshape(b, h, w).to(dev), align=True)
    # 2. a smooth random displacement field: Gaussian-filtered U(−1, 1), times α
    field = _draw(gens, (2, h, w), lambda s, generator: torch.rand(s, generator=generator)).to(dev, x.dtype) * 2 - 1
    field = gaussian_filter(field, sigma, truncate=3.0, mode="reflect") * alpha if sigma > 0 else field * alpha
    gy, gx = torch.meshgrid(
        torch.arange(h, device=dev, dtype=x.dtype), torch.arange(w, device=dev, dtype=x.dtype), indexing="ij"
    )
    return _sample(y1, gx + field[:, 0], gy + field[:, 1], align=False)


def plasma_fractal(gens, mapsize: int, wibbledecay: float) -> torch.Tensor:
    """make_cifar_c.py's diamond-square heightmap (mapsize 32 there), batched: (B, mapsize, mapsize) in [0, 1]."""
    b = len(gens)
    # every level's draws for one image, in one go: squares (n²), then two diamond sets (n² each), n = 1, 2, 4, …
    levels, n, step = [], 1, mapsize
    while step >= 2:
        levels.append(n)
        n, step = n * 2, step // 2
    total = sum(3 * k * k for k in levels)
    draws = _draw(gens, (total,), lambda s, generator: torch.rand(s, generator=generator, dtype=torch.float64)) * 2 - 1
    m = torch.zeros(b, mapsize, mapsize, dtype=torch.float64)
    step, wibble, pos = mapsize, 100.0, 0

    def take(k):
        nonlocal pos
        out = draws[:, pos : pos + k * k].reshape(b, k, k)
        pos += k * k
        return out

    for k in levels:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        m[:, half::step, half::step] = sq / 4 + wibble * wibble * take(k)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0::step, half::step] = lt / 4 + wibble * wibble * take(k)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half::step, 0::step] = tt / 4 + wibble * wibble * take(k)
        step //= 2
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def _fog(x: torch.Tensor, gens, c) -> torch.Tensor:
    h, w = x.shape[-2:]
    mapsize = 1 << max(1, math.ceil(math.log2(max(h, w))))
    fractal = plasma_fractal(gens, mapsize, c[1])[:, :h, :w].to(x.device, x.dtype)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    y = x + c[0] * fractal[:, None]
    return y * max_val / (max_val + c[0])
