"""Corruption errors against the report's baseline (Hendrycks & Dietterich, ICLR 2019), from records alone.

A record whose settings carry ``corruption`` and ``severity`` is per-severity detail: kept in the records,
plotted, and used here, but not a table row (the evaluator's per-corruption means are). With E the top-1
error in %, for a method and one training seed:

    CE_c  = Σ_s E_{c,s} / Σ_s Ē^base_{c,s}                        (Hendrycks' CE with the baseline for AlexNet)
    mCE   = 100 · mean_c CE_c
    relative mCE = 100 · mean_c [ Σ_s (E_{c,s} − E_clean) / Σ_s (Ē^base_{c,s} − Ē^base_clean) ]

Ē^base is the baseline's error averaged over its seeds, a fixed reference like AlexNet's; so the baseline's
own mCE is 100 on average and varies over its seeds. Only pairs (c, s) every method has are used. Imports no
torch.
"""

from __future__ import annotations

import math


def is_detail(r: dict) -> bool:
    s = r.get("settings") or {}
    return s.get("severity") is not None and s.get("corruption") is not None


def errors(records: list[dict], labels: dict[str, str]) -> tuple[dict, dict, str | None]:
    """(label -> seed -> (corruption, severity) -> error %, label -> seed -> clean error %, evaluator)."""
    det: dict = {}
    clean: dict = {}
    evaluator = None
    for r in records:
        if r["bin"] is not None or r["metric"] != "acc" or r["value"] is None:
            continue
        seed = r["train_seed"] if r["train_seed"] is not None else r["run"]
        lab = labels[r["run"]]
        if is_detail(r):
            evaluator = evaluator or r["evaluator"]
            s = r["settings"]
            det.setdefault(lab, {}).setdefault(seed, {})[(s["corruption"], int(s["severity"]))] = 100.0 - r["value"]
    for r in records:
        if r["evaluator"] == evaluator and r["condition"] == "clean" and r["metric"] == "acc" and r["bin"] is None:
            seed = r["train_seed"] if r["train_seed"] is not None else r["run"]
            clean.setdefault(labels[r["run"]], {})[seed] = 100.0 - r["value"]
    return det, clean, evaluator


def corruption_errors(records: list[dict], labels: dict[str, str], baseline: str) -> dict | None:
    """label -> {"mce": {seed: v}, "rel_mce": {seed: v}, "ce": {corruption: {seed: v}}}; None without detail
    rows or without the baseline among them."""
    det, clean, evaluator = errors(records, labels)
    if baseline not in det:
        return None
    keys = set.intersection(*(set(k) for per in det.values() for k in per.values()))
    if not keys:
        return None
    order = {c: k for k, c in enumerate(dict.fromkeys((r["settings"] or {}).get("corruption") for r in records
                                                      if is_detail(r)))}
    corruptions = sorted({c for c, _ in keys}, key=lambda c: order.get(c, len(order)))
    mean = lambda vs: sum(vs) / len(vs)
    ref = {k: mean([per[k] for per in det[baseline].values()]) for k in keys}
    ref_clean = mean(list(clean[baseline].values())) if clean.get(baseline) else None
    out = {}
    for lab, seeds in det.items():
        res: dict = {"mce": {}, "rel_mce": {}, "ce": {c: {} for c in corruptions}, "evaluator": evaluator}
        for seed, e in seeds.items():
            ces, rces = [], []
            for c in corruptions:
                ks = [k for k in keys if k[0] == c]
                ce = sum(e[k] for k in ks) / sum(ref[k] for k in ks) if sum(ref[k] for k in ks) > 0 else math.nan
                res["ce"][c][seed] = 100.0 * ce
                ces.append(ce)
                ec = clean.get(lab, {}).get(seed)
                den = sum(ref[k] - ref_clean for k in ks) if ref_clean is not None else 0.0
                rces.append(sum(e[k] - ec for k in ks) / den if ec is not None and den > 0 else math.nan)
            res["mce"][seed] = 100.0 * mean(ces)
            res["rel_mce"][seed] = 100.0 * mean(rces)
        out[lab] = res
    return out


def severity_grid(records: list[dict], labels: dict[str, str], metric: str) -> dict:
    """label -> (corruption, severity) -> mean over seeds of ``metric`` (detail rows), and severity 0 = clean."""
    acc: dict = {}
    evaluators = {r["evaluator"] for r in records if is_detail(r)}
    for r in records:
        if r["bin"] is not None or r["metric"] != metric or r["value"] is None:
            continue
        lab = labels[r["run"]]
        if is_detail(r):
            s = r["settings"]
            acc.setdefault(lab, {}).setdefault((s["corruption"], int(s["severity"])), []).append(r["value"])
        elif r["condition"] == "clean" and r["evaluator"] in evaluators:
            acc.setdefault(lab, {}).setdefault(("clean", 0), []).append(r["value"])
    return {lab: {k: sum(v) / len(v) for k, v in per.items()} for lab, per in acc.items()}
