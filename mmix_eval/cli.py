"""The command line: a thin layer over the Python API. Bad input: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from mmix_eval import __version__
from mmix_eval.errors import UserError, did_you_mean

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
  mmix-eval evaluate --ckpt runs/x/model.safetensors --evaluators deformations,my_evals:Occlusion --set my_evals:Occlusion.patch=8
  mmix-eval ls models | methods | evaluators | datasets | losses
"""


EXAMPLES = {
    "train": """\
examples:
  mmix-eval train --config configs/quick.yaml --out runs/quick          # embedded digits, ~10 s on a CPU
  mmix-eval train --data cifar10 --data-root ~/data --download --model preactresnet18 \\
                  --method manifold_mixup --alpha 2 --seed 1 --out runs/mm-s1
  mmix-eval train --method cutmix --method-arg prob=1.0 --config configs/quick.yaml --out runs/cm
  mmix-eval train --out runs/mm-s1 --resume                              # continue a killed run
""",
    "deformations": """\
examples:
  mmix-eval deformations --ckpt runs/quick --out results/                 # the paper's Table 4 grid
  mmix-eval deformations --ckpt 'runs/*' --limit 2000 --interpolation nearest
  mmix-eval deformations --ckpt x.pt --model preactresnet18 --data cifar10 --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26
""",
    "fgsm": """\
examples:
  mmix-eval fgsm --ckpt runs/quick --eps 1,2,4,8                          # eps in /255 pixel units
  mmix-eval fgsm --ckpt runs/quick --eps 8/255 --attack pgd --pgd-steps 10 # written to fgsm-pgd10.*
  mmix-eval fgsm --ckpt runs/quick --attack fgsm_official                 # the official code's: eps 0.01,0.03 normalised
  mmix-eval fgsm --ckpt runs/quick --eps 0.1 --eps-unit fraction          # 0.1 of the range = 25.5/255
""",
    "calibration": """\
examples:
  mmix-eval calibration --ckpt runs/quick --bins 15                      # NLL, ECE, MCE, Brier, reliability
  mmix-eval calibration --ckpt 'runs/*/model.safetensors' --out results/
""",
    "evaluate": """\
examples:
  mmix-eval evaluate --ckpt 'runs/*' --out results/                       # every default evaluator
  mmix-eval evaluate --ckpt runs/x --evaluators deformations,my_evals:Occlusion --set my_evals:Occlusion.patch=8
""",
    "bench": """\
examples:
  mmix-eval bench configs/bench/digits-quick.yaml --out runs/bench-digits # methods x seeds -> report
  mmix-eval bench configs/bench/baselines-digits.yaml --out runs/bl --dry-run
  mmix-eval bench configs/bench/cifar10-cpu.yaml --out runs/b --launcher local --jobs 2
""",
    "report": """\
examples:
  mmix-eval report runs/bench-digits/results --out reports/x
  mmix-eval report results/ --out reports/x --baseline vanilla --check "manifold_mixup.rotation20 >= vanilla.rotation20"
""",
}
EPILOG_DEFAULT = """\
examples:
  mmix-eval {name} --ckpt runs/quick --out results/
  mmix-eval ls evaluators                                                  # every option of every evaluator
"""


def examples(name: str) -> str:
    return EXAMPLES.get(name) or EPILOG_DEFAULT.format(name=name)


class Parser(argparse.ArgumentParser):
    """No prefix abbreviations (``--epoch 1`` is not taken for ``--epochs``), an unknown option gets a
    suggestion, and every parse error is one line on stderr with exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = getattr(self, "subcommands", {}).get(getattr(ns, "command", None), self)
            options = [o for a in sub._actions for o in a.option_strings]
            first = next((x for x in extras if x.startswith("-")), extras[0])
            flag = first.split("=", 1)[0]
            hint = did_you_mean(flag, options) if flag.startswith("-") else ""
            what = f"unknown option '{flag}'" if flag.startswith("-") else f"unexpected argument '{first}'"
            sub.error(f"{what}{hint}; see {sub.prog} --help")
        return ns

    def error(self, message):
        self.exit(2, f"mmix-eval: error: {self.prog.removeprefix('mmix-eval ') + ': ' if ' ' in self.prog else ''}"
                     f"{message}\n")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a vanilla, input-mixup or manifold-mixup checkpoint",
        description="Train one run into --out: model.safetensors (weights + metadata), model.json, "
                    "log.jsonl, config.yaml and a resumable state.pt. Flags override the --config file.",
        epilog=examples("train"), formatter_class=argparse.RawDescriptionHelpFormatter)
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
    g.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="one of the method's own arguments, the value read as YAML, e.g. --method-arg prob=0.5 "
                        "(repeatable; `mmix-eval ls methods` lists each method's arguments)")
    g = p.add_argument_group("training")
    from mmix_eval.config import TrainConfig

    d = TrainConfig()
    also = ", or the --config file's"
    g.add_argument("--epochs", type=int, help=f"training epochs (default {d.epochs}{also})")
    g.add_argument("--batch-size", type=int, help=f"minibatch size, global under torchrun (default {d.batch_size}{also})")
    g.add_argument("--lr", type=float, help=f"SGD learning rate (default {d.lr:g}{also})")
    g.add_argument("--schedule", help=f"step | cosine | onecycle | constant (default {d.schedule}{also})")
    g.add_argument("--seed", type=int, help=f"training seed: initial weights, data order, mixing (default {d.seed}{also})")
    g.add_argument("--device", help=f"auto | cpu | cuda | cuda:N | mps (default {d.device}: cuda if available)")
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


def parse_method_arg(text: str, flag: str = "--method-arg", what: str = "the method's") -> tuple[str, object]:
    """'prob=0.5' -> ('prob', 0.5): the value read as YAML ('[0, 1]', 'true', 'null')."""
    from mmix_eval.config import yaml_value

    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise UserError(f"{flag} '{text}': expected KEY=VALUE with KEY one of {what} arguments, e.g. "
                        f"{'prob=0.5' if flag == '--method-arg' else 'width=32'}")
    return key.strip(), yaml_value(raw)


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
        "method": {"name": args.method},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule,
                  "seed": args.seed, "device": args.device},
    }
    given = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in flags.items()}
    if args.method is not None and args.method != cfg.method.name:
        cfg.method.kwargs = {}  # a new method brings its own defaults unless its arguments are given too
    method_args = {"alpha": args.alpha, "eligible": _parse_eligible(args.eligible) if args.eligible is not None else None,
                   "loss": args.loss}
    given["method"]["kwargs"] = {**{k: v for k, v in method_args.items() if v is not None},
                                 **dict(parse_method_arg(t) for t in args.method_arg)}
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
          f"test NLL {m['test_nll']:.4f}, {meta['wall_time_s']:.1f} s wall ("
          + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in meta["time_split_s"].items()) + ")")
    return 0


COMMON_FLAGS = {"data": "--data", "data_root": "--data-root", "download": "--download", "limit": "--limit", "class_map": "--class-map",
                "seed": "--seed", "bins": "--bins", "batch_size": "--batch-size", "device": "--device"}


def _flag(param: str) -> str:
    return "--" + param.replace("_", "-")


def _add_eval(sub, name: str, help: str, specs: tuple[str, ...] | None) -> None:
    """One evaluation sub-command. ``specs``: the evaluator it runs (its flags generated from its options),
    or None for ``evaluate`` (every built-in's flags, plus --evaluators and --set for plugins)."""
    from mmix_eval.evaluate.base import DEFAULT_EVALUATORS, EvalOptions, get_evaluator, option_fields

    p = sub.add_parser(name, help=help, epilog=examples(name), formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=f"{help[0].upper()}{help[1:]}. Writes tidy records (one row per checkpoint x "
                                   f"condition x metric) to OUT/<run>/<evaluator>.csv and .jsonl, and the per-image "
                                   f"outcomes to <evaluator>.outcomes.npz.")
    p.add_argument("--ckpt", nargs="+", required=True, metavar="CKPT",
                   help="checkpoint(s): .safetensors files, run folders, or quoted globs; with --model, plain state "
                        "dicts (.safetensors, or .pt/.pth read by torch.load(weights_only=True))")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    common = {n: (d, h) for n, _, d, h in option_fields(EvalOptions)}
    g = p.add_argument_group("data (default: the checkpoint's own data set and test split)")
    for key in ("data", "data_root", "limit", "class_map"):
        g.add_argument(COMMON_FLAGS[key], dest=f"common_{key}", metavar=key.upper(), help=common[key][1])
    g.add_argument("--download", dest="common_download", action="store_true", default=None, help=common["download"][1])
    g = p.add_argument_group("models made elsewhere (plain state dicts; see docs/plugins.md)")
    g.add_argument("--model", dest="foreign_model", metavar="NAME",
                   help="rebuild each --ckpt as this model: a registered name, torchvision:ARCH or timm:ARCH "
                        "(needs --data)")
    g.add_argument("--model-arg", dest="foreign_model_arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an argument of the model, e.g. --model-arg width=32 (repeatable)")
    g.add_argument("--mean", dest="foreign_mean", metavar="M1,M2,M3",
                   help="per-channel mean of [0, 1] inputs the weights were trained with, applied inside the model "
                        "(default: none, for a model that normalises inside)")
    g.add_argument("--std", dest="foreign_std", metavar="S1,S2,S3", help="per-channel std to go with --mean")
    g.add_argument("--key-layout", dest="foreign_layout", default="auto", metavar="LAYOUT",
                   help="auto (default), mmix-eval, official (the official Manifold Mixup code's PreActResNet), or "
                        "plain (a torchvision / timm network's own names)")
    g = p.add_argument_group("evaluation")
    for key in ("seed", "bins", "batch_size", "device"):
        default = common[key][0]
        g.add_argument(COMMON_FLAGS[key], dest=f"common_{key}", metavar=key.upper(),
                       help=common[key][1] + (f" (default {default})" if default is not None else ""))
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--trust-model-import", action="store_true",
                   help="allow a checkpoint to name a model by module:factory import path (runs that module)")
    if specs is None:
        g.add_argument("--evaluators", dest="evaluators_text", default=",".join(DEFAULT_EVALUATORS), metavar="LIST",
                       help="comma-separated evaluators: built-in names or module:Class plugins "
                            f"(default {','.join(DEFAULT_EVALUATORS)}; mmix-eval ls evaluators)")
        g.add_argument("--set", action="append", default=[], metavar="EVALUATOR.OPTION=VALUE", dest="eval_set",
                       help="an option of any evaluator, e.g. --set my_evals:Occlusion.patch=8 (repeatable)")
    flags = {}
    for spec in specs or DEFAULT_EVALUATORS:
        ev = get_evaluator(spec)
        fields = option_fields(ev.Options)
        if not fields:
            continue
        g = p.add_argument_group(f"{ev.name} options")
        for opt, hint, default, text in fields:
            shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default) if isinstance(default, list) else default
            g.add_argument(_flag(opt), dest=f"opt_{spec}_{opt}", metavar=opt.upper(),
                           help=f"{text} (default {shown})")
            flags[f"opt_{spec}_{opt}"] = (spec, opt)
    p.set_defaults(evaluators=list(specs) if specs else None, option_flags=flags)


def _eval_plan(args):
    from mmix_eval.evaluate.base import EvalOptions, OptionError
    from mmix_eval.evaluate.runner import make_plan

    specs = args.evaluators or [s.strip() for s in args.evaluators_text.split(",") if s.strip()]
    options: dict[str, dict] = {}
    for dest, (spec, opt) in args.option_flags.items():
        value = getattr(args, dest)
        if value is not None and spec in specs:
            options.setdefault(spec, {})[opt] = value
    for text in getattr(args, "eval_set", None) or []:
        key, eq, value = text.partition("=")
        spec, dot, opt = key.rpartition(".")
        if not eq or not dot or not spec or not opt:
            raise UserError(f"--set: expected EVALUATOR.OPTION=VALUE like fgsm.eps=1,2 or my_evals:Occlusion.patch=8, got '{text}'")
        options.setdefault(spec, {})[opt] = value
    common = {k: getattr(args, f"common_{k}") for k in COMMON_FLAGS if getattr(args, f"common_{k}") is not None}
    try:
        for k in ("limit", "seed", "bins", "batch_size"):
            if k in common:
                try:
                    common[k] = int(common[k])
                except ValueError:
                    raise OptionError(k, f"expected an integer, got '{common[k]}'") from None
        opts = EvalOptions(**common, progress=not args.no_progress, allow_import=args.trust_model_import)
        opts.check()
        plan = make_plan(specs, options, "--evaluators" if args.evaluators is None else args.command)
    except OptionError as e:  # the library names the parameter; here it is the flag
        flag = COMMON_FLAGS.get(e.param) or (_flag(e.param) if any(o == e.param for _, o in args.option_flags.values())
                                             else e.param)
        raise UserError(f"{flag}: {e.detail}") from None
    return plan, opts


def cmd_eval(args) -> int:
    from mmix_eval.evaluate.base import OptionError
    from mmix_eval.evaluate.runner import run_evaluation

    plan, opts = _eval_plan(args)
    foreign = _foreign(args, opts)
    _join_torchrun(args, opts.device)
    try:
        run_evaluation(_expand_ckpts(args.ckpt, foreign is not None), plan, args.out, opts, foreign=foreign)
    except OptionError as e:  # raised while loading: the library names the parameter, the user typed a flag
        raise UserError(f"{COMMON_FLAGS.get(e.param, _flag(e.param))}: {e.detail}") from None
    return 0


def _foreign(args, opts):
    """The --model / --model-arg / --mean / --std / --key-layout flags as a Foreign, or None without --model."""
    from mmix_eval.foreign import Foreign

    extra = [f for f, v in (("--model-arg", args.foreign_model_arg), ("--mean", args.foreign_mean),
                            ("--std", args.foreign_std), ("--key-layout", args.foreign_layout != "auto")) if v]
    if args.foreign_model is None:
        if extra:
            raise UserError(f"{extra[0]}: expected --model too (these rebuild a plain state dict), got no --model")
        return None

    def floats(flag, text):
        if text is None:
            return None
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise UserError(f"{flag}: expected comma-separated numbers like 0.49,0.48,0.45, got '{text}'") from None

    foreign = Foreign(args.foreign_model, opts.data, dict(parse_method_arg(t, "--model-arg", "the model's") for t in args.foreign_model_arg),
                      floats("--mean", args.foreign_mean), floats("--std", args.foreign_std), args.foreign_layout,
                      opts.data_root, bool(opts.download))
    foreign.check()
    opts.data = None  # the data set is the state dict's own now (its metadata names it)
    return foreign


def _expand_ckpts(items: list[str], foreign: bool = False) -> list[str]:
    """Quoted globs expanded here (the shell expands unquoted ones); a run folder means its model.safetensors
    (with ``foreign``, every .safetensors / .pt / .pth file in it)."""
    import glob

    out = []
    for item in items:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise UserError(f"--ckpt: expected checkpoint files, got a pattern that matches nothing: '{item}'")
        for m in matches:
            path = Path(m)
            if path.is_dir() and foreign:
                files = sorted(str(f) for f in path.iterdir() if f.suffix in (".safetensors", ".pt", ".pth"))
                if not files:
                    raise UserError(f"--ckpt: expected state dict files (.safetensors, .pt, .pth) in folder '{m}', got none")
                out += files
            else:
                out.append(str(path / "model.safetensors") if path.is_dir() else m)
    return out


def cmd_report(args) -> int:
    from mmix_eval.report import build_report

    command = "mmix-eval " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("mmix-eval") else None
    sections = {}
    for given in args.section:
        evaluator, eq, path = given.partition("=")
        if not eq or not evaluator or ":" not in path:
            raise UserError(f"--section '{given}': expected EVALUATOR=MODULE:CLASS, e.g. my_eval=my_sections:MySection")
        sections[evaluator] = path
    result = build_report(args.results, args.out, args.baseline, args.check, args.title,
                          extra_provenance={"command": command} if command else None, split_by=args.split_by,
                          sections=sections)
    return _report_outcome(result)


def _report_outcome(result) -> int:
    for out in result.get("groups") or [result["out"]]:
        print(f"report: {out / 'report.html'}  (also summary.md, report.md, report.tex, table.csv, records.csv, plots/)")
    for path, why in result["bad"]:
        print(f"mmix-eval: warning: skipped unreadable result file {path}: {why}", file=sys.stderr)
    failed = [c for c in result["checks"] if not c[1]]
    for check, ok, why in result["checks"]:
        print(f"{'PASS' if ok else 'FAIL'}: {check}  ({why})")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from mmix_eval.bench import run_bench

    if args.dry_run:
        from mmix_eval.bench import dry_run

        dry_run(args.config, args.out, args.device)
        return 0
    if args.only:
        from mmix_eval.bench import run_one

        print(f"{args.only}: {run_one(args.config, args.out, args.only, args.device)}, evaluated")
        return 0
    result = run_bench(args.config, args.out, progress=not args.no_progress, device=args.device, launcher=args.launcher,
                       wait=not args.no_wait, report_only=args.report_only, submitit_cluster=args.submitit_cluster,
                       jobs=args.jobs, partition=args.partition, gpus_per_run=args.gpus_per_run,
                       cpus_per_run=args.cpus_per_run, mem_gb=args.mem_gb, timeout_min=args.timeout_min,
                       max_parallel=args.max_parallel)
    if result is None:  # submitted, not waiting
        return 0
    code = _report_outcome(result)
    return 1 if result["failed"] else code


def cmd_spiral(args) -> int:
    from mmix_eval.spiral import run_spiral

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers like 0,1,2, got '{args.seeds}'") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UserError(f"--seeds: expected integers >= 0, got '{args.seeds}'")
    if args.epochs < 1:
        raise UserError(f"--epochs: expected an integer >= 1, got {args.epochs}")
    run_spiral([m.strip() for m in args.methods.split(",") if m.strip()], seeds, args.out, args.data, args.epochs)
    return 0


def cmd_ls(args) -> int:
    if args.what == "evaluators":
        from mmix_eval.evaluate.base import describe_evaluators

        for name, help, options in describe_evaluators():
            print(f"{name}  {help}")
            for opt, _, default, text in options:
                print(f"    {opt} = {default!r}  {text}")
        print("module:Class  your own, by import path (see docs/evaluators.md)")
        return 0
    from mmix_eval.data import DATASETS
    from mmix_eval.data import sources  # noqa: F401
    from mmix_eval.methods import LOSSES, METHODS
    from mmix_eval.models import MODELS

    registry = {"models": MODELS, "methods": METHODS, "datasets": DATASETS, "losses": LOSSES}[args.what]
    width = max(len(n) for n in registry.names())
    import inspect

    from mmix_eval.methods.base import method_signature

    for name in registry.names():
        print(f"{name:<{width}}  {registry.describe(name)}")
        if args.what == "methods":
            params = method_signature(METHODS.get(name))[0]
            shown = [f"{k}={p.default!r}" if p.default is not inspect.Parameter.empty else k for k, p in params.items()]
            print(f"{'':<{width}}    arguments: {', '.join(shown) or 'none'}")
    if args.what == "models":
        print(f"{'torchvision:NAME':<{width}}  any torchvision classification model, e.g. torchvision:resnet18 (random init)")
        print(f"{'timm:NAME':<{width}}  any timm model, e.g. timm:resnet18 (random init; pip install 'mmix-eval[timm]')")
    if args.what in ("models", "methods"):
        print(f"{'module:attr':<{width}}  your own, by import path (see docs/plugins.md)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mmix-eval",
        description="Train vanilla / input-mixup / manifold-mixup checkpoints and measure their robustness "
                    "and calibration (Verma et al., ICML 2019).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mmix-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    parser.subcommands = sub.choices
    _add_train(sub)
    from mmix_eval.evaluate.base import BUILTIN, get_evaluator

    for name in BUILTIN:  # one sub-command per built-in evaluator, flags from its options
        _add_eval(sub, name, get_evaluator(name).help, (name,))
    _add_eval(sub, "evaluate", "every evaluator (built-in or plugin) on one or many checkpoints", None)
    p = sub.add_parser("bench", help="train methods x seeds, evaluate them all, write the report",
                       epilog=examples("bench"), formatter_class=argparse.RawDescriptionHelpFormatter,
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
    g.add_argument("--timeout-min", type=int, help="slurm: time limit per job in minutes (default 1440); a job that "
                                                   "reaches it, or is preempted, is requeued and resumes its run")
    g.add_argument("--max-parallel", type=int, help="slurm: at most N of the bench's jobs running at once (array throttle)")
    g.add_argument("--no-wait", action="store_true", help="slurm: submit and exit; build the report later with --report-only")
    g.add_argument("--submitit-cluster", choices=["slurm", "local", "debug"],
                   help="slurm launcher's submitit executor: slurm (default), or local/debug to run the jobs here")
    g.add_argument("--report-only", action="store_true", help="run nothing; report what is finished and list what is missing")
    g.add_argument("--only", metavar="RUN", help="train and evaluate this one run of the bench, no report (what each job runs)")
    g.add_argument("--dry-run", action="store_true",
                   help="write nothing: list the runs it would train, resume, evaluate or skip, with a training-time "
                        "estimate from a few timed steps")
    p = sub.add_parser("report", help="rebuild the HTML / CSV / Markdown report from result records alone",
                       epilog=examples("report"), formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Aggregate result records (folders of *.jsonl) into a Table-4-style comparison. "
                                   "Exit 1 if a --check fails, 2 on bad input.")
    p.add_argument("results", nargs="+", help="results folders or .jsonl files")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--baseline", default="auto", help="method for paired differences (default: vanilla when the results "
                                                      "have it, else the first method; the report states which)")
    p.add_argument("--check", action="append", default=[], metavar="EXPR",
                   help="CI gate, e.g. 'manifold_mixup.rotation20 >= vanilla.rotation20' or 'vanilla.clean:ece <= 0.1' (repeatable)")
    p.add_argument("--title", help="report title")
    p.add_argument("--split-by", action="store_true",
                   help="records that cannot be compared (other data, test subset, seed or evaluator settings): one "
                        "report per group, in OUT/<group>/, instead of an error")
    p.add_argument("--section", action="append", default=[], metavar="EVALUATOR=MODULE:CLASS",
                   help="a report section of your own for an evaluator (a ReportSection subclass; repeatable)")
    p = sub.add_parser("spiral", help="the paper's Figure 1 on a 2-D spiral with a 2-unit bottleneck, in seconds",
                       description="Train an MLP with a 2-unit bottleneck on a spiral with each method and seed, then "
                                   "draw the decision regions, the bottleneck and its per-class singular values, with "
                                   "the off-data confidence and flatness numbers beside them (index.html, spiral.png, "
                                   "results.md, results.json in --out).",
                       epilog="example:\n  mmix-eval spiral --out reports/spiral\n"
                              "  mmix-eval spiral --methods vanilla,manifold_mixup,my_regs:Noisy --seeds 0 --out /tmp/sp",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="vanilla,input_mixup,manifold_mixup",
                   help="comma-separated methods, plugins by module:Class (default %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default %(default)s)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs per run (default %(default)s)")
    p.add_argument("--data", default="spiral", help="spiral or spiral:arms=3,points=1000,noise=0.2,... (default %(default)s)")
    p.add_argument("--out", required=True, help="output folder")
    for name, p in sub.choices.items():
        if name in ("report",):
            continue
        p.add_argument("--threads", type=int, metavar="N",
                       help="CPU threads for torch (default: MMIX_EVAL_THREADS, else OMP_NUM_THREADS, else the cores "
                            "this process may use that no other process keeps busy, divided by the local "
                            "launcher's --jobs)")
    p = sub.add_parser("ls", help="list registered models, methods, evaluators, data sets or losses")
    p.add_argument("what", choices=["models", "methods", "evaluators", "datasets", "losses"])
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"mmix-eval: warning: {message}", file=sys.stderr)


TORCH_COMMANDS = ("train", "bench", "spiral")  # and every evaluation command: these set torch's thread count


def _threads(args) -> None:
    """--threads, MMIX_EVAL_THREADS, OMP_NUM_THREADS, else the free cores: set once, before torch works.
    An explicit --threads is exported, so the processes a local launcher starts use it too. The allocator's
    setting (memory.py) is made here too, once, for the commands that run torch."""
    import os

    from mmix_eval import threads

    flag = getattr(args, "threads", None)
    if flag is not None:
        threads.resolve(flag)  # a bad value fails here, as a one-line error
        os.environ["MMIX_EVAL_THREADS"] = str(flag)
    if args.command in TORCH_COMMANDS or hasattr(args, "option_flags"):
        from mmix_eval import memory

        threads.apply(flag, say=lambda line: print(f"mmix-eval: {line}", file=sys.stderr))
        memory.apply()  # freed tensor memory kept for the next batch (see memory.py)


def main(argv: list[str] | None = None) -> int:
    from mmix_eval.threads import configure_runtime

    configure_runtime()  # OpenMP's wait policy, before anything imports torch (see threads.py)
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        _threads(args)
        handler = {"train": cmd_train, "ls": cmd_ls, "report": cmd_report, "bench": cmd_bench,
                   "spiral": cmd_spiral}.get(args.command, cmd_eval)
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
