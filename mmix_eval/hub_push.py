"""``mmix-eval push RUN --repo ORG/NAME``: a run's weights (``model.safetensors``), its metadata (``model.json``) and a
model card (``README.md``) written from the checkpoint's metadata and the run's evaluation records, uploaded to the
Hugging Face Hub in one commit. Nothing else of the run folder is uploaded (its training state files are pickles of
optimizer state: never published). ``--card-only DIR`` writes the three files and uploads nothing."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from mmix_eval.errors import ParamError, UserError
from mmix_eval.evaluate.records import read_records

FILES = ("model.safetensors", "model.json", "README.md")
CARD_METRICS = ("acc", "nll", "ece", "brier")  # per condition, raw (no calibrator); NLL and Brier: proper scores
CARD_FORMATS = (".2f", ".4f", ".4f", ".4f")


def stage(run: Path, repo: str, results: Path | None, folder: Path) -> dict:
    """Write the three files of ``run`` into ``folder``; returns the checkpoint's metadata."""
    from mmix_eval.checkpoint import read_metadata

    ckpt = run / "model.safetensors"
    if not ckpt.is_file():
        raise UserError(f"push: expected a run folder holding model.safetensors, got '{run}' without one")
    meta = read_metadata(ckpt)  # an mmix-eval checkpoint, its header checked
    records = _records(results) if results is not None else []
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ckpt, folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(model_card(meta, repo, records, run.name), encoding="utf-8")
    return meta


def _records(results: Path) -> list[dict]:
    files = sorted(results.glob("*.jsonl")) if results.is_dir() else []
    if not files:
        raise ParamError("results", f"expected a folder of the run's records (*.jsonl), got '{results}' without any")
    return [r for f in files for r in read_records(f)]


def model_card(meta: dict, repo: str, records: list[dict], run: str) -> str:
    """The model card: what the network is, how it was trained, what it scored (as measured), how to evaluate it."""
    method, model, data = meta.get("method") or {}, meta.get("model") or {}, meta.get("data") or {}
    train = (meta.get("config") or {}).get("train") or {}
    metrics = meta.get("metrics") or {}
    tags = ["mmix-eval", "robustness", "calibration", "safetensors", str(method.get("name", ""))]
    lines = [
        "---",
        "library_name: mmix-eval",
        "tags:",
        *[f"- {t}" for t in tags if t],
        *([f"datasets:\n- {data['name']}"] if data.get("name") else []),
        "---",
        "",
        f"# {repo.split('/')[-1]}",
        "",
        f"A `{model.get('name')}` network trained with **{method.get('name')}** on `{data.get('name')}` by "
        f"mmix-eval (run `{run}`). Weights in safetensors (no pickle); `model.json` holds the "
        "full metadata the checkpoint's header carries.",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{model.get('name')}` {json.dumps(model.get('kwargs') or {}, sort_keys=True)} |",
        f"| method | `{method.get('name')}` {json.dumps(method.get('settings') or {}, sort_keys=True)} |",
        f"| data | `{data.get('name')}`, {len(data.get('classes') or [])} classes |",
        f"| training | {train.get('epochs')} epochs, seed {train.get('seed')}, batch {train.get('batch_size')}, "
        f"lr {train.get('lr')} ({train.get('schedule')}) |",
        f"| weights SHA-256 | `{meta.get('data_sha256')}` |",
        f"| versions | {', '.join(f'{k} {v}' for k, v in sorted((meta.get('versions') or {}).items()))} |",
        f"| code | mmix-eval commit `{meta.get('git_commit')}` |",
        "",
        "## At the end of training",
        "",
        *[f"- {k}: {v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, (int, float))],
        "",
        *_results_section(records),
        "## Evaluate it",
        "",
        "```",
        "pip install 'mmix-eval[hub]'",
        f"mmix-eval evaluate --ckpt hf://{repo}",
        "```",
        "",
        "The revision is resolved to its commit hash and recorded with every result.",
        "",
    ]
    return "\n".join(lines)


def _results_section(records: list[dict]) -> list[str]:
    """Per evaluator and condition: accuracy, NLL, ECE and Brier as measured (no calibrator), from the records."""
    if not records:
        return ["No evaluation records were given (`--results`): no robustness or calibration numbers here.", ""]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    n = {}
    for r in records:
        if r.get("calibrator") not in (None, "none") or r.get("bin") is not None or r["metric"] not in CARD_METRICS:
            continue
        cells.setdefault((r["evaluator"], r["condition"]), {})[r["metric"]] = r["value"]
        n[r["evaluator"]] = r.get("n")
    out = [
        "## Evaluation (as measured by mmix-eval; no calibrator)",
        "",
        "| evaluator | condition | accuracy (%) | NLL | ECE | Brier |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (ev, cond), m in cells.items():
        shown = ["" if m.get(k) is None else format(m[k], spec) for k, spec in zip(CARD_METRICS, CARD_FORMATS)]
        out.append(f"| {ev} | {cond} | {' | '.join(shown)} |")
    out += ["", f"Test images per evaluator: {', '.join(f'{k} {v}' for k, v in n.items())}. One trained network: "
            "these numbers are about this network, not about its method.", ""]  # fmt: skip
    return out


def push(run: Path, repo: str, results: Path | None, private: bool, revision: str | None, card_only: Path | None):
    """Stage and upload (or, with ``card_only``, only stage). Returns what was done, one line."""
    if card_only is not None:
        stage(run, repo, results, card_only)
        return f"wrote {', '.join(FILES)} to {card_only} (nothing uploaded)"
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("push: needs the huggingface_hub package; pip install 'mmix-eval[hub]'") from None
    with tempfile.TemporaryDirectory(prefix="mmix-push-") as tmp:
        stage(run, repo, results, Path(tmp))
        api = HfApi()
        try:
            api.create_repo(repo, private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo,
                folder_path=tmp,
                revision=revision,
                commit_message=f"mmix-eval push of run {run.name}",
                allow_patterns=list(FILES),
            )
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001  (the Hub's or the network's error, said in one line)
            raise UserError(
                f"push: upload to {repo} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            ) from None
    return f"pushed {', '.join(FILES)} to https://huggingface.co/{repo} ({getattr(info, 'oid', None) or 'commit'})"
