"""Training-speed benchmark, measured in one run on this machine.

Prints two ratios (median of interleaved repetitions, so machine noise hits both sides alike):
  1. manifold_mixup training-step time / vanilla training-step time, same model and batch (target <= 1.05);
  2. mmix-eval's training-loop throughput / a minimal hand-written PyTorch loop's, on the same in-memory
     uint8 tensors, same model, optimizer and loss, no augmentation on either side (target >= 0.95).
Also printed for information: the project loop with its batched crop + flip, and end-to-end train() time.

    python benchmarks/bench_train.py [--model smallnet] [--batch-size 100] [--device cpu] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmix_eval.config import Config
from mmix_eval.data.augment import to_float
from mmix_eval.data.core import ImageData, Split
from mmix_eval.methods import create_method
from mmix_eval.models import create_model
from mmix_eval.training import train


def synthetic(n: int, size: int = 32) -> ImageData:
    g = torch.Generator().manual_seed(0)
    split = lambda m: Split(
        torch.randint(0, 256, (m, 3, size, size), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (m,), generator=g),
    )
    return ImageData(
        "synthetic",
        "synthetic",
        [str(i) for i in range(10)],
        split(n),
        split(200),
        None,
        True,
        {"spec": "synthetic", "train_size": n, "val_size": 0, "test_size": 200},
    )


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(model_name, method_name, batches, device, steps) -> float:
    """Seconds per optimizer step (method.step + backward + SGD step) over ``steps`` steps."""
    torch.manual_seed(0)
    model = create_model(model_name, 10, 3).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    method = create_method(method_name)
    rng = np.random.default_rng(0)
    for i in range(3):  # warm-up
        x, y = batches[i % len(batches)]
        method.step(model, x, y, rng).loss.backward()
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        loss = method.step(model, x, y, rng).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def hand_loop(model_name, data: ImageData, bs, epochs, device) -> list[float]:
    """The minimal loop: shuffle, slice, to float, forward, cross-entropy, backward, SGD. Images/s per epoch."""
    torch.manual_seed(0)
    model = create_model(model_name, 10, 3, *data.mean_std()).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x_all, y_all = data.train.x.to(device), data.train.y.to(device)
    n = len(data.train)
    rates = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(n).to(device)
        for b in range(n // bs):
            idx = perm[b * bs : (b + 1) * bs]
            loss = F.cross_entropy(model(x_all[idx].float() / 255), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        rates.append((n // bs) * bs / (time.perf_counter() - t0))
    return rates


def project_loop(model_name, data, bs, epochs, device, augment: bool) -> tuple[list[float], float]:
    cfg = Config()
    cfg.model.name, cfg.method.name, cfg.method.loss = model_name, "vanilla", "soft_ce"
    t = cfg.train
    t.epochs, t.batch_size, t.lr, t.schedule, t.device = epochs, bs, 0.01, "constant", str(device)
    t.crop_padding, t.flip, t.save_every = (2, True, 1) if augment else (0, False, 1)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        train(cfg, out, progress=False, data=data)
        wall = time.perf_counter() - t0
        import json

        log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [r["images_per_s"] for r in log], wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smallnet")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--images", type=int, default=3000, help="in-memory training images (CIFAR-sized)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved repetitions per measurement")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per step-time sample")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args()
    device = torch.device(args.device)
    bs = args.batch_size
    data = synthetic(args.images)
    print(
        f"device {device} ({torch.get_num_threads()} threads), model {args.model}, batch {bs}, "
        f"{args.images} images 3x32x32, torch {torch.__version__}"
    )

    g = torch.Generator().manual_seed(1)
    batches = [
        (to_float(data.train.x[i * bs : (i + 1) * bs]).to(device), data.train.y[i * bs : (i + 1) * bs].to(device))
        for i in range(4)
    ]
    van, mm = [], []
    for r in range(args.rounds):  # alternate the order so drift favours neither
        order = [("vanilla", van), ("manifold_mixup", mm)]
        for name, acc in order if r % 2 == 0 else order[::-1]:
            acc.append(step_times(args.model, name, batches, device, args.steps))
    step_ratio = statistics.median(mm) / statistics.median(van)

    hand, proj, proj_aug, walls = [], [], [], []
    epochs = 2
    for r in range(max(2, args.rounds // 2)):
        runs = [("hand", None), ("proj", False)]
        for kind, aug in runs if r % 2 == 0 else runs[::-1]:
            if kind == "hand":
                hand += hand_loop(args.model, data, bs, epochs, device)
            else:
                rates, wall = project_loop(args.model, data, bs, epochs, device, aug)
                proj += rates
                walls.append(wall)
        proj_aug += project_loop(args.model, data, bs, epochs, device, True)[0]
    loop_ratio = statistics.median(proj) / statistics.median(hand)
    del g

    print(
        f"\nstep time, vanilla           {statistics.median(van) * 1e3:8.2f} ms  (samples {', '.join(f'{v * 1e3:.1f}' for v in van)})"
    )
    print(
        f"step time, manifold_mixup    {statistics.median(mm) * 1e3:8.2f} ms  (samples {', '.join(f'{v * 1e3:.1f}' for v in mm)})"
    )
    print(f"throughput, hand-written loop {statistics.median(hand):8.0f} img/s")
    print(f"throughput, mmix-eval loop    {statistics.median(proj):8.0f} img/s  (no augmentation)")
    print(
        f"throughput, mmix-eval loop    {statistics.median(proj_aug):8.0f} img/s  (with batched crop + flip, for information)"
    )
    print(
        f"train() end to end, {epochs} epochs  {statistics.median(walls):8.2f} s  (incl. state saves, test pass, checkpoint)"
    )
    ok1, ok2 = step_ratio <= 1.05, loop_ratio >= 0.95
    print(f"\nmanifold_mixup / vanilla step time : {step_ratio:.3f}  (target <= 1.05: {'met' if ok1 else 'MISSED'})")
    print(f"mmix-eval loop / hand-written loop : {loop_ratio:.3f}  (target >= 0.95: {'met' if ok2 else 'MISSED'})")
    return 0 if (ok1 and ok2) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
