"""Issue 44 item 7: the report's per-run lookups indexed once (they sorted every stored entry on every call, so
513 runs took minutes), and the records' repeated strings and settings held once. The indexed lookups give what
the brute-force definitions give; the shared records read as the unshared ones. Time and memory at 513 runs:
``benchmarks/bench_report_runs.py`` (figures in benchmarks/README.md)."""

from __future__ import annotations

import itertools
import json

import numpy as np
from builders import fake_results

from mmix_eval.evaluate.records import read_jsonl
from mmix_eval.report import compare
from mmix_eval.report.table import Row


def _brute_matches(detail, run, row):
    return [
        (k, v)
        for k, v in sorted(detail.items(), key=lambda kv: tuple(map(str, kv[0])))
        if k[0] == run and k[2] == row.condition and k[3] == row.calibrator
    ]


def _brute_outcome(outcomes, run, row):
    return next(
        (
            v
            for (r, _, c), v in sorted(outcomes.items(), key=lambda kv: tuple(map(str, kv[0])))
            if r == run and c == row.condition
        ),
        None,
    )


def test_indexed_lookups_equal_the_brute_force_definitions():
    rng = np.random.default_rng(0)
    runs, evaluators, conditions, calibrators = (
        ["a-s0", "a-s1", "b-s0"],
        ["deformations", "fgsm", "calibration"],
        ["clean", "rot20", "eps8"],
        ["none", "temperature"],
    )
    detail, outcomes = {}, {}
    for k in itertools.product(runs, evaluators, conditions, calibrators):
        if rng.random() < 0.6:
            detail[k] = (np.arange(3), None if rng.random() < 0.3 else rng.random(4), None)
        if k[3] == "none" and rng.random() < 0.7:
            outcomes[k[:3]] = (np.arange(3), rng.random(3) < 0.5)
    for run, cond, cal in itertools.product(runs + ["c-s9"], conditions + ["other"], calibrators):
        row = Row(None, cond, "nll", "x", "lower", ".4f", "comparison", calibrator=cal)
        assert compare._matches(detail, run, row) == _brute_matches(detail, run, row)
        assert compare._outcome(outcomes, run, row) is _brute_outcome(outcomes, run, row)
        for ev in evaluators:
            named = Row(ev, cond, "nll", "x", "lower", ".4f", ev, calibrator=cal)
            key = (run, ev, cond, cal)
            assert compare._matches(detail, run, named) == ([(key, detail[key])] if key in detail else [])
    detail[("c-s9", "fgsm", "other", "none")] = (np.arange(3), rng.random(4), None)  # a changed mapping: re-indexed
    row = Row(None, "other", "nll", "x", "lower", ".4f", "comparison")
    assert compare._matches(detail, "c-s9", row) == _brute_matches(detail, "c-s9", row) != []


def test_shared_records_read_as_the_unshared_ones_and_share_their_settings(tmp_path):
    res = fake_results(tmp_path / "res")
    files = sorted(res.rglob("*.jsonl"))
    share: dict = {}
    shared = [r for f in files for r in read_jsonl(f, share=share)]
    plain = [r for f in files for r in read_jsonl(f)]
    assert json.dumps(shared, sort_keys=True, default=str) == json.dumps(plain, sort_keys=True, default=str)
    same = [r for r in shared if r["evaluator"] == "deformations"]
    assert len(same) > 2 and all(r["settings"] is same[0]["settings"] for r in same)  # one object, not many
    assert all(r["data"] is shared[0]["data"] for r in shared)
