"""Hand-made inputs shared by tests in several folders: result records with hand-computable numbers, and image
folder trees whose pixels encode their labels."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from mmix_eval.evaluate.base import SHIFT_METRICS
from mmix_eval.evaluate.records import record, with_specs, write_records


def specs(rows: list[dict], evaluator: str) -> list[dict]:
    """The spec columns the built-in shift evaluators give their rows (without importing them: no torch)."""
    return with_specs(rows, SimpleNamespace(name=evaluator, metrics=SHIFT_METRICS))


def fake_results(root: Path, data="digits", model="smallnet", methods=None, drop=()) -> Path:
    """records for method x seed; acc values chosen so means, stds and paired differences are easy by hand."""
    methods = methods or {"vanilla": {0: 50.0, 1: 60.0}, "manifold_mixup": {0: 54.0, 1: 62.0}}
    for method, by_seed in methods.items():
        for seed, acc in by_seed.items():
            run = f"{method}-s{seed}"
            settings = (
                {"alpha": 2.0, "eligible": [0, 1, 2], "loss": "bce_softmax"}
                if "mixup" in method
                else {"loss": "bce_softmax"}
            )
            base = {
                "run": run,
                "checkpoint": f"runs/{run}/model.safetensors",
                "model": model,
                "method": method,
                "method_settings": settings,
                "train_seed": seed,
                "data": data,
                "n": 100,
                "eval_seed": 0,
            }
            d = {**base, "evaluator": "deformations", "settings": {"grid": "table4", "interpolation": "nearest"}}
            rows = [
                record(d, "clean", "acc", acc + 10, label="Clean"),
                record(d, "clean", "nll", 1.0 - acc / 100),
                record(d, "clean", "ece", 0.1 + seed / 100),
                record(d, "rotation20", "acc", acc, label="Rotation U(−20°, 20°)"),
            ]
            write_records(specs(rows, "deformations"), root / run / "deformations")
            if (method, "fgsm") not in drop:
                f = {**base, "evaluator": "fgsm", "settings": {"attack": "fgsm"}}
                write_records(
                    specs(
                        [
                            record(f, "clean", "acc", acc + 10),
                            record(f, "eps8", "acc", acc - 20, label="FGSM ε = 8/255", eps_255=8.0, strength=8.0),
                        ],
                        "fgsm",
                    ),
                    root / run / "fgsm",
                )
    return root


def corruption_records(
    root: Path, method: str, seed: int, errors: dict, clean_err: float, data: str = "cifar10"
) -> None:
    """One run's corruption records: per (corruption, severity) error %, the clean error %, their mean."""
    from mmix_eval.evaluate.base import get_evaluator

    base = {
        "run": f"{method}-s{seed}",
        "checkpoint": "x",
        "model": "smallnet",
        "method": method,
        "method_settings": {},
        "train_seed": seed,
        "data": data,
        "n": 100,
        "eval_seed": 0,
        "evaluator": "corruptions",
        "settings": {"source": "generated"},
    }
    rows = [record(base, "clean", "acc", 100 - clean_err)]
    for (c, s), e in errors.items():
        rows.append(record(base, f"{c}-{s}", "acc", 100 - e, corruption=c, severity=s))
    rows.append(record(base, "mean", "acc", 100 - sum(errors.values()) / len(errors)))
    write_records(with_specs(rows, get_evaluator("corruptions")), root / base["run"] / "corruptions")


def write_tree(root: Path, layout="splits", size=6, mode="RGB", classes=("cat", "dog", "emu"), per_class=4, fmt="png"):
    """Each image's pixels encode (class index, image index) so labels and order can be checked."""
    splits = ["train", "test"] if layout == "splits" else [""]
    for s in splits:
        for ci, c in enumerate(classes):
            d = root / s / c
            d.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                value = 40 * ci + j
                arr = np.full((size, size, 3) if mode == "RGB" else (size, size), value, np.uint8)
                Image.fromarray(arr, mode).save(d / f"{j:03d}.{fmt}")
    return root


TINY_WNIDS = ("n01443537", "n01629819", "n01641577")
TINY_WORDS = {
    "n01443537": "goldfish, Carassius auratus",
    "n01629819": "European fire salamander, Salamandra",
    "n01641577": "bullfrog, Rana catesbeiana",
    "n09999999": "unrelated, not a class",
}


def tiny_pixel(label: int, j: int, split: str) -> int:
    """The value that fills a synthetic Tiny-ImageNet image: its class, index and split can be read back."""
    return 60 * label + 3 * j + (1 if split == "val" else 0)


def write_tinyimagenet(root: Path, per_class=4, val_per_class=3, size=8, grey_val=()) -> Path:
    """The distributed layout: wnids.txt, words.txt, train/<wnid>/images/, val/images/ + val_annotations.txt
    (val images listed in shuffled order, as the real file), test/images/ (unlabelled, never read)."""
    top = root / "tiny-imagenet-200"
    (top / "val" / "images").mkdir(parents=True)
    (top / "test" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(TINY_WNIDS[::-1]) + "\n")  # not sorted: labels follow sorted order
    (top / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in TINY_WORDS.items()))
    lines, k = [], 0
    for li, w in enumerate(TINY_WNIDS):
        d = top / "train" / w / "images"
        d.mkdir(parents=True)
        (top / "train" / w / f"{w}_boxes.txt").write_text("")
        for j in range(per_class):
            Image.fromarray(np.full((size, size, 3), tiny_pixel(li, j, "train"), np.uint8)).save(
                d / f"{w}_{j}.JPEG", quality=100
            )
        for j in range(val_per_class):
            name = f"val_{k}.JPEG"
            k += 1
            v = tiny_pixel(li, j, "val")
            img = (
                Image.fromarray(np.full((size, size), v, np.uint8), "L")
                if name in grey_val
                else Image.fromarray(np.full((size, size, 3), v, np.uint8))
            )
            img.save(top / "val" / "images" / name, quality=100)
            lines.append(f"{name}\t{w}\t0\t0\t{size}\t{size}")
    rng = np.random.default_rng(0)
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines[i] for i in rng.permutation(len(lines))) + "\n")
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(top / "test" / "images" / "test_0.JPEG")
    return top


def write_tinyimagenet_c(root: Path, tiny: Path, corruptions=("fog", "contrast"), severities=(1, 2, 3, 4, 5)) -> Path:
    """Hendrycks' Tiny-ImageNet-C layout, <corruption>/<severity>/<wnid>/<val file name>: each image is its val
    image darkened by 10 x severity (+ 5 for the second corruption), so which file was read can be checked."""
    ann = [line.split("\t") for line in (tiny / "val" / "val_annotations.txt").read_text().splitlines() if line]
    for ci, c in enumerate(corruptions):
        for s in severities:
            for name, w, *_ in ann:
                d = root / c / str(s) / w
                d.mkdir(parents=True, exist_ok=True)
                a = np.asarray(Image.open(tiny / "val" / "images" / name).convert("RGB")).astype(np.int64)
                Image.fromarray(np.clip(a - 10 * s - 5 * ci, 0, 255).astype(np.uint8)).save(d / name, quality=100)
    return root


def staged_net():
    """A tiny stage-structured network as the built-ins are (``stages``, a pooled head ending in an ``nn.Linear``):
    1 x 8 x 8 images, two ReLU conv stages of 4 and 6 channels, 3 classes, seeded weights. torch loads here."""
    import torch

    class Staged(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            conv = lambda a, b: torch.nn.Sequential(torch.nn.Conv2d(a, b, 3, padding=1), torch.nn.ReLU())  # noqa: E731
            self.stages = torch.nn.ModuleList([conv(1, 4), conv(4, 6)])
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            for s in self.stages:
                x = s(x)
            return self.fc(x.mean(dim=(2, 3)))

    return Staged
