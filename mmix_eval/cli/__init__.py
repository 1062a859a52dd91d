"""The command line: a thin layer over the Python API. Bad input: one line on stderr, exit code 2.

``parser`` (behaviour, examples), ``train``, ``evaluate`` (one command per evaluator), ``commands`` (report,
bench, spiral, ls). Commands that run torch import it when they run, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings

from mmix_eval import __version__, threads
from mmix_eval.cli.commands import add_bench, add_ls, add_report, add_spiral, cmd_bench, cmd_ls, cmd_report, cmd_spiral
from mmix_eval.cli.evaluate import add_eval, cmd_eval
from mmix_eval.cli.export import add_export, cmd_export
from mmix_eval.cli.flags import as_flags
from mmix_eval.cli.hub import add_push, cmd_push
from mmix_eval.cli.parser import EPILOG, Parser
from mmix_eval.cli.train import add_train, cmd_train
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import BUILTIN, get_evaluator


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mmix-eval",
        description="Train vanilla / input-mixup / manifold-mixup checkpoints and measure their robustness "
        "and calibration (Verma et al., ICML 2019).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mmix-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    parser.subcommands = sub.choices
    add_train(sub)
    for name in BUILTIN:  # one sub-command per built-in evaluator, flags from its options
        add_eval(sub, name, get_evaluator(name).help, (name,))
    add_eval(sub, "evaluate", "every evaluator (built-in or plugin) on one or many checkpoints", None)
    add_bench(sub)
    add_report(sub)
    add_spiral(sub)
    add_push(sub)
    add_export(sub)
    for name, p in sub.choices.items():
        if name in ("report", "push", "export"):
            continue
        p.add_argument(
            "--threads",
            type=int,
            metavar="N",
            help="CPU threads for torch (default: MMIX_EVAL_THREADS, else OMP_NUM_THREADS, else 1 per "
            "process, whatever the machine's load, so that the numbers never depend on it; bench "
            "runs its runs side by side instead; recorded in provenance)",
        )
    add_ls(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"mmix-eval: warning: {message}", file=sys.stderr)


TORCH_COMMANDS = ("train", "bench", "spiral")  # and every evaluation command: these set torch's thread count


def _threads(args) -> None:
    """--threads, MMIX_EVAL_THREADS, OMP_NUM_THREADS, else 1 (threads.py): set once, before torch works.
    An explicit --threads is exported, so the processes a local launcher starts use it too. The allocator's
    setting (memory.py) is made here too, once, for the commands that run torch."""
    flag = getattr(args, "threads", None)
    if flag is not None:
        threads.resolve(flag)  # a bad value fails here, as a one-line error
        os.environ["MMIX_EVAL_THREADS"] = str(flag)
    if args.command == "bench":  # set by the bench itself once its workers are spawned (torch: 1.2 s), so that
        return  # their start-up does not wait for this process's (threads.prepare_torch)
    if args.command in TORCH_COMMANDS or hasattr(args, "option_flags"):
        threads.prepare_torch(flag)


DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def main(argv: list[str] | None = None) -> int:
    threads.configure_runtime()  # OpenMP's wait policy, before anything imports torch (see threads.py)
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        _threads(args)
        handler = {
            "train": cmd_train,
            "ls": cmd_ls,
            "report": cmd_report,
            "bench": cmd_bench,
            "spiral": cmd_spiral,
            "push": cmd_push,
            "export": cmd_export,
        }.get(args.command, cmd_eval)
        return handler(args)
    except UserError as e:
        from mmix_eval import distributed  # torch: only on the error path of a command that ran it

        if distributed.is_main():  # every rank fails alike; one line is enough
            print(f"mmix-eval: error: {as_flags(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mmix-eval: interrupted; a training run continues from its last state with --resume", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        # A full disk or a read-only file system while writing: every writer is atomic (the file it was writing
        # is left as it was), so one line says which file and why.
        where = f" '{e.filename}'" if e.filename else ""
        print(
            f"mmix-eval: error: could not write{where}: {e.strerror or e} (the file being written was left as "
            f"it was; free space and run the command again: finished work is kept)",
            file=sys.stderr,
        )
        return 1
    finally:
        if "mmix_eval.distributed" in sys.modules:  # joined by train/evaluate or a multi-task bench job
            sys.modules["mmix_eval.distributed"].shutdown()
