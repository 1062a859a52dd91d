"""The evaluation commands (one per evaluator, and evaluate): flags from each evaluator's options, the plan, the run."""

from __future__ import annotations

import argparse
import glob
from dataclasses import replace
from pathlib import Path

from mmix_eval.cli.flags import flag, launcher_flags
from mmix_eval.cli.parser import examples, join_torchrun
from mmix_eval.cli.train import parse_method_arg
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import DEFAULT_EVALUATORS, EvalOptions, OptionError, get_evaluator, option_fields

# The shared evaluation options every evaluation command takes as flags (cli/flags.py names each flag).
COMMON_PARAMS = (
    "data",
    "data_root",
    "download",
    "limit",
    "class_map",
    "seed",
    "bins",
    "batch_size",
    "device",
    "calibrator",
    "calibration_split",
    "conformal_alpha",
)


def add_eval(sub, name: str, help: str, specs: tuple[str, ...] | None) -> None:
    """One evaluation sub-command. ``specs``: the evaluator it runs (its flags generated from its options),
    or None for ``evaluate`` (every built-in's flags, plus --evaluators and --set for plugins)."""
    p = sub.add_parser(
        name,
        help=help,
        epilog=examples(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{help[0].upper()}{help[1:]}. Writes tidy records (one row per checkpoint x "
        f"condition x metric) to OUT/<run>/<evaluator>.csv and .jsonl, and the per-image "
        f"outcomes to <evaluator>.outcomes.npz.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--ckpt",
        nargs="+",
        metavar="CKPT",
        help="checkpoint(s): .safetensors files, run folders, or quoted globs; with --model, plain state "
        "dicts (.safetensors, or .pt/.pth read by torch.load(weights_only=True))",
    )
    which.add_argument(
        "--ensemble",
        nargs="+",
        metavar="CKPT",
        help="checkpoints (files, run folders, quoted globs) evaluated as ONE deep ensemble: the mean of "
        "their softmax (they must share data, classes and input), e.g. 'runs/mm-s*'",
    )
    p.add_argument("--out", default="results", help="results folder (default: results)")
    common = {n: (d, h) for n, _, d, h in option_fields(EvalOptions)}
    g = p.add_argument_group("data (default: the checkpoint's own data set and test split)")
    for key in ("data", "data_root", "limit", "class_map"):
        g.add_argument(flag(key), dest=f"common_{key}", metavar=key.upper(), help=common[key][1])
    g.add_argument("--download", dest="common_download", action="store_true", default=None, help=common["download"][1])
    _foreign_flags(p)
    _evaluation_flags(p, common, specs)
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep results already written for the same checkpoint and options, and resume an evaluator a killed run "
        "left mid-grid at its first missing condition (the launchers always do)",
    )
    launcher_flags(
        p.add_argument_group("launchers (default: inline, everything in this process)"), "checkpoint x evaluator"
    )
    p.set_defaults(evaluators=list(specs) if specs else None, option_flags=_evaluator_flags(p, specs))


def _foreign_flags(p) -> None:
    """The flags that rebuild a plain state dict (a model made elsewhere)."""
    g = p.add_argument_group("models made elsewhere (plain state dicts; see docs/plugins.md)")
    g.add_argument(
        "--model",
        dest="foreign_model",
        metavar="NAME",
        help="rebuild each --ckpt as this model: a registered name, torchvision:ARCH or timm:ARCH (needs --data)",
    )
    g.add_argument(
        "--model-arg",
        dest="foreign_model_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument of the model, e.g. --model-arg width=32 (repeatable)",
    )
    g.add_argument(
        "--mean",
        dest="foreign_mean",
        metavar="M1,M2,M3",
        help="per-channel mean of [0, 1] inputs the weights were trained with, applied inside the model "
        "(default: none, for a model that normalises inside)",
    )
    g.add_argument("--std", dest="foreign_std", metavar="S1,S2,S3", help="per-channel std to go with --mean")
    g.add_argument(
        "--key-layout",
        dest="foreign_layout",
        default="auto",
        metavar="LAYOUT",
        help="auto (default), mmix-eval, official (the official Manifold Mixup code's PreActResNet), or "
        "plain (a torchvision / timm network's own names)",
    )


def _evaluation_flags(p, common: dict, specs) -> None:
    """The options every evaluator shares, and (for ``evaluate``) which evaluators run and --set for plugins."""
    g = p.add_argument_group("evaluation")
    for key in ("seed", "bins", "calibrator", "calibration_split", "conformal_alpha", "batch_size", "device"):
        default = common[key][0]
        g.add_argument(
            flag(key),
            dest=f"common_{key}",
            metavar=key.upper(),
            help=common[key][1] + (f" (default {default})" if default is not None else ""),
        )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--trust-model-import",
        action="store_true",
        help="allow a checkpoint to name a model by module:factory import path (runs that module)",
    )
    if specs is None:
        g.add_argument(
            "--evaluators",
            dest="evaluators_text",
            default=",".join(DEFAULT_EVALUATORS),
            metavar="LIST",
            help="comma-separated evaluators: built-in names or module:Class plugins "
            f"(default {','.join(DEFAULT_EVALUATORS)}; mmix-eval ls evaluators)",
        )
        g.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="EVALUATOR.OPTION=VALUE",
            dest="eval_set",
            help="an option of any evaluator, e.g. --set my_evals:Occlusion.patch=8 (repeatable)",
        )


def _evaluator_flags(p, specs) -> dict[str, tuple[str, str]]:
    """A flag per option of each evaluator run (every default one for ``evaluate``), generated from its Options;
    returns dest -> (evaluator, option)."""
    flags = {}
    for spec in specs or DEFAULT_EVALUATORS:
        ev = get_evaluator(spec)
        fields = option_fields(ev.Options)
        if not fields:
            continue
        g = p.add_argument_group(f"{ev.name} options")
        for opt, hint, default, text in fields:
            shown = (
                ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
                if isinstance(default, list)
                else default
            )
            if hint is bool:  # a switch: --quick alone is true, --quick false still reads
                g.add_argument(
                    flag(opt),
                    dest=f"opt_{spec}_{opt}",
                    nargs="?",
                    const="true",
                    metavar="true|false",
                    help=f"{text} (default {str(shown).lower()})",
                )
            else:
                g.add_argument(
                    flag(opt), dest=f"opt_{spec}_{opt}", metavar=opt.upper(), help=f"{text} (default {shown})"
                )
            flags[f"opt_{spec}_{opt}"] = (spec, opt)
    return flags


def _eval_plan(args):
    from mmix_eval.evaluate.runner import (
        check_calibrator,
        make_plan,
    )  # numpy: loaded when an evaluation runs, --help stays fast

    specs = args.evaluators or [s.strip() for s in args.evaluators_text.split(",") if s.strip()]
    options: dict[str, dict] = {}
    for dest, (spec, opt) in args.option_flags.items():
        value = getattr(args, dest)
        if value is not None and spec in specs:
            options.setdefault(spec, {})[opt] = value
        elif value is not None:  # each flag belongs to one evaluator: given for one not run, it would do nothing
            raise UserError(
                f"{flag(opt)}: an option of the {spec} evaluator, which is not among the evaluators run "
                f"({', '.join(specs)}); expected --set EVALUATOR.{opt}=VALUE for another evaluator"
            )
    for text in getattr(args, "eval_set", None) or []:
        key, eq, value = text.partition("=")
        spec, dot, opt = key.rpartition(".")
        if not eq or not dot or not spec or not opt:
            raise UserError(
                f"--set: expected EVALUATOR.OPTION=VALUE like fgsm.eps=1,2 or my_evals:Occlusion.patch=8, got '{text}'"
            )
        options.setdefault(spec, {})[opt] = value
    common = {k: getattr(args, f"common_{k}") for k in COMMON_PARAMS if getattr(args, f"common_{k}") is not None}
    try:
        for k in ("limit", "seed", "bins", "batch_size", "calibration_split"):
            if k in common:
                try:
                    common[k] = int(common[k])
                except ValueError:
                    raise OptionError(k, f"expected an integer, got '{common[k]}'") from None
        if "conformal_alpha" in common:
            text = common["conformal_alpha"]
            try:
                common["conformal_alpha"] = None if text.lower() == "none" else float(text)
            except ValueError:
                raise OptionError("conformal_alpha", f"expected a number in (0, 1) or none, got '{text}'") from None
        opts = EvalOptions(**common, progress=not args.no_progress, allow_import=args.trust_model_import)
        check_calibrator(opts.calibrator)
        plan = make_plan(specs, options, "--evaluators" if args.evaluators is None else args.command)
    except OptionError as e:  # the library names the parameter; here it is the flag
        # a plugin's option set with --set has no flag of its own: shown by its name
        is_flag = e.param in COMMON_PARAMS or any(o == e.param for _, o in args.option_flags.values())
        raise UserError(f"{flag(e.param) if is_flag else e.param}: {e.detail}") from None
    return plan, opts


def cmd_eval(args) -> int:
    # numpy: loaded when an evaluation runs, --help stays fast
    from mmix_eval.evaluate.runner import EvalJob, run_evaluation

    plan, opts = _eval_plan(args)
    foreign, opts = _foreign(args, opts)
    join_torchrun(args, opts.device)
    launcher, res = _launcher(args)
    if args.ensemble:
        ckpts = _expand_ckpts(args.ensemble, foreign is not None, "--ensemble")
    else:
        ckpts = _expand_ckpts(args.ckpt, foreign is not None)
    ckpts, origins = _fetch(ckpts)
    job = EvalJob(foreign=foreign, ensemble=bool(args.ensemble), skip_done=args.resume, origins=origins or None)
    if launcher == "inline":
        # an error raised while loading names its parameter; main() shows it as the flag (cli/flags.py)
        run_evaluation(ckpts, plan, args.out, opts, job)
        return 0
    from mmix_eval.bench.eval_jobs import auto_jobs, eval_tasks, launch_evaluation, say_failed

    if launcher == "local" and res["jobs"] is None:
        res["jobs"] = auto_jobs(opts.device)
    tasks = eval_tasks(ckpts, plan, job)
    failed = launch_evaluation(launcher, tasks, Path(args.out), opts, job, res, args.submitit_cluster, not args.no_wait)
    if failed:
        say_failed(failed)
        return 1
    return 0


# Which launcher each launcher flag is for (given for another it would do nothing: an error, not a silent no-op).
_LAUNCHER_OF = {
    "jobs": "local",
    **dict.fromkeys(
        ("partition", "gpus_per_run", "cpus_per_run", "mem_gb", "timeout_min", "max_parallel", "submitit_cluster"),
        "slurm",
    ),
}


def _launcher(args) -> tuple[str, dict]:
    """The launcher and its resources from the flags, checked before anything is loaded."""
    from mmix_eval import distributed
    from mmix_eval.bench.launchers import launcher_resources

    launcher = args.launcher or "inline"
    for key, needs in _LAUNCHER_OF.items():
        if getattr(args, key) is not None and launcher != needs:
            raise UserError(f"{flag(key)}: a flag of --launcher {needs}, expected with it, got --launcher {launcher}")
    if args.no_wait and launcher != "slurm":
        raise UserError(f"--no-wait: a flag of --launcher slurm, expected with it, got --launcher {launcher}")
    if launcher != "inline" and distributed.env_world_size() > 1:
        raise UserError(
            f"--launcher {launcher}: expected outside torchrun (each job is one process), got WORLD_SIZE > 1"
        )
    overrides = {k: getattr(args, k) for k in _LAUNCHER_OF if k != "submitit_cluster"}
    return launcher, launcher_resources({}, overrides)


def _foreign(args, opts):
    """The --model / --model-arg / --mean / --std / --key-layout flags as a Foreign (None without --model), and the
    shared options to evaluate with."""
    from mmix_eval.foreign import Foreign  # torch: loaded for a plain state dict only

    extra = [
        f
        for f, v in (
            ("--model-arg", args.foreign_model_arg),
            ("--mean", args.foreign_mean),
            ("--std", args.foreign_std),
            ("--key-layout", args.foreign_layout != "auto"),
        )
        if v
    ]
    if args.foreign_model is None:
        if extra:
            raise UserError(f"{extra[0]}: expected --model too (these rebuild a plain state dict), got no --model")
        return None, opts

    def floats(flag, text):
        if text is None:
            return None
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise UserError(f"{flag}: expected comma-separated numbers like 0.49,0.48,0.45, got '{text}'") from None

    foreign = Foreign(
        args.foreign_model,
        opts.data,
        dict(parse_method_arg(t, "--model-arg", "the model's") for t in args.foreign_model_arg),
        floats("--mean", args.foreign_mean),
        floats("--std", args.foreign_std),
        args.foreign_layout,
        opts.data_root,
        bool(opts.download),
    )
    foreign.check()
    return foreign, replace(opts, data=None)  # the data set is the state dict's own now (its metadata names it)


def _fetch(ckpts: list[str]) -> tuple[list[str], dict[str, str]]:
    """Checkpoints named hf://ORG/REPO[@REVISION][/FILE] fetched (``mmix_eval.hub``): their local paths, and where
    each came from (with the revision's commit hash) for the records."""
    from mmix_eval import hub

    out, origins = [], {}
    for c in ckpts:
        if hub.is_hub(c):
            path, origin = hub.resolve(c)
            c = str(path)
            origins[c] = origin
        out.append(c)
    return out, origins


def _expand_ckpts(items: list[str], foreign: bool = False, flag: str = "--ckpt") -> list[str]:
    """Quoted globs expanded here (the shell expands unquoted ones); a run folder means its model.safetensors
    (with ``foreign``, every .safetensors / .pt / .pth file in it)."""
    out = []
    for item in items:
        if item.startswith("hf://"):  # fetched later (_fetch), never globbed or read as a local path
            out.append(item)
            continue
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise UserError(f"{flag}: expected checkpoint files, got a pattern that matches nothing: '{item}'")
        for m in matches:
            path = Path(m)
            if path.is_dir() and foreign:
                files = sorted(str(f) for f in path.iterdir() if f.suffix in (".safetensors", ".pt", ".pth"))
                if not files:
                    raise UserError(
                        f"{flag}: expected state dict files (.safetensors, .pt, .pth) in folder '{m}', got none"
                    )
                out += files
            else:
                out.append(str(path / "model.safetensors") if path.is_dir() else m)
    return out
