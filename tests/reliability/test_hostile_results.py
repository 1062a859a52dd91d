"""Hostile and unlucky result files (issue 32, items 1-3): non-finite values are data, every corrupt file is
skipped with its reason while the report is built from the rest, and reading is bounded by bytes
decompressed, not by lines. Records are hand-made; nothing here trains."""

from __future__ import annotations

import gzip
import json
import math
import re
import struct
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmix_eval.errors import UserError, one_line
from mmix_eval.evaluate.outcomes import write_outcomes
from mmix_eval.evaluate.records import FIELDS, read_jsonl, record, write_records
from mmix_eval.report import build_report
from mmix_eval.report.table import Cell
from tests.builders import corruption_records, fake_results, specs

# ---------------------------------------------------------------- 1. non-finite values are data


def test_relative_mce_with_a_non_positive_denominator_is_undefined_over_two_seeds(tmp_path):
    """The issue's built-in path: a weak baseline more accurate under a noise than clean (an odd grayscale folder)
    makes relative mCE's denominator negative. It crashed `report` with a statistics.stdev traceback over 2 seeds."""
    res = tmp_path / "res"
    for seed in (0, 1):
        # baseline: clean error 60, noise errors 50 and 55 (below clean), fog 70 and 80
        corruption_records(
            res, "vanilla", seed, {("noise", 1): 50, ("noise", 2): 55, ("fog", 1): 70, ("fog", 2): 80}, 60, "gray"
        )
        corruption_records(
            res,
            "manifold_mixup",
            seed,
            {("noise", 1): 45, ("noise", 2): 50, ("fog", 1): 65, ("fog", 2): 70},
            58,
            "gray",
        )
    build_report([res], tmp_path / "rep", baseline="vanilla")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert (
        "| corruptions: relative mCE (% of vanilla's degradation) | n/a (2 of 2 non-finite) | n/a (2 of 2 non-finite) |"
        in md
    )
    assert "Relative mCE is undefined (n/a) where vanilla's error under a corruption is not above its clean error" in md
    assert "non-positive denominator): noise." in md
    # mCE itself is defined: (95/105 + 135/150) / 2 = 0.902 for the method, the baseline 100 (not bold: the two seeds'
    # differences are equal, no spread, so no interval to test it by)
    assert "| corruptions: mCE (% of vanilla's errors) | 100.0 ± 0.0 (n=2) | 90.2 ± 0.0 (n=2) |" in md


def test_nan_values_of_an_evaluator_over_two_seeds_are_n_a_with_a_count_and_name_their_runs(tmp_path):
    """A plugin evaluator returning NaN (written as null) for one seed of each method, and for both seeds of one
    condition: every aggregate is n/a with how many seeds were not finite; the report names the runs."""
    res = fake_results(tmp_path / "res", methods={"vanilla": {0: 50.0, 1: 60.0}, "manifold_mixup": {0: 54.0, 1: 62.0}})
    for run in ("vanilla-s0", "manifold_mixup-s0", "vanilla-s1", "manifold_mixup-s1"):
        path = res / run / "deformations.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        for r in rows:
            if r["condition"] == "rotation20" or (r["metric"] == "nll" and run.endswith("s0")):
                r["value"] = None
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = build_report([res], tmp_path / "rep", baseline="vanilla")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| Rotation U(−20°, 20°): accuracy (%) | n/a (2 of 2 non-finite) | n/a (2 of 2 non-finite) |" in md
    assert "| clean: NLL | n/a (1 of 2 non-finite) | n/a (1 of 2 non-finite) |" in md
    assert "Non-finite values in run vanilla-s0 (2): deformations clean nll, deformations rotation20 acc" in md
    assert "Non-finite values in run vanilla-s1 (1): deformations rotation20 acc" in md
    # no difference, interval or claim is made from a non-finite value; the finite rows keep theirs
    table = out["table"]
    claimed = {f"{table.rows[c.row].condition}:{table.rows[c.row].metric}" for c in out["comparisons"]}
    assert "eps8:acc" in claimed and not {"rotation20:acc", "clean:nll"} & claimed
    csv = (tmp_path / "rep" / "table.csv").read_text()
    assert "rotation20" in csv


@pytest.mark.parametrize(
    "values, mean_is_nan, std",
    [
        ({0: 1.0, 1: 3.0}, False, math.sqrt(2.0)),
        ({0: math.nan, 1: 3.0}, True, "nan"),
        ({0: math.inf, 1: 3.0}, True, "nan"),  # statistics.stdev raised AttributeError on these
        ({0: -math.inf, 1: math.inf}, True, "nan"),
        ({0: math.inf}, True, None),
    ],
)
def test_a_cell_over_non_finite_seeds_has_no_mean_or_std_and_counts_them(values, mean_is_nan, std):
    c = Cell(values)
    assert math.isnan(c.mean) == mean_is_nan
    if std is None:
        assert c.std is None
    elif std == "nan":
        assert math.isnan(c.std)
    else:
        assert c.std == pytest.approx(std)
    assert c.nonfinite == sum(not math.isfinite(v) for v in values.values())


def test_t_interval_and_paired_t_refuse_non_finite_differences_without_raising():
    from mmix_eval.report.stats import paired_t_p, t_interval

    mean, half = t_interval([math.inf, 1.0])
    assert math.isnan(mean) and half is None
    assert paired_t_p([math.nan, 1.0, 2.0]) is None
    assert t_interval([1.0, 3.0])[1] == pytest.approx(12.706204736 * 1.0, rel=1e-6)  # t(1) · s / √2, s = √2


# ---------------------------------------------------------------- 3. a corrupt result file is skipped


def _first_value(text: str, literal: str) -> str:
    return re.sub(r'"value": [0-9.]+', f'"value": {literal}', text, count=1)


def _corrupt_kinds(folder: Path) -> dict[str, str]:
    """Seven kinds of damage, each to its own run's record (or outcomes) file; -> run -> the reason expected."""

    def rewrite(run, fn):
        p = folder / run / "deformations.jsonl"
        p.write_text(fn(p.read_text()))

    rewrite("vanilla-s2", lambda t: "[" * 100_000 + "]" * 100_000 + "\n" + t)  # deep nesting
    rewrite("vanilla-s3", lambda t: t.replace('"settings": {', '"settings": 5, "x": {', 1))  # wrong field type
    rewrite("vanilla-s4", lambda t: _first_value(t, "1" + "0" * 400))  # a 400-digit number
    rewrite("vanilla-s5", lambda t: _first_value(t, "1e999"))  # overflows to inf
    rewrite("vanilla-s6", lambda t: t.replace('"run": "vanilla-s6"', '"run": ["vanilla-s6"]', 1))  # unhashable run
    rewrite("vanilla-s7", lambda t: _first_value(t, "Infinity"))
    (folder / "vanilla-s8" / "deformations.outcomes.npz").write_bytes(b"PK\x03\x04 not a zip")  # a bad npz
    return {
        "vanilla-s2": "nested deeper than any record",
        "vanilla-s3": "'settings' expected an object or null, got int",
        "vanilla-s4": "'value' expected a finite number or null, got a number out of float range",
        "vanilla-s5": "'value' expected a finite number or null, got a number out of float range",
        "vanilla-s6": "'run' expected text, got list",
        "vanilla-s7": "line 1: a bare Infinity, expected a finite number or null",
        "vanilla-s8": "unreadable per-image outcomes",
    }


def test_seven_kinds_of_corrupt_files_are_each_skipped_and_listed_and_the_report_is_built(tmp_path, capsys):
    from mmix_eval.cli import main

    methods = {"vanilla": {s: 60.0 - s for s in range(9)}, "manifold_mixup": {s: 62.0 for s in range(9)}}
    res = fake_results(tmp_path / "res", methods=methods)
    for s in range(9):  # every run gets per-image outcomes, so the bad npz is one of many good ones
        write_outcomes(
            res / f"vanilla-s{s}" / "deformations.outcomes.npz", {"clean": np.ones(100, bool)}, np.arange(100)
        )
    expected = _corrupt_kinds(res)
    assert main(["report", str(res), "--out", str(tmp_path / "rep"), "--baseline", "vanilla"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for run, why in expected.items():
        line = next(ln for ln in err.splitlines() if f"/{run}/" in ln)
        assert why in line, (run, line)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.count("vanilla-s2") >= 1 and "Clean: accuracy (%)" in md
    assert "(n=3)" in md  # vanilla keeps seeds 0, 1 and 8 (whose records are fine; only its npz is bad)


def test_a_record_file_without_newlines_is_refused_at_the_cap_without_holding_more(tmp_path):
    """It was read line by line, the cap checked after each line: 3 GiB with no newline passed 5 GB RSS. Now the
    cap is on bytes decompressed so far, read in 1 MiB chunks."""
    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        block = b"x" * (1 << 20)
        for _ in range(40):  # 40 MiB decompressed, no newline
            f.write(block)
    tracemalloc.start()
    with pytest.raises(ValueError, match="more than 4194304 bytes of records once decompressed"):
        read_jsonl(path, max_bytes=4 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB for a 4 MiB cap"


def test_outcome_files_that_would_decompress_huge_or_hold_the_wrong_arrays_are_refused(tmp_path):
    from mmix_eval.evaluate import outcomes as oc

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("indices.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (40 << 20,)})
        for _ in range(320):
            f.write(bytes(1 << 20))
    with pytest.raises(ValueError, match="once decompressed, more than per-image outcomes take"):
        oc.read_outcomes(bomb)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, indices=np.arange(10.0), **{"c/clean": np.ones(2, np.uint8)})
    with pytest.raises(ValueError, match="'indices' expected non-negative integer image indices"):
        oc.read_outcomes(wrong)
    short = tmp_path / "short.npz"
    np.savez(short, indices=np.arange(100), **{"c/clean": np.ones(2, np.uint8)})
    with pytest.raises(ValueError, match="'c/clean' expected 13 packed bytes for 100 images"):
        oc.read_outcomes(short)


# ---------------------------------------------------------------- fuzz: no record makes `report` raise

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
_SETTING_KEYS = st.sampled_from(
    ["strength", "eps_255", "severity", "corruption", "grid", "eps", "ood", "layer", "bins"]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS + ["settings.k"]), value=_JSON, key=_SETTING_KEYS)
def test_fuzz_one_field_of_one_record_never_makes_report_raise(tmp_path_factory, field, value, key):
    """Each example replaces one field of one record (or one of its settings) with an arbitrary JSON value:
    the report is built (the file skipped and listed where the record is unusable), or refused in one line (a
    UserError: records that can no longer be compared, say); no other exception."""
    tmp = tmp_path_factory.mktemp("fuzz")
    res = fake_results(tmp / "res")
    path = res / "vanilla-s0" / "deformations.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    if field == "settings.k":
        rows[-1]["settings"] = {**(rows[-1]["settings"] or {}), key: value}
    else:
        rows[-1][field] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        out = build_report([res], tmp / "rep", baseline="vanilla")
    except UserError as e:  # the CLI's one-line refusal (exit 2); nothing was written
        assert "\n" not in one_line(str(e)) and not (tmp / "rep").exists()
        return
    assert (tmp / "rep" / "report.html").is_file()
    assert out["bad"] == [] or any("vanilla-s0" in p for p, _ in out["bad"])


# ---------------------------------------------------------------- 4. user strings in plots are literal


def test_mathtext_and_a_leading_underscore_in_a_swept_method_draw_literally_in_the_sweep_legend(tmp_path):
    """`$\\frac{$` as a swept method's name crashed matplotlib's mathtext parser in the sweep legend (the other
    plots drew it literally)."""
    root = tmp_path / "res"
    for method, prob in [("vanilla", None), (r"$\frac{$", 0.1), (r"$\frac{$", 0.5), ("_hidden", 0.2), ("_hidden", 0.4)]:
        for seed in (0, 1):
            run = safe_run(f"{method}-{prob}-s{seed}")
            base = {
                "run": run,
                "checkpoint": "x",
                "model": "smallnet",
                "method": method,
                "method_settings": {"prob": prob} if prob else {},
                "sweep": {"prob": prob} if prob else None,
                "train_seed": seed,
                "data": "digits",
                "n": 100,
                "eval_seed": 0,
                "evaluator": "deformations",
                "settings": {"grid": "table4"},
            }
            rows = [
                record(base, "clean", "acc", 60.0 + seed + (prob or 0)),
                record(base, "clean", "ece", 0.1),
                record(base, "rotation20", "acc", 50.0 + seed, label=r"Rot $x^{$"),
            ]
            write_records(specs(rows, "deformations"), root / run / "deformations")
    out = build_report([root], tmp_path / "rep", baseline="vanilla")
    assert (tmp_path / "rep" / "plots" / "sweep-prob.png").stat().st_size > 1000
    assert out["table"].sweeps  # the sweep was recognised, so its legend was drawn


def safe_run(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "x", text)


# ---------------------------------------------------------------- 8. the report at many conditions


def _png_width(path: Path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]  # the IHDR chunk's width


@pytest.mark.parametrize("numeric", [False, True])
def test_plots_stay_bounded_in_width_at_many_conditions(tmp_path, numeric):
    """40k records gave a 3.1-megapixel-wide PNG and 12.7 GB: one bar group or one inch per condition. Now a
    plot shows at most MAX_PLOT_CONDITIONS categories (saying so in its title) and its width no longer grows."""
    from mmix_eval.report.plots import MAX_PLOT_CONDITIONS

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_report_scale import make

    make(tmp_path / "res", 4 * 5 * 300, numeric=numeric)  # 300 conditions
    out = build_report([tmp_path / "res"], tmp_path / "rep", baseline="vanilla")
    pngs = list((tmp_path / "rep" / "plots").glob("*.png"))
    assert pngs and max(_png_width(p) for p in pngs) <= 2400, {p.name: _png_width(p) for p in pngs}  # 18 in + legend
    assert (
        len([r for r in out["table"].rows if r.evaluator == "sweep" and r.metric == "acc"]) >= 299
    )  # the table keeps all
    from mmix_eval.report.plots import COLORS, line_or_bars, plt

    table = out["table"]
    idx = [i for i, r in enumerate(table.rows) if r.section == "comparison" and r.metric == "acc"]
    fig, ax = plt.subplots()
    line_or_bars(ax, table, idx, COLORS, "accuracy (%)", "sweep")
    note = f"[first {MAX_PLOT_CONDITIONS} of {len(idx)} conditions; all in table.csv]"
    if numeric:  # lines along the strength: every condition drawn, nothing cut
        assert note not in ax.get_title() and len(ax.lines[0].get_xdata()) == len(idx)
    else:  # bars: the first 30 condition groups, and the title says so
        assert note in ax.get_title() and len(ax.get_xticks()) == MAX_PLOT_CONDITIONS
    plt.close(fig)


def test_the_console_summary_prints_a_screenful_and_says_where_the_rest_is():
    """200k conditions took 6.6 minutes (a list lookup per row) and printed 200k lines."""
    from mmix_eval.evaluate.console import MAX_CONSOLE_CONDITIONS, summary_table

    base = {"run": "r", "method": "m", "evaluator": "e"}
    rows = [
        dict(record(base, f"c{i}", m, 1.0), direction="lower", format=".2f", schema=2)
        for i in range(20_000)
        for m in ("nll", "ece")
    ]
    lines = summary_table(rows, "results/r/e.csv").splitlines()
    assert len(lines) == MAX_CONSOLE_CONDITIONS + 2
    assert lines[-1] == f"  … and {20_000 - MAX_CONSOLE_CONDITIONS:,} more conditions, every one in results/r/e.csv"
    assert lines[0].split() == ["condition", "nll", "ece"] and lines[1].split() == ["c0", "1.00", "1.00"]


def test_a_result_file_over_the_cap_says_why_it_is_not_read(tmp_path, monkeypatch):
    import mmix_eval.report.load as load

    res = fake_results(tmp_path / "res", methods={"vanilla": {0: 50.0}})
    monkeypatch.setattr(load, "MAX_RESULT_FILE", 100)
    with pytest.raises(
        UserError,
        match=r"only unreadable ones: .*deformations.jsonl \(\d[\d,]* bytes, larger than a result "
        r"file may be \(100 bytes at most",
    ):
        build_report([res], tmp_path / "rep", baseline="vanilla")


# ---------------------------------------------------------------- 9. one test subset per report


def test_records_of_one_run_on_different_test_subsets_are_refused_or_split(tmp_path):
    """`attack --limit 30` and `corruptions --limit 100` written into one folder were reported side by side
    (the clean row from 30 images, the corruption means from 100)."""
    res = fake_results(tmp_path / "res")
    for path in res.glob("*/fgsm.jsonl"):  # fgsm evaluated on another subset of 30 images
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "n": 30, "subset": "0123456789abcdef"}) + "\n" for r in rows))
    with pytest.raises(
        UserError,
        match=r"got 2 groups that cannot, e\.g\. 4 run\(s\) like 'manifold_mixup-s0' "
        r"\(deformations\): data digits, 100 test images .*; and 4 run\(s\) like "
        r"'manifold_mixup-s0' \(fgsm\): data digits, 30 test images \(subset 0123456789abcdef\)",
    ):
        build_report([res], tmp_path / "rep", baseline="vanilla")
    assert not (tmp_path / "rep").exists()
    out = build_report([res], tmp_path / "split", baseline="vanilla", split_by=True)
    parts = sorted(p.name for p in out["groups"])
    assert parts == ["group1-digits-n100", "group2-digits-n30"]
    md30 = (tmp_path / "split" / "group2-digits-n30" / "report.md").read_text()
    assert "FGSM ε = 8/255" in md30 and "Rotation" not in md30 and "test images: 30" in md30


# ---------------------------------------------------------------- empty inputs to the new readers


def test_empty_inputs_give_empty_results_not_errors(tmp_path):
    from mmix_eval.evaluate.console import summary_table
    from mmix_eval.io import parse_yaml
    from mmix_eval.report.table import by_subset

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert read_jsonl(empty) == []
    gz = tmp_path / "empty.jsonl.gz"
    with gzip.open(gz, "wb"):
        pass
    assert read_jsonl(gz) == []
    assert parse_yaml("") is None and parse_yaml("# only a comment\n") is None
    assert summary_table([]).split() == ["condition"]
    assert by_subset([]) == []
