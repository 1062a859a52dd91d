"""The paper's Figure 1 on a CPU in seconds: a 2-D spiral, an MLP with a 2-unit bottleneck in the middle, trained
with vanilla, input mixup and manifold mixup (or any method, a plugin too) by the project's own training loop.

For each method (seed 0 drawn, every seed counted) the figure shows (a) the input square with the decision
regions shaded by confidence, (b) the bottleneck: the training points' representations by class and, in black,
the representations of points drawn uniformly from the input square, and (c) the per-class singular values of
the bottleneck representations. Beside it, per method over seeds: test accuracy, the mean confidence on the
uniform points, the fraction of the input square predicted with confidence < 0.9, and the bottleneck's
per-class largest-singular-value share. The paper's reading (Verma et al. 2019, Figure 1): manifold mixup gives
broader low-confidence regions (lower off-data confidence, a larger low-confidence fraction) and flatter class
representations (a larger top share); input mixup does not flatten.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mmix_eval.config import Config
from mmix_eval.errors import ParamError

HIDDEN = [64, 64, 2, 64, 64]  # the 2-unit bottleneck is stage 3, linear
BOTTLENECK = 3
PAPER = {
    "mean_conf_uniform": "lower with manifold mixup",
    "low_conf_fraction": "higher with manifold mixup",
    "top_share": "higher (flatter) with manifold mixup, not with input mixup",
    "test_acc": "(not a claim)",
}
LABELS = {
    "test_acc": "test accuracy (%)",
    "mean_conf_uniform": "mean confidence on uniform points",
    "low_conf_fraction": "input square with confidence < 0.9 (%)",
    "top_share": "bottleneck: largest singular value's share (mean over classes)",
}


def spiral_config(method: str, seed: int, data: str, epochs: int) -> Config:
    cfg = Config()
    cfg.data.name = data
    cfg.model.name = "mlp"
    cfg.model.kwargs = {"hidden": HIDDEN, "image_size": 1, "linear_stages": [BOTTLENECK]}
    cfg.method.name = method
    if method == "manifold_mixup":
        cfg.method.kwargs = {"eligible": [0, BOTTLENECK]}  # the input and the bottleneck
    t = cfg.train
    t.epochs, t.batch_size, t.lr, t.schedule, t.weight_decay = epochs, 100, 0.05, "cosine", 1e-4
    t.crop_padding, t.flip, t.seed, t.device, t.save_every = 0, False, seed, "cpu", epochs
    return cfg


def bottleneck(model, x: torch.Tensor) -> torch.Tensor:
    h = model.normalize(x)
    for stage in model.stages[:BOTTLENECK]:
        h = stage(h)
    return h


def analyse(model, data, uniform: torch.Tensor, grid: torch.Tensor) -> dict:
    from mmix_eval.evaluate.evaluators.spectra import spectrum_metrics

    model.eval()
    with torch.inference_mode():
        xt = data.test.x.float() / 255.0
        acc = float((model(xt).argmax(1) == data.test.y).float().mean()) * 100
        conf_u = torch.softmax(model(uniform), 1).max(1).values
        pg = torch.softmax(model(grid), 1)
        h_test = bottleneck(model, xt)
        sv = []
        for c in range(data.num_classes):
            hc = h_test[data.test.y == c].double()
            sv.append(torch.linalg.svdvals(hc - hc.mean(0)).tolist())
        m = spectrum_metrics(h_test, data.test.y)
        return {
            "test_acc": acc,
            "mean_conf_uniform": float(conf_u.mean()),
            "low_conf_fraction": float((pg.max(1).values < 0.9).float().mean()) * 100,
            "top_share": m["top_share"],
            "_grid": pg,
            "_h_train": bottleneck(model, data.train.x.float() / 255.0),
            "_h_uniform": bottleneck(model, uniform),
            "_sv": sv,
        }


def run_spiral(
    methods: list[str], seeds: list[int], out: str | Path, data: str = "spiral", epochs: int = 100, echo=print
) -> dict:
    from mmix_eval.data import load_data
    from mmix_eval.methods import create_method
    from mmix_eval.training import train

    if not methods:
        raise ParamError("methods", "expected at least one method, got none")
    for m in methods:
        create_method(m)  # an unknown method or a bad plugin fails before any training
    if not data.startswith("spiral"):
        raise ParamError("data", f"expected the spiral data set (spiral or spiral:KEY=VALUE,...), got '{data}'")
    d = load_data(data)
    out = Path(out)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(12345)
    uniform = torch.rand(2000, 2, 1, 1, generator=g)
    n = 150
    axis = torch.linspace(0, 1, n)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)[:, :, None, None]
    results: dict = {}
    from mmix_eval.checkpoint import load_checkpoint

    for m in methods:
        for s in seeds:
            run = out / "runs" / f"{_safe(m)}-s{s}"
            train(spiral_config(m, s, data, epochs), run, overwrite=True, progress=False, data=d)
            model, _ = load_checkpoint(run / "model.safetensors", allow_import=False)
            results.setdefault(m, {})[s] = analyse(model, d, uniform, grid)
        echo(f"{m}: {len(seeds)} seed(s) trained ({time.perf_counter() - t0:.1f} s so far)")
    summary = {m: {k: [r[k] for r in per.values()] for k in LABELS} for m, per in results.items()}
    figure = draw(results, d, seeds[0], n)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spiral.png").write_bytes(figure)
    wall = time.perf_counter() - t0
    record = {
        "data": data,
        "data_settings": d.info,
        "model": {"name": "mlp", "hidden": HIDDEN, "bottleneck_stage": BOTTLENECK},
        "epochs": epochs,
        "seeds": seeds,
        "methods": methods,
        "wall_time_s": round(wall, 2),
        "metrics": {
            m: {k: {"values": v, "mean": statistics.fmean(v), "std": _std(v)} for k, v in per.items()}
            for m, per in summary.items()
        },
        "paper": PAPER,
    }
    (out / "results.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "index.html").write_text(html(record, figure), encoding="utf-8")
    (out / "results.md").write_text(markdown(record), encoding="utf-8")
    echo(f"spiral: {out / 'index.html'} (also spiral.png, results.md, results.json), {wall:.1f} s")
    return record


def _std(v: list[float]) -> float | None:
    return statistics.stdev(v) if len(v) > 1 else None


def _safe(name: str) -> str:
    from mmix_eval.evaluate.runner import safe_name

    return safe_name(name)


def _cell(stat: dict, fmt: str) -> str:
    return (
        f"{stat['mean']:{fmt}}"
        + (f" ± {stat['std']:{fmt}}" if stat["std"] is not None else "")
        + f" (n={len(stat['values'])})"
    )


def markdown(record: dict) -> str:
    from mmix_eval.report.render import md

    methods = record["methods"]
    lines = [
        "| metric | " + " | ".join(md(m) for m in methods) + " | the paper's direction |",
        "|---|" + "---|" * (len(methods) + 1),
    ]
    for k, label in LABELS.items():
        fmt = ".2f" if k in ("test_acc", "low_conf_fraction") else ".3f"
        lines.append(
            f"| {label} | " + " | ".join(_cell(record["metrics"][m][k], fmt) for m in methods) + f" | {PAPER[k]} |"
        )
    return "\n".join(lines) + "\n"


def html(record: dict, figure: bytes) -> str:
    import base64
    from html import escape

    rows = []
    for k, label in LABELS.items():
        fmt = ".2f" if k in ("test_acc", "low_conf_fraction") else ".3f"
        cells = "".join(f"<td>{escape(_cell(record['metrics'][m][k], fmt))}</td>" for m in record["methods"])
        rows.append(f"<tr><th>{escape(label)}</th>{cells}<td>{escape(PAPER[k])}</td></tr>")
    head = "".join(f"<th>{escape(m)}</th>" for m in record["methods"])
    img = base64.b64encode(figure).decode()
    return (
        f"<!doctype html><meta charset='utf-8'><title>mmix-eval spiral</title>"
        f"<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:4px 8px;"
        f"border-bottom:1px solid #ddd;text-align:left}}</style><h2>Figure 1 on a spiral</h2>"
        f"<p>{escape(__doc__.split(chr(10) + chr(10))[1])}</p>"
        f"<table><tr><th>metric (mean ± std over seeds)</th>{head}<th>the paper's direction</th></tr>{''.join(rows)}</table>"
        f"<p><img style='max-width:100%' alt='spiral figure' src='data:image/png;base64,{img}'></p>"
        f"<p>Data {escape(record['data'])}, MLP {escape(str(record['model']['hidden']))} (bottleneck: stage "
        f"{record['model']['bottleneck_stage']}, linear), {record['epochs']} epochs, seeds {escape(str(record['seeds']))}; "
        f"{record['wall_time_s']} s.</p>"
    )


def draw(results: dict, data, seed: int, n: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    from mmix_eval.report.plots import fig_png as _fig_png
    from mmix_eval.report.plots import plot_text

    methods = list(results)
    colors = [to_rgb(c) for c in plt.get_cmap("tab10").colors]
    fig, axes = plt.subplots(len(methods), 3, figsize=(11, 3.4 * len(methods)), squeeze=False)
    xy = data.train.x.float().squeeze(-1).squeeze(-1) / 255.0
    y = data.train.y.numpy()
    for row, m in zip(axes, methods):
        r = results[m][seed]
        pg = r["_grid"].numpy()
        cls, conf = pg.argmax(1), pg.max(1)
        k = pg.shape[1]
        img = np.array([colors[c % 10] for c in cls]).reshape(n, n, 3)
        strength = ((conf - 1 / k) / (1 - 1 / k)).reshape(n, n, 1)  # white where unsure, the class colour where sure
        row[0].imshow(1 - strength * (1 - img), origin="lower", extent=(0, 1, 0, 1))
        row[0].scatter(xy[:, 0], xy[:, 1], c=[colors[c % 10] for c in y], s=3, edgecolors="k", linewidths=0.2)
        row[0].set_title(f"{plot_text(m)}: input space (shade = confidence)", fontsize=9)
        ht, hu = r["_h_train"].numpy(), r["_h_uniform"].numpy()
        row[1].scatter(hu[:, 0], hu[:, 1], s=2, c="k", alpha=0.5, label="uniform inputs")
        row[1].scatter(ht[:, 0], ht[:, 1], s=3, c=[colors[c % 10] for c in y], label="training points")
        row[1].set_title("bottleneck (2 units)", fontsize=9)
        width = 0.8 / len(r["_sv"])
        for c, sv in enumerate(r["_sv"]):
            row[2].bar(np.arange(len(sv)) + c * width, sv, width, color=colors[c % 10], label=data.classes[c])
        row[2].set_xticks(np.arange(2) + width * (len(r["_sv"]) - 1) / 2, ["s1", "s2"])
        row[2].set_title(f"per-class singular values (top share {r['top_share']:.3f})", fontsize=9)
    axes[0][1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=2)
    axes[0][2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"Verma et al. 2019, Figure 1, reproduced on a spiral (seed {seed})", fontsize=11)
    fig.tight_layout()
    return _fig_png(fig)
