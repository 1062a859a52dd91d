"""GPU training throughput: images/s of mmix-eval's own training loop (train()), PreActResNet18 on
CIFAR-sized data resident on the device, vanilla and manifold mixup, under each speed setting:

    fp32                    amp off, channels_last off, no compile
    amp                     bf16 autocast (or --amp fp16, with a gradient scaler)
    amp+channels_last
    amp+channels_last+compile   torch.compile of each stage and the head

Each cell trains --epochs epochs of --images synthetic 32x32 images (batch --batch-size) and reports the
best epoch's images/s from the run's own log.jsonl (the first epoch pays for compilation and warm-up).
Also printed: manifold_mixup / vanilla throughput per setting, each setting / fp32, and the final
training loss of every cell, so that one can see the settings change speed, not results (the same seed,
data and mixing draws go into every cell).

    python benchmarks/bench_gpu_train.py                      # on a CUDA machine
    python benchmarks/bench_gpu_train.py --device cpu --model smallnet --images 2000 --epochs 2 \
        --settings fp32 --batch-size 100                      # a quick check that the script runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from mmix_eval.config import Config
from mmix_eval.data.core import ImageData, Split
from mmix_eval.training import train

SETTINGS = {
    "fp32": dict(amp="off", channels_last=False, compile=False),
    "amp": dict(amp="bf16", channels_last=False, compile=False),
    "amp+channels_last": dict(amp="bf16", channels_last=True, compile=False),
    "amp+channels_last+compile": dict(amp="bf16", channels_last=True, compile=True),
}


def synthetic(n: int, classes: int = 10, size: int = 32) -> ImageData:
    g = torch.Generator().manual_seed(0)
    split = lambda m: Split(
        torch.randint(0, 256, (m, 3, size, size), dtype=torch.uint8, generator=g),
        torch.randint(0, classes, (m,), generator=g),
    )
    return ImageData(
        "synthetic",
        "synthetic",
        [str(i) for i in range(classes)],
        split(n),
        split(1000),
        None,
        True,
        {"spec": "synthetic", "train_size": n, "val_size": 0, "test_size": 1000},
    )


def cell(data, method: str, setting: dict, args) -> dict:
    cfg = Config()
    cfg.model.name = args.model
    cfg.method.name = method
    cfg.train.epochs, cfg.train.batch_size, cfg.train.schedule = args.epochs, args.batch_size, "cosine"
    cfg.train.device = args.device
    cfg.train.amp = args.amp if setting["amp"] != "off" else "off"
    cfg.train.channels_last, cfg.train.compile = setting["channels_last"], setting["compile"]
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", data=data, progress=False)
        log = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
    return {"images_per_s": max(e["images_per_s"] for e in log), "final_loss": log[-1]["train_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="preactresnet18")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--amp", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {', '.join(SETTINGS)}")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu_train: expected a CUDA device, got none (use --device cpu for a quick check)")
    settings = [s.strip() for s in args.settings.split(",")]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: expected names from {', '.join(SETTINGS)}, got {', '.join(unknown)}")
    data = synthetic(args.images)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"{args.model}, {args.images} images/epoch, batch {args.batch_size}, {args.epochs} epochs, {device}, "
        f"torch {torch.__version__}"
    )
    results = {}
    for s in settings:
        for m in ("vanilla", "manifold_mixup"):
            results[(s, m)] = cell(data, m, SETTINGS[s], args)
            r = results[(s, m)]
            print(f"  {s:<27} {m:<15} {r['images_per_s']:>9.0f} img/s   final loss {r['final_loss']:.4f}", flush=True)
    print("\nsetting                      vanilla img/s  manifold img/s  manifold/vanilla  vanilla vs fp32")
    for s in settings:
        v, mm = results[(s, "vanilla")]["images_per_s"], results[(s, "manifold_mixup")]["images_per_s"]
        base = results.get(("fp32", "vanilla"), {}).get("images_per_s")
        print(f"{s:<28} {v:>13.0f} {mm:>15.0f} {mm / v:>17.3f} {(v / base if base else float('nan')):>16.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{s}/{m}": r for (s, m), r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
