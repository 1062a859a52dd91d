"""bench: train methods × seeds, evaluate every checkpoint on identical images, write the report.

Idempotent: a run whose checkpoint exists with the same configuration is skipped, a killed run resumes
from its state file, an evaluation whose checkpoint hash and options are unchanged is not redone.

Layout of --out:  runs/<method>-s<seed>/   results/<run>/<evaluator>.*   report.html report.md table.csv
                  records.csv records.jsonl plots/ bench.yaml
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from mmix_eval.config import Config, merge
from mmix_eval.errors import UserError, did_you_mean
from mmix_eval.evaluate.runner import EVALUATORS, EvalOptions, run_evaluation, safe_name
from mmix_eval.io import atomic_write_text

TOP_KEYS = ("name", "data", "model", "train", "methods", "seeds", "evaluate", "report")
EVALUATE_KEYS = ("evaluators", *(f.name for f in fields(EvalOptions) if f.name not in ("progress", "allow_import")))
REPORT_KEYS = ("baseline", "checks", "title")


@dataclass
class Run:
    name: str
    cfg: Config


@dataclass
class Bench:
    name: str
    runs: list[Run]
    evaluators: list[str]
    options: EvalOptions
    baseline: str | None
    checks: list[str]
    title: str | None
    raw: dict


def _strict(d, allowed, where):
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a mapping, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise UserError(f"{where}: unknown key '{k}'{did_you_mean(str(k), allowed)}; expected one of: {', '.join(allowed)}")
    return d


def load_bench(path: str | Path) -> Bench:
    from mmix_eval.io import load_yaml

    path = Path(path)
    raw = load_yaml(path, "bench config")
    where = f"bench config '{path}'"
    raw = _strict(raw, TOP_KEYS, where)
    methods = raw.get("methods") or []
    seeds = raw.get("seeds", [0])
    if not isinstance(methods, list) or not methods:
        raise UserError(f"{where}: 'methods' expected a non-empty list like [vanilla, {{name: manifold_mixup, alpha: 2.0}}]")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise UserError(f"{where}: 'seeds' expected a non-empty list of integers >= 0, got {seeds!r}")
    runs, names = [], set()
    for j, m in enumerate(methods):
        m = {"name": m} if isinstance(m, str) else dict(_strict(m, ("name", "alpha", "eligible", "loss", "label"), f"{where} methods[{j}]"))
        label = m.pop("label", None) or m.get("name")
        for s in seeds:
            cfg = merge(Config(), {"data": raw.get("data"), "model": raw.get("model"), "method": m,
                                   "train": {**(raw.get("train") or {}), "seed": s}}, f"{where} methods[{j}]")
            from mmix_eval.methods import create_method

            create_method(cfg.method.name, cfg.method.alpha, cfg.method.eligible, cfg.method.loss)  # fail now, not after hours
            name = safe_name(f"{label}-s{s}")
            if name in names:
                raise UserError(f"{where}: two runs are both named '{name}'; give one method a 'label'")
            names.add(name)
            runs.append(Run(name, cfg))
    ev = dict(_strict(raw.get("evaluate"), EVALUATE_KEYS, f"{where} evaluate"))
    evaluators = ev.pop("evaluators", list(EVALUATORS))
    if not isinstance(evaluators, list) or any(e not in EVALUATORS for e in evaluators):
        raise UserError(f"{where}: 'evaluate.evaluators' expected a list from {', '.join(EVALUATORS)}, got {evaluators!r}")
    try:
        options = EvalOptions(**ev)
    except TypeError as e:
        raise UserError(f"{where} evaluate: {e}") from None
    rep = _strict(raw.get("report"), REPORT_KEYS, f"{where} report")
    checks = rep.get("checks") or []
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        raise UserError(f"{where}: 'report.checks' expected a list of strings, got {checks!r}")
    return Bench(str(raw.get("name") or path.stem), runs, evaluators, options, rep.get("baseline", "vanilla"),
                 checks, rep.get("title"), raw)


def _finished(run_dir: Path, cfg: Config) -> bool:
    from mmix_eval.checkpoint import read_metadata

    ckpt = run_dir / "model.safetensors"
    if not ckpt.exists():
        return False
    try:
        return read_metadata(ckpt).get("config") == cfg.to_dict()
    except UserError:
        return False


def run_bench(config: str | Path, out: str | Path, progress: bool = True, device: str | None = None, echo=print) -> dict:
    from tqdm.auto import tqdm

    from mmix_eval.report import build_report
    from mmix_eval.train import train

    bench = load_bench(config)
    out = Path(out)
    if device is not None:
        for r in bench.runs:
            r.cfg.train.device = device
        bench.options.device = device
    bench.options.progress = False
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.yaml", yaml.safe_dump(bench.raw, sort_keys=False))
    stages: dict[str, float] = {}
    t_all = time.perf_counter()
    with tqdm(total=2 * len(bench.runs), desc=f"bench {bench.name}", unit="stage", disable=not progress,
              dynamic_ncols=True) as bar:
        for r in bench.runs:
            run_dir = out / "runs" / r.name
            bar.set_postfix_str(f"train {r.name}")
            t0 = time.perf_counter()
            if _finished(run_dir, r.cfg):
                status = "done already"
            else:
                resume = (run_dir / "config.yaml").exists()
                train(r.cfg, run_dir, resume=resume, progress=False)
                status = "resumed" if resume else "trained"
            stages[f"train {r.name}"] = round(time.perf_counter() - t0, 3)
            bar.update(1)
            bar.write(f"{r.name}: {status} ({stages[f'train {r.name}']:.1f} s)")
            bar.set_postfix_str(f"evaluate {r.name}")
            t0 = time.perf_counter()
            run_evaluation([run_dir / "model.safetensors"], bench.evaluators, out / "results", bench.options,
                           echo=lambda *_: None, skip_done=True, names=[r.name])
            stages[f"evaluate {r.name}"] = round(time.perf_counter() - t0, 3)
            bar.update(1)
    t0 = time.perf_counter()
    extra = {"bench": bench.raw, "command": " ".join(sys.argv) if sys.argv else None, "stage_wall_time_s": stages}
    result = build_report([out / "results"], out, bench.baseline, bench.checks, bench.title or f"mmix-eval bench: {bench.name}",
                          extra_provenance=extra)
    stages["report"] = round(time.perf_counter() - t0, 3)
    echo(f"bench {bench.name}: {len(bench.runs)} runs trained and evaluated in {time.perf_counter() - t_all:.1f} s")
    return result
