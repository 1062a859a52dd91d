"""The report, bench, spiral and ls commands: their parsers and what they run."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from mmix_eval.catalog import REGISTRIES
from mmix_eval.cli.flags import launcher_flags
from mmix_eval.cli.parser import examples
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import describe_evaluators


def add_bench(sub) -> None:
    """bench: a YAML of methods x seeds trained, evaluated and reported."""
    p = sub.add_parser(
        "bench",
        help="train methods x seeds, evaluate them all, write the report",
        epilog=examples("bench"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a bench YAML (see configs/bench/): train each method x seed (skipping finished "
        "runs, resuming killed ones), evaluate every checkpoint on identical images and write "
        "report.html, report.md, table.csv and plots/ into --out. Exit 1 if a check fails.",
    )
    p.add_argument("config", help="bench YAML")
    p.add_argument("--out", required=True, help="bench folder (runs/, results/ and the report)")
    p.add_argument("--device", help="override the device of every run and evaluation")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--verify",
        metavar="REPORT",
        help="after the bench, compare every cell of its records with a committed report's (records.jsonl or "
        "records.jsonl.gz in REPORT), bitwise; exit 1 where one differs or is missing",
    )
    _launcher_flags(
        p.add_argument_group(
            "launchers (default: the YAML's launcher section, else as many runs at a time as cores "
            "are free, each 1 CPU thread)"
        )
    )


def _launcher_flags(g) -> None:
    launcher_flags(g, "run")
    g.add_argument(
        "--report-only", action="store_true", help="run nothing; report what is finished and list what is missing"
    )
    g.add_argument(
        "--only", metavar="RUN", help="train and evaluate this one run of the bench, no report (what each job runs)"
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="write nothing: list the runs it would train, resume, evaluate or skip, with a training-time "
        "estimate from a few timed steps",
    )


def add_report(sub) -> None:
    """report: the report rebuilt from result records alone."""
    p = sub.add_parser(
        "report",
        help="rebuild the HTML / CSV / Markdown report from result records alone",
        epilog=examples("report"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Aggregate result records (folders of *.jsonl) into a Table-4-style comparison. "
        "Exit 1 if a --check fails, 2 on bad input.",
    )
    p.add_argument("results", nargs="+", help="results folders or .jsonl files")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument(
        "--baseline",
        default="auto",
        help="method for paired differences (default: vanilla when the results "
        "have it, else the first method; the report states which)",
    )
    p.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="EXPR",
        help="CI gate, e.g. 'manifold_mixup.rotation20 >= vanilla.rotation20' or 'vanilla.clean:ece <= 0.1' (repeatable)",
    )
    p.add_argument("--title", help="report title")
    _report_content_flags(p)
    _claim_flags(p)


def _report_content_flags(p) -> None:
    p.add_argument(
        "--split-by",
        action="store_true",
        help="records that cannot be compared (other data, test subset, seed or evaluator settings): one "
        "report per group, in OUT/<group>/, instead of an error",
    )
    p.add_argument(
        "--section",
        action="append",
        default=[],
        metavar="EVALUATOR=MODULE:CLASS",
        help="a report section of your own for an evaluator (a ReportSection subclass; repeatable)",
    )
    p.add_argument(
        "--no-plots",
        action="store_true",
        help="tables and text only (no plots/, report.html without figures): a fast rebuild of a large report",
    )
    p.add_argument("--pdf-plots", action="store_true", help="every figure as PDF too, beside the PNG (for a paper)")


def _claim_flags(p) -> None:
    p.add_argument(
        "--primary",
        action="append",
        default=None,
        metavar="COLUMN.CONDITION[:METRIC[@CALIBRATOR]]",
        help="a comparison you claim against the baseline (repeatable; fnmatch patterns, e.g. "
        "'manifold_mixup.zoom_*' or '*.clean:nll@temperature'): the primary family, corrected together; "
        "every other comparison is exploratory, corrected within its evaluator's section (default: the "
        "clean, deformation and FGSM accuracies and the clean NLL and Brier, raw and calibrated)",
    )
    p.add_argument(
        "--plot-column",
        action="append",
        default=None,
        dest="plot_columns",
        metavar="COLUMN",
        help="a column that figures which cannot show every column draw (repeatable; default: the baseline, "
        "your own columns, then the first others)",
    )
    p.add_argument(
        "--multiplicity",
        choices=["holm", "bonferroni", "bh", "none"],
        default="holm",
        help="how p-values are adjusted within each family (default holm; bh: Benjamini-Hochberg, a false "
        "discovery rate)",
    )


def add_spiral(sub) -> None:
    """spiral: the paper's Figure 1."""
    p = sub.add_parser(
        "spiral",
        help="the paper's Figure 1 on a 2-D spiral with a 2-unit bottleneck, in seconds",
        description="Train an MLP with a 2-unit bottleneck on a spiral with each method and seed, then "
        "draw the decision regions, the bottleneck and its per-class singular values, with "
        "the off-data confidence and flatness numbers beside them (index.html, spiral.png, "
        "results.md, results.json in --out).",
        epilog="example:\n  mmix-eval spiral --out reports/spiral\n"
        "  mmix-eval spiral --methods vanilla,manifold_mixup,my_regs:Noisy --seeds 0 --out /tmp/sp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--methods",
        default="vanilla,input_mixup,manifold_mixup",
        help="comma-separated methods, plugins by module:Class (default %(default)s)",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default %(default)s)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs per run (default %(default)s)")
    p.add_argument(
        "--data", default="spiral", help="spiral or spiral:arms=3,points=1000,noise=0.2,... (default %(default)s)"
    )
    p.add_argument("--out", required=True, help="output folder")


def add_ls(sub) -> None:
    """ls: what is registered."""
    p = sub.add_parser(
        "ls", help="list registered models, methods, evaluators, data sets, losses, calibrators or report sections"
    )
    p.add_argument("what", choices=["models", "methods", "evaluators", "datasets", "losses", "calibrators", "sections"])
    p.add_argument(
        "--markdown",
        action="store_true",
        help="a Markdown table of the built-ins (docs/evaluators.md holds this table for evaluators)",
    )


def cmd_report(args) -> int:
    from mmix_eval.report import build_report  # matplotlib and pandas: loaded for this command only

    command = "mmix-eval " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("mmix-eval") else None
    sections = {}
    for given in args.section:
        evaluator, eq, path = given.partition("=")
        if not eq or not evaluator or ":" not in path:
            raise UserError(f"--section '{given}': expected EVALUATOR=MODULE:CLASS, e.g. my_eval=my_sections:MySection")
        sections[evaluator] = path
    result = build_report(
        args.results,
        args.out,
        args.baseline,
        args.check,
        args.title,
        extra_provenance={"command": command} if command else None,
        split_by=args.split_by,
        sections=sections,
        plots=not args.no_plots,
        primary=args.primary,
        multiplicity=args.multiplicity,
        plot_columns=args.plot_columns,
        pdf_plots=args.pdf_plots,
    )
    return _report_outcome(result)


def _report_outcome(result) -> int:
    for out in result.get("groups") or [result["out"]]:
        print(
            f"report: {out / 'report.html'}  (also summary.md, report.md, report.tex, table.csv, records.csv, plots/)"
        )
    for path, why in result["bad"]:
        print(f"mmix-eval: warning: skipped unreadable result file {path}: {why}", file=sys.stderr)
    failed = [c for c in result["checks"] if not c[1]]
    for check, ok, why in result["checks"]:
        print(f"{'PASS' if ok else 'FAIL'}: {check}  ({why})")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from mmix_eval import threads
    from mmix_eval.bench import (
        dry_run,
        run_bench,
        run_one,
    )  # numpy and yaml: loaded for this command, --help stays fast

    if args.dry_run or args.only:  # torch in this process from the start (run_bench sets it after its workers)
        threads.prepare_torch(args.threads)
    if args.dry_run:
        dry_run(args.config, args.out, args.device)
        return 0
    if args.only:
        print(f"{args.only}: {run_one(args.config, args.out, args.only, args.device)}, evaluated")
        return 0
    if args.verify:  # a committed report without records is refused before anything trains
        from mmix_eval.bench.verify import record_file

        record_file(Path(args.verify))
    result = run_bench(
        args.config,
        args.out,
        progress=not args.no_progress,
        device=args.device,
        launcher=args.launcher,
        wait=not args.no_wait,
        report_only=args.report_only,
        submitit_cluster=args.submitit_cluster,
        jobs=args.jobs,
        partition=args.partition,
        gpus_per_run=args.gpus_per_run,
        cpus_per_run=args.cpus_per_run,
        mem_gb=args.mem_gb,
        timeout_min=args.timeout_min,
        max_parallel=args.max_parallel,
        threads=args.threads,
    )
    if result is None:  # submitted, not waiting
        return 0
    code = _report_outcome(result)
    if args.verify:
        from mmix_eval.bench.verify import verify

        same, lines = verify(args.verify, args.out)
        print("\n".join(lines))
        code = code or (0 if same else 1)
    return 1 if result["failed"] else code


def cmd_spiral(args) -> int:
    from mmix_eval.spiral import run_spiral  # torch: loaded for this command only

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


def markdown_table(what: str) -> str:
    """The built-ins of one registry as a Markdown table, from the catalog (evaluators with their options and
    report section): what ``ls WHAT --markdown`` prints and the docs hold."""
    from mmix_eval.catalog import EVALUATORS, SECTIONS

    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    if what != "evaluators":
        registry = REGISTRIES[what]
        rows = [f"| `{n}` | {cell(registry.describe(n))} |" for n in registry.builtin()]
        return "\n".join([f"| {what[:-1]} | what it is |", "|---|---|", *rows]) + "\n"
    rows = []
    for name, help, options in describe_evaluators():
        if name not in EVALUATORS.builtin():  # an installed plugin is not the docs' business
            continue
        opts = "; ".join(f"`{o}` = `{d!r}`" for o, _, d, _ in options) or "none"
        section = f"`{name}`" if name in SECTIONS.builtin() else "the generic one"
        rows.append(f"| `{name}` | {cell(help)} | {cell(opts)} | {section} |")
    return (
        "\n".join(["| evaluator | what it measures | options (default) | report section |", "|---|---|---|---|", *rows])
        + "\n"
    )


def cmd_ls(args) -> int:
    if args.markdown:
        print(markdown_table(args.what), end="")
        return 0
    if args.what == "evaluators":
        for name, help, options in describe_evaluators():
            print(f"{name}  {help}")
            for opt, _, default, text in options:
                print(f"    {opt} = {default!r}  {text}")
        print("module:Class  your own, by import path (see docs/evaluators.md)")
        return 0
    registry = REGISTRIES[args.what]  # the lazy table: names and help import nothing
    width = max(len(n) for n in [*registry.names(), "module:Class" if args.what == "sections" else ""])
    for name in registry.names():
        print(f"{name:<{width}}  {registry.describe(name)}")
        if args.what == "methods":
            from mmix_eval.methods.base import method_signature  # torch: the arguments need the class

            params = method_signature(registry.get(name))[0]
            shown = [f"{k}={p.default!r}" if p.default is not inspect.Parameter.empty else k for k, p in params.items()]
            print(f"{'':<{width}}    arguments: {', '.join(shown) or 'none'}")
    if args.what == "models":
        print(
            f"{'torchvision:NAME':<{width}}  any torchvision classification model, e.g. torchvision:resnet18 (random init)"
        )
        print(
            f"{'timm:NAME':<{width}}  any timm model, e.g. timm:resnet18 (random init; pip install 'mmix-eval[timm]')"
        )
    if args.what == "sections":
        print(f"{'(any other)':<{width}}  the generic section: every metric per condition, calibration under shift")
        print(
            f"{'module:Class':<{width}}  your own for an evaluator: --section EVALUATOR=module:Class (see docs/plugins.md)"
        )
    elif args.what != "datasets":
        print(f"{'module:attr':<{width}}  your own, by import path (see docs/plugins.md)")
    else:
        print(
            f"{'module:function':<{width}}  your own source, by import path, with :ARG after it (see docs/plugins.md)"
        )
    return 0
