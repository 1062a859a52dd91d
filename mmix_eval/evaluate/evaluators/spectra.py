"""How flat the class representations are at each mixing point (Verma et al. 2019, Section 5 and Figure 1c/f):
the singular values of every class's centred hidden representations.

For each layer (the stage outputs of a stage-structured model, k = 1 … n, or module names given by
``layers``, the names manifold mixup takes) the test images' representations are collected by forward hooks
(batched, ``inference_mode``; conv maps flattened, or averaged over space with ``pool: avg``; wider than
``max_dim``: a seeded Gaussian random projection to ``max_dim``, recorded). Per class c, with X_c the centred
(n_c, d) matrix and s its singular values (float64):

    top_share       s_1 / Σ s                          (1 for a rank-1 class)
    dirs90, dirs99  the fewest directions holding 90 % / 99 % of the class's variance (Σ s²)
    eff_rank        exp(entropy of s / Σ s)            (Roy & Vetterli 2007; 1 for rank 1, ≈ d if isotropic)
    within_between  mean_c tr Cov(X_c) / tr Cov(class means)

each averaged over classes; plus the normalised spectrum s_k / Σ s (k = 1 … 20, mean over classes) as
per-index rows (``bin`` = k − 1: plotted, not tabulated). Directions point the paper's way: flatter
(a larger top share, fewer directions, a lower effective rank, tighter classes) counts as better.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Literal

from mmix_eval.errors import mention
from mmix_eval.evaluate.base import Evaluator, MetricSpec, OptionError
from mmix_eval.options import MAX_DIM, check_count

POOLS = ("flatten", "avg")
SPECTRUM = 20


@dataclass(frozen=True)
class SpectraOptions:
    layers: list[str] = field(
        default_factory=list,
        metadata={"help": "module names (default: every stage output of a stage-structured model)"},
    )
    pool: Literal["flatten", "avg"] = field(
        default="flatten", metadata={"help": "flatten or avg (a conv map averaged over space)"}
    )
    max_dim: int = field(
        default=512, metadata={"help": "wider representations: seeded Gaussian projection to this (2 to 65,536)"}
    )


def spectrum_metrics(h, y, classes: int | None = None) -> dict:
    """The metrics of (N, d) representations ``h`` with labels ``y`` (tensors), as floats, and the mean
    normalised spectrum (up to SPECTRUM values, as many as the classes' rank min(n_c − 1, d) allows)."""
    import torch

    from mmix_eval.errors import UserError

    h = h.to(torch.float64)
    labels = sorted(set(int(v) for v in y.tolist()))
    per, means, spectra = [], [], []
    for c in labels:
        xc = h[y == c]
        if len(xc) < 2:
            raise UserError(
                f"spectra: class {c} expected at least 2 test images, got {len(xc)} (raise {mention('limit')})"
            )
        means.append(xc.mean(0))
        xc = xc - xc.mean(0)
        s = torch.linalg.svdvals(xc)
        total = float(s.sum())
        var = s**2
        if total <= 0:  # every image of the class maps to one point: perfectly flat
            per.append({"top_share": 1.0, "dirs90": 1.0, "dirs99": 1.0, "eff_rank": 1.0, "within": 0.0})
            spectra.append([1.0])
            continue
        p = s / total
        cum = torch.cumsum(var, 0) / var.sum()
        nz = p[p > 0]
        per.append(
            {
                "top_share": float(p[0]),
                "dirs90": float(int(torch.searchsorted(cum, torch.tensor(0.9, dtype=cum.dtype) - 1e-12)) + 1),
                "dirs99": float(int(torch.searchsorted(cum, torch.tensor(0.99, dtype=cum.dtype) - 1e-12)) + 1),
                "eff_rank": float(torch.exp(-(nz * nz.log()).sum())),
                "within": float(var.sum()) / (len(xc) - 1),
            }
        )
        spectra.append(p[: min(SPECTRUM, len(xc) - 1, h.shape[1])].tolist())  # a centred class has rank <= n_c - 1
    m = torch.stack(means)
    between = float(((m - m.mean(0)) ** 2).sum()) / max(1, len(m) - 1)
    out = {k: sum(d[k] for d in per) / len(per) for k in ("top_share", "dirs90", "dirs99", "eff_rank")}
    within = sum(d["within"] for d in per) / len(per)
    out["within_between"] = within / between if between > 0 else math.inf
    longest = max(len(s) for s in spectra)  # index k averaged over the classes whose rank reaches it
    out["spectrum"] = [
        sum(s[k] for s in spectra if len(s) > k) / sum(len(s) > k for s in spectra) for k in range(longest)
    ]
    return out


class Spectra(Evaluator):
    name = "spectra"
    version = "1"
    help = "flatness of the class representations at each mixing point (per-class SVD: the paper's Section 5)"
    Options = SpectraOptions
    metrics = {
        "top_share": MetricSpec("largest singular value's share (mean over classes)", "higher", ".3f", headline=True),
        "dirs90": MetricSpec("directions for 90 % of a class's variance", "lower", ".1f"),
        "dirs99": MetricSpec("directions for 99 % of a class's variance", "lower", ".1f"),
        "eff_rank": MetricSpec("effective rank (mean over classes)", "lower", ".2f"),
        "within_between": MetricSpec("within- / between-class variance", "lower", ".4f"),
        "sv": MetricSpec("normalised singular value s_k / Σ s (mean over classes)", None, ".4f"),
    }

    def resolve(self, options):
        if isinstance(options.layers, str):
            return replace(options, layers=[s.strip() for s in options.layers.split(",") if s.strip()])
        return options

    def validate(self, options) -> None:
        if options.pool not in POOLS:
            raise OptionError("pool", f"expected one of {', '.join(POOLS)}, got '{options.pool}'")
        check_count("max_dim", options.max_dim, 2, MAX_DIM)

    def preflight(self, options, ctx) -> None:
        """The layers exist in the model, and a subset leaves each class 2 images at the very least."""
        from mmix_eval.errors import UserError

        resolve_layers(ctx.model, options.layers)
        limit = ctx.common.limit
        if limit is not None and limit < 2 * ctx.num_classes:
            raise UserError(
                f"spectra: expected at least 2 test images per class, so a limit of at least "
                f"{2 * ctx.num_classes} for {ctx.num_classes} classes, got limit {limit}"
            )

    def run(self, target, options, common) -> list[dict]:
        from mmix_eval.evaluate.passes import setup
        from mmix_eval.evaluate.records import record

        model, device, bs, warn = setup(target, common.device, common.batch_size)
        layers = resolve_layers(model, options.layers)
        reps = collect(model, target.test, layers, device, bs, options.pool, options.max_dim, common.seed)
        base = {
            **target.base,
            "evaluator": self.name,
            "n": len(target.test),
            "eval_seed": common.seed,
            "warnings": warn,
            "settings": {**target.settings, "pool": options.pool, "max_dim": options.max_dim},
        }
        y = target.test.y.cpu()
        rows = []
        for name, (h, width) in reps.items():
            m = spectrum_metrics(h, y)
            extra = {"layer": name, "width": width, "projected": width > options.max_dim}
            label = (
                f"layer {name} ({width} units{f', projected to {options.max_dim}' if width > options.max_dim else ''})"
            )
            for k in ("top_share", "dirs90", "dirs99", "eff_rank", "within_between"):
                rows.append(record(base, name, k, m[k], label, **extra))
            for k, v in enumerate(m["spectrum"]):
                rows.append(record(base, name, "sv", v, label, bin=k, **extra))
        return rows


def resolve_layers(model, names: list[str], who: str = "spectra") -> dict[str, object]:
    """name -> module: the given module names, or every stage output ('1' … 'n') of a staged model (``who``: the
    evaluator an error names)."""
    from mmix_eval.errors import UserError, did_you_mean

    if not names:
        stages = getattr(model, "stages", None)
        if stages is None:
            raise UserError(
                f"{who}: {type(model).__name__} has no numbered stages; give module names with {mention('layers')} "
                f"(e.g. {', '.join(n for n, _ in list(model.named_children())[:4])})"
            )
        return {str(i): s for i, s in enumerate(stages, start=1)}
    out, known = {}, [n for n, _ in model.named_modules() if n]
    for n in names:
        if n.isdigit() and hasattr(model, "stages") and 1 <= int(n) <= len(model.stages):
            out[n] = model.stages[int(n) - 1]
            continue
        try:
            out[n] = model.get_submodule(n)
        except AttributeError:
            raise UserError(
                f"{who}: layer '{n}' expected a module name of {type(model).__name__}"
                f"{did_you_mean(n, known)}; e.g. {', '.join(known[:6])}"
            ) from None
    return out


def collect(model, images, layers: dict, device, batch_size: int, pool: str, max_dim: int, seed: int) -> dict:
    """layer -> ((N, d) float32 CPU representations, original width), by forward hooks, removed afterwards."""
    import torch

    from mmix_eval.errors import UserError

    got: dict[str, list] = {n: [] for n in layers}
    proj: dict[str, torch.Tensor] = {}
    width: dict[str, int] = {}

    def hook(name):
        def fn(module, inputs, out):
            if not torch.is_tensor(out):
                raise UserError(f"spectra: layer '{name}' expected a tensor output, got {type(out).__name__}")
            h = out.float()
            if pool == "avg" and h.ndim == 4:
                h = h.mean(dim=(2, 3))
            h = h.flatten(1)
            width[name] = h.shape[1]
            if h.shape[1] > max_dim:
                if name not in proj:
                    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
                    proj[name] = (torch.randn(h.shape[1], max_dim, generator=g) / math.sqrt(max_dim)).to(h.device)
                h = h @ proj[name]
            got[name].append(h.cpu())

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                xb, _ = images.batch(i, min(i + batch_size, len(images)), device)
                model(xb)
    finally:
        for h in handles:
            h.remove()
    return {n: (torch.cat(v), width[n]) for n, v in got.items() if v}
