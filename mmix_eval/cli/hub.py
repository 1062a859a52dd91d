"""push: a run's weights, metadata and model card to the Hugging Face Hub (``mmix_eval.hub_push``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmix_eval.cli.parser import examples


def add_push(sub) -> None:
    p = sub.add_parser(
        "push",
        help="publish a run on the Hugging Face Hub: model.safetensors, model.json and a model card",
        epilog=examples("push"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Upload a run's model.safetensors and model.json with a model card written from its metadata "
        "and evaluation records, in one commit (the token: huggingface_hub's, e.g. HF_TOKEN or `hf auth login`). "
        "Never uploads the run's training state files.",
    )
    p.add_argument("run", help="run folder (holds model.safetensors)")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="the Hub repo (created if missing)")
    p.add_argument(
        "--results",
        metavar="DIR",
        help="the run's evaluation records for the card (default: a bench's results/RUN beside runs/, if any)",
    )
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", metavar="BRANCH", help="push to this branch (default: main)")
    p.add_argument("--card-only", metavar="DIR", help="write the three files to DIR and upload nothing")


def cmd_push(args) -> int:
    from mmix_eval.errors import UserError
    from mmix_eval.hub import _REPO
    from mmix_eval.hub_push import push

    if not _REPO.match(args.repo):
        raise UserError(f"--repo: expected a Hub repo id like org/name, got '{args.repo}'")
    run = Path(args.run)
    results = Path(args.results) if args.results else None
    if results is None and (run.parent.parent / "results" / run.name).is_dir():  # a bench's layout
        results = run.parent.parent / "results" / run.name
    print(push(run, args.repo, results, args.private, args.revision, Path(args.card_only) if args.card_only else None))
    return 0
