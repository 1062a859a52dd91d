"""The train command: its flags, the run configuration they give, and the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmix_eval.cli.parser import examples, join_torchrun
from mmix_eval.config import TrainConfig, load_config, merge, parse_override, yaml_value
from mmix_eval.errors import UserError
from mmix_eval.trust import refuse_code


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a vanilla, input-mixup or manifold-mixup checkpoint",
        description="Train one run into --out: model.safetensors (weights + metadata), model.json, "
        "log.jsonl, config.yaml and a resumable state.pt. Flags override the --config file.",
        epilog=examples("train"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML file with sections data, model, method, train (see configs/)")
    p.add_argument("--out", required=True, help="run folder to write")
    _data_flags(p.add_argument_group("data"))
    _method_flags(p.add_argument_group("model and method"))
    _training_flags(p.add_argument_group("training"))
    g = p.add_argument_group("run folder")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _data_flags(g) -> None:
    g.add_argument(
        "--data", help="data set: digits (embedded), cifar10, cifar100, svhn, imagefolder:PATH, tinyimagenet:PATH"
    )
    g.add_argument("--data-root", help="where torchvision data sets live (default ~/.cache/mmix-eval/data)")
    g.add_argument("--download", action="store_true", default=None, help="download a torchvision data set if missing")
    g.add_argument(
        "--image-size",
        type=int,
        metavar="S",
        help="image files of any size: decode every image to S x S (the data spec records it as "
        "PATH?image_size=S&resize=...); needed when a folder's images differ in size",
    )
    g.add_argument(
        "--resize",
        choices=("crop", "stretch"),
        help="with --image-size: crop (default: shorter side to S*256/224, centre S x S crop) or stretch "
        "(straight to S x S)",
    )
    g.add_argument("--train-limit", type=int, help="seeded random subset of N training images")
    g.add_argument("--test-limit", type=int, help="seeded random subset of N test images")
    g.add_argument("--val-size", type=int, help="hold N training images out for validation")


def _method_flags(g) -> None:
    g.add_argument("--model", help="model name (mmix-eval ls models)")
    g.add_argument("--method", help="method name (mmix-eval ls methods)")
    g.add_argument("--alpha", type=float, help="Beta(alpha, alpha) for lambda (default: input 1.0, manifold 2.0)")
    g.add_argument(
        "--eligible", help="mixing layers: stage numbers 0,1,2 (0 = input) or module names input,layer1,layer2"
    )
    g.add_argument("--loss", help="bce_softmax (official code) or soft_ce")
    g.add_argument(
        "--method-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one of the method's own arguments, the value read as YAML, e.g. --method-arg prob=0.5 "
        "(repeatable; `mmix-eval ls methods` lists each method's arguments)",
    )


def _training_flags(g) -> None:
    d = TrainConfig()
    also = ", or the --config file's"
    g.add_argument("--epochs", type=int, help=f"training epochs (default {d.epochs}{also})")
    g.add_argument(
        "--batch-size", type=int, help=f"minibatch size, global under torchrun (default {d.batch_size}{also})"
    )
    g.add_argument("--lr", type=float, help=f"SGD learning rate (default {d.lr:g}{also})")
    g.add_argument("--schedule", help=f"step | cosine | onecycle | constant (default {d.schedule}{also})")
    g.add_argument(
        "--seed", type=int, help=f"training seed: initial weights, data order, mixing (default {d.seed}{also})"
    )
    g.add_argument("--device", help=f"auto | cpu | cuda | cuda:N | mps (default {d.device}: cuda if available)")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any config key, e.g. --set train.milestones=[400,800] (repeatable)",
    )


def _parse_eligible(text: str) -> list[int | str]:
    """'0,1,2' -> [0, 1, 2]; 'input,layer1,layer2' -> ['', 'layer1', 'layer2'] (module names; input = '')."""
    items = [k.strip() for k in text.split(",")]
    if all(k.isdigit() for k in items if k):
        return [int(k) for k in items if k]
    if any(k.isdigit() for k in items):
        raise UserError(
            f"--eligible: expected layer indices like 0,1,2 or module names like input,layer1, not both, got '{text}'"
        )
    return ["" if k in ("", "input") else k for k in items]


def parse_method_arg(text: str, flag: str = "--method-arg", what: str = "the method's") -> tuple[str, object]:
    """'prob=0.5' -> ('prob', 0.5): the value read as YAML ('[0, 1]', 'true', 'null')."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise UserError(
            f"{flag} '{text}': expected KEY=VALUE with KEY one of {what} arguments, e.g. "
            f"{'prob=0.5' if flag == '--method-arg' else 'width=32'}"
        )
    return key.strip(), yaml_value(raw)


def _config_from_args(args):
    from mmix_eval.training import load_run_config  # torch: loaded when a run trains

    if args.resume and args.config is None and (Path(args.out) / "config.yaml").exists():
        cfg = load_run_config(Path(args.out))  # `--out X --resume` alone continues the run as it was started
        # A run folder is a file like any other (mmix_eval.trust): a plugin it names is imported only when the
        # command line names it too.
        source = f"--resume: the run folder's {Path(args.out) / 'config.yaml'}"
        refuse_code("data", cfg.data.name, source, "give it yourself with --data", [args.data])
        refuse_code("model", cfg.model.name, source, "give it yourself with --model", [args.model])
        refuse_code("method", cfg.method.name, source, "give it yourself with --method", [args.method])
        refuse_code(
            "loss",
            (cfg.method.kwargs or {}).get("loss") if isinstance(cfg.method.kwargs, dict) else None,
            source,
            "give it yourself with --loss",
            [args.loss],
        )
    else:
        cfg = load_config(args.config)
    flags = {
        "data": {
            "name": args.data,
            "root": args.data_root,
            "download": args.download,
            "train_limit": args.train_limit,
            "test_limit": args.test_limit,
            "val_size": args.val_size,
        },
        "model": {"name": args.model},
        "method": {"name": args.method},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "schedule": args.schedule,
            "seed": args.seed,
            "device": args.device,
        },
    }
    given = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in flags.items()}
    if args.method is not None and args.method != cfg.method.name:
        cfg.method.kwargs = {}  # a new method brings its own defaults unless its arguments are given too
    method_args = {
        "alpha": args.alpha,
        "eligible": _parse_eligible(args.eligible) if args.eligible is not None else None,
        "loss": args.loss,
    }
    given["method"]["kwargs"] = {
        **{k: v for k, v in method_args.items() if v is not None},
        **dict(parse_method_arg(t) for t in args.method_arg),
    }
    cfg = merge(cfg, given, "command line")
    for text in args.set:
        cfg = merge(cfg, parse_override(text), f"--set {text}")
    if args.image_size is not None or args.resize is not None:
        from mmix_eval.data.decode import with_decode

        cfg.data.name = with_decode(cfg.data.name, args.image_size, args.resize)
    return cfg


def cmd_train(args) -> int:
    from mmix_eval.training import train  # torch: loaded when a run trains

    cfg = _config_from_args(args)
    join_torchrun(args, cfg.train.device)
    meta = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if meta is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    m = meta["metrics"]
    print(
        f"saved {Path(args.out) / 'model.safetensors'}  [{meta['method']['name']}, {meta['model']['name']}, "
        f"{meta['data']['spec']}, seed {meta['train']['seed']}]  test acc {m['test_acc']:.2f} %, "
        f"test NLL {m['test_nll']:.4f}, {meta['wall_time_s']:.1f} s wall ("
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in meta["time_split_s"].items())
        + ")"
    )
    return 0
