"""The command line: a thin layer over the Python API. Bad input: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from mmix_eval import __version__
from mmix_eval.errors import UserError

EPILOG = """\
examples:
  mmix-eval train --config configs/quick.yaml --out runs/quick          # embedded digits, ~10 s on a CPU
  mmix-eval train --config configs/cifar10/preactresnet18-manifold_mixup.yaml --out runs/mm-s0
  mmix-eval train --data cifar10 --data-root ~/data --download --model preactresnet18 \\
                  --method manifold_mixup --alpha 2 --seed 1 --out runs/mm-s1
  mmix-eval train --data imagefolder:../shared/data/cifar10-jpeg.tar.gz --model smallnet \\
                  --method input_mixup --epochs 5 --out runs/x
  mmix-eval train --out runs/mm-s1 --resume                              # continue a killed run
  mmix-eval deformations --ckpt runs/quick/model.safetensors --grid table4 --out results/
  mmix-eval fgsm --ckpt runs/quick/model.safetensors --eps 1,2,4,8        # eps in /255 pixel units
  mmix-eval calibration --ckpt runs/quick/model.safetensors --bins 15
  mmix-eval evaluate --ckpt runs/*/model.safetensors --out results/       # every evaluator, many checkpoints
  mmix-eval bench configs/bench/digits-quick.yaml --out runs/bench-digits   # methods x seeds -> report
  mmix-eval report results/ --out reports/x --baseline vanilla --check "manifold_mixup.rotation20 >= vanilla.rotation20"
  mmix-eval ls models | methods | datasets | losses
"""


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a vanilla, input-mixup or manifold-mixup checkpoint",
        description="Train one run into --out: model.safetensors (weights + metadata), model.json, "
                    "log.jsonl, config.yaml and a resumable state.pt. Flags override the --config file.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with sections data, model, method, train (see configs/)")
    p.add_argument("--out", required=True, help="run folder to write")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="data set: digits (embedded), cifar10, cifar100, svhn, imagefolder:PATH")
    g.add_argument("--data-root", help="where torchvision data sets live (default ~/.cache/mmix-eval/data)")
    g.add_argument("--download", action="store_true", default=None, help="download a torchvision data set if missing")
    g.add_argument("--train-limit", type=int, help="seeded random subset of N training images")
    g.add_argument("--test-limit", type=int, help="seeded random subset of N test images")
    g.add_argument("--val-size", type=int, help="hold N training images out for validation")
    g = p.add_argument_group("model and method")
    g.add_argument("--model", help="model name (mmix-eval ls models)")
    g.add_argument("--method", help="method name (mmix-eval ls methods)")
    g.add_argument("--alpha", type=float, help="Beta(alpha, alpha) for lambda (default: input 1.0, manifold 2.0)")
    g.add_argument("--eligible", help="mixing layers: stage numbers 0,1,2 (0 = input) or module names input,layer1,layer2")
    g.add_argument("--loss", help="bce_softmax (official code) or soft_ce")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--schedule", help="step | cosine | onecycle | constant")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any config key, e.g. --set train.milestones=[400,800] (repeatable)")
    g = p.add_argument_group("run folder")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_eligible(text: str) -> list[int | str]:
    """'0,1,2' -> [0, 1, 2]; 'input,layer1,layer2' -> ['', 'layer1', 'layer2'] (module names; input = '')."""
    items = [k.strip() for k in text.split(",")]
    if all(k.isdigit() for k in items if k):
        return [int(k) for k in items if k]
    if any(k.isdigit() for k in items):
        raise UserError(f"--eligible: expected layer indices like 0,1,2 or module names like input,layer1, not both, got '{text}'")
    return ["" if k in ("", "input") else k for k in items]


def _config_from_args(args):
    from mmix_eval.config import merge, load_config, parse_override
    from mmix_eval.train import load_run_config

    if args.resume and args.config is None and (Path(args.out) / "config.yaml").exists():
        cfg = load_run_config(Path(args.out))  # `--out X --resume` alone continues the run as it was started
    else:
        cfg = load_config(args.config)
    flags = {
        "data": {"name": args.data, "root": args.data_root, "download": args.download,
                 "train_limit": args.train_limit, "test_limit": args.test_limit, "val_size": args.val_size},
        "model": {"name": args.model},
        "method": {"name": args.method, "alpha": args.alpha,
                   "eligible": _parse_eligible(args.eligible) if args.eligible is not None else None,
                   "loss": args.loss},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule,
                  "seed": args.seed, "device": args.device},
    }
    given = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in flags.items()}
    if args.method is not None and args.method != cfg.method.name:
        # A new method brings its own defaults unless alpha / eligible are given too.
        given["method"].setdefault("alpha", None)
        given["method"].setdefault("eligible", None)
    cfg = merge(cfg, given, "command line")
    for text in args.set:
        cfg = merge(cfg, parse_override(text), f"--set {text}")
    return cfg


def cmd_train(args) -> int:
    from mmix_eval.train import train

    cfg = _config_from_args(args)
    _join_torchrun(args, cfg.train.device)
    meta = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if meta is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    m = meta["metrics"]
    print(f"saved {Path(args.out) / 'model.safetensors'}  [{meta['method']['name']}, {meta['model']['name']}, "
          f"{meta['data']['spec']}, seed {meta['train']['seed']}]  test acc {m['test_acc']:.2f} %, "
          f"test NLL {m['test_nll']:.4f}, {meta['wall_time_s']:.1f} s training")
    return 0


def _add_eval(sub, name: str, help: str, evaluators: tuple[str, ...]) -> None:
    p = sub.add_parser(name, help=help, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=f"{help[0].upper()}{help[1:]}. Writes tidy records (one row per checkpoint x "
                                   f"condition x metric) to OUT/<run>/<evaluator>.csv and .jsonl.")
    p.add_argument("--ckpt", nargs="+", required=True, metavar="CKPT", help="checkpoint(s), .safetensors (globs work)")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    g = p.add_argument_group("data (default: the checkpoint's own data set and test split)")
    g.add_argument("--data", help="override the data set, e.g. imagefolder:PATH")
    g.add_argument("--data-root", help="override where torchvision data sets live")
    g.add_argument("--limit", type=int, help="a seeded subset of N test images (the same for every checkpoint)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--seed", type=int, default=0, help="deformation parameters, test subset, PGD start (default 0)")
    g.add_argument("--batch-size", type=int, help="default: 500 on a CPU, 1000 on a GPU")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--trust-model-import", action="store_true",
                   help="allow a checkpoint to name a model by module:factory import path (runs that module)")
    if "deformations" in evaluators:
        g.add_argument("--grid", default="table4", help="table4 (default), table9, or a YAML file of {rotation|shear|zoom: value}")
        g.add_argument("--interpolation", default="nearest", help="nearest (the official code's) or bilinear")
    if "fgsm" in evaluators:
        g.add_argument("--eps", default="1,2,4,8", help="comma-separated epsilons in /255 pixel units (default 1,2,4,8)")
        g.add_argument("--attack", default="fgsm", help="fgsm (default) or pgd")
        g.add_argument("--pgd-steps", type=int, default=7, help="PGD steps (default 7)")
    if "calibration" in evaluators:
        g.add_argument("--bins", type=int, default=15, help="equal-width ECE bins (default 15)")
    p.set_defaults(evaluators=evaluators)


def cmd_eval(args) -> int:
    from mmix_eval.evaluate.runner import EvalOptions, run_evaluation

    opts = EvalOptions(data=args.data, data_root=args.data_root, limit=args.limit, seed=args.seed,
                       batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
                       allow_import=args.trust_model_import)
    for key in ("grid", "interpolation", "eps", "attack", "pgd_steps", "bins"):
        if hasattr(args, key):
            setattr(opts, key, getattr(args, key))
    _join_torchrun(args, opts.device)
    run_evaluation(args.ckpt, list(args.evaluators), args.out, opts)
    return 0


def cmd_report(args) -> int:
    from mmix_eval.report import build_report

    command = "mmix-eval " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("mmix-eval") else None
    result = build_report(args.results, args.out, args.baseline, args.check, args.title,
                          extra_provenance={"command": command} if command else None)
    return _report_outcome(result)


def _report_outcome(result) -> int:
    out = result["out"]
    print(f"report: {out / 'report.html'}  (also report.md, table.csv, records.csv, plots/)")
    for path, why in result["bad"]:
        print(f"mmix-eval: warning: skipped unreadable result file {path}: {why}", file=sys.stderr)
    failed = [c for c in result["checks"] if not c[1]]
    for check, ok, why in result["checks"]:
        print(f"{'PASS' if ok else 'FAIL'}: {check}  ({why})")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from mmix_eval.bench import run_bench

    if args.only:
        from mmix_eval.bench import run_one

        print(f"{args.only}: {run_one(args.config, args.out, args.only, args.device)}, evaluated")
        return 0
    result = run_bench(args.config, args.out, progress=not args.no_progress, device=args.device, launcher=args.launcher,
                       wait=not args.no_wait, report_only=args.report_only, submitit_cluster=args.submitit_cluster,
                       jobs=args.jobs, partition=args.partition, gpus_per_run=args.gpus_per_run,
                       cpus_per_run=args.cpus_per_run, mem_gb=args.mem_gb, timeout_min=args.timeout_min)
    if result is None:  # submitted, not waiting
        return 0
    code = _report_outcome(result)
    return 1 if result["failed"] else code


def cmd_ls(args) -> int:
    from mmix_eval.data import DATASETS
    from mmix_eval.data import sources  # noqa: F401
    from mmix_eval.methods import LOSSES, METHODS
    from mmix_eval.models import MODELS

    registry = {"models": MODELS, "methods": METHODS, "datasets": DATASETS, "losses": LOSSES}[args.what]
    width = max(len(n) for n in registry.names())
    for name in registry.names():
        print(f"{name:<{width}}  {registry.describe(name)}")
    if args.what == "models":
        print(f"{'torchvision:NAME':<{width}}  any torchvision classification model, e.g. torchvision:resnet18 (random init)")
    if args.what in ("models", "methods"):
        print(f"{'module:attr':<{width}}  your own, by import path (see docs/plugins.md)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmix-eval",
        description="Train vanilla / input-mixup / manifold-mixup checkpoints and measure their robustness "
                    "and calibration (Verma et al., ICML 2019).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mmix-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    _add_eval(sub, "deformations", "accuracy under the paper's rotations, shears and zooms", ("deformations",))
    _add_eval(sub, "fgsm", "accuracy under white-box FGSM (or PGD) through torchattacks", ("fgsm",))
    _add_eval(sub, "calibration", "NLL, ECE, MCE, Brier, reliability bins and temperature scaling", ("calibration",))
    _add_eval(sub, "evaluate", "every evaluator on one or many checkpoints", ("deformations", "fgsm", "calibration"))
    p = sub.add_parser("bench", help="train methods x seeds, evaluate them all, write the report",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run a bench YAML (see configs/bench/): train each method x seed (skipping finished "
                                   "runs, resuming killed ones), evaluate every checkpoint on identical images and write "
                                   "report.html, report.md, table.csv and plots/ into --out. Exit 1 if a check fails.")
    p.add_argument("config", help="bench YAML")
    p.add_argument("--out", required=True, help="bench folder (runs/, results/ and the report)")
    p.add_argument("--device", help="override the device of every run and evaluation")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("launchers (default: the YAML's launcher section, else inline)")
    g.add_argument("--launcher", choices=["inline", "local", "slurm"],
                   help="inline: one run after another in this process; local: subprocesses, --jobs at a time; "
                        "slurm: one submitit job per run")
    g.add_argument("--jobs", type=int, help="local: runs at a time (default 1)")
    g.add_argument("--partition", help="slurm: partition")
    g.add_argument("--gpus-per-run", type=int, help="slurm: GPUs per job (>1 trains with DDP across them)")
    g.add_argument("--cpus-per-run", type=int, help="slurm: CPUs per task (default 4)")
    g.add_argument("--mem-gb", type=int, help="slurm: memory per job")
    g.add_argument("--timeout-min", type=int, help="slurm: time limit per job in minutes (default 1440)")
    g.add_argument("--no-wait", action="store_true", help="slurm: submit and exit; build the report later with --report-only")
    g.add_argument("--submitit-cluster", choices=["slurm", "local", "debug"],
                   help="slurm launcher's submitit executor: slurm (default), or local/debug to run the jobs here")
    g.add_argument("--report-only", action="store_true", help="run nothing; report what is finished and list what is missing")
    g.add_argument("--only", metavar="RUN", help="train and evaluate this one run of the bench, no report (what each job runs)")
    p = sub.add_parser("report", help="rebuild the HTML / CSV / Markdown report from result records alone",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Aggregate result records (folders of *.jsonl) into a Table-4-style comparison. "
                                   "Exit 1 if a --check fails, 2 on bad input.")
    p.add_argument("results", nargs="+", help="results folders or .jsonl files")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--baseline", default="vanilla", help="method for paired differences (default vanilla)")
    p.add_argument("--check", action="append", default=[], metavar="EXPR",
                   help="CI gate, e.g. 'manifold_mixup.rotation20 >= vanilla.rotation20' or 'vanilla.clean:ece <= 0.1' (repeatable)")
    p.add_argument("--title", help="report title")
    p = sub.add_parser("ls", help="list registered models, methods, data sets or losses")
    p.add_argument("what", choices=["models", "methods", "datasets", "losses"])
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"mmix-eval: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        handler = {"train": cmd_train, "ls": cmd_ls, "report": cmd_report, "bench": cmd_bench}.get(args.command, cmd_eval)
        return handler(args)
    except UserError as e:
        from mmix_eval import distributed

        if distributed.is_main():  # every rank fails alike; one line is enough
            print(f"mmix-eval: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mmix-eval: interrupted; a training run continues from its last state with --resume", file=sys.stderr)
        return 130
    finally:
        if "mmix_eval.distributed" in sys.modules:  # joined by train/evaluate or a multi-task bench job
            sys.modules["mmix_eval.distributed"].shutdown()


def _join_torchrun(args, device: str) -> None:
    """Under torchrun (WORLD_SIZE > 1) join the process group; rank 0 alone prints and writes."""
    from mmix_eval import distributed

    if distributed.env_world_size() <= 1:
        return
    distributed.init_from_env(device)
    if not distributed.is_main():
        args.no_progress = True
        warnings.filterwarnings("ignore")  # rank 0 says it once


if __name__ == "__main__":
    raise SystemExit(main())
