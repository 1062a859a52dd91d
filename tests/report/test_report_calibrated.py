"""The report with calibrated rows: one table row per calibrator, raw and calibrated side by side in the
comparison, no "best" score for a column far below in accuracy, and the calibration-under-shift sentences
with their intervals computed by hand: on the proper scores (NLL here), never on ECE."""

from __future__ import annotations

import math

import pytest
from builders import specs

from mmix_eval.evaluate.records import record, write_records
from mmix_eval.report import build_report
from mmix_eval.report.calibration_verdicts import calibration_verdicts
from mmix_eval.report.claims import Primary, comparisons
from mmix_eval.report.compare import accuracy_gated
from mmix_eval.report.frame import records_frame
from mmix_eval.report.load import load_results
from mmix_eval.report.table import aggregate
from mmix_eval.report.view_main import main_rows, main_table


def verdicts_of(table):
    return calibration_verdicts(table, "vanilla", comparisons(table, "vanilla", {}, {}), {})


# method -> seed -> (clean acc, rotation acc, raw ECE under rotation, calibrated ECE under rotation); the rotation's
# NLL, raw and calibrated, takes the same values (so the NLL sentence can be checked by hand, and the ECE's absence)
VALUES = {
    "vanilla": {0: (90.0, 80.0, 0.20, 0.05), 1: (92.0, 82.0, 0.22, 0.06), 2: (91.0, 81.0, 0.21, 0.05)},
    "manifold_mixup": {0: (90.0, 83.0, 0.10, 0.05), 1: (91.0, 84.0, 0.11, 0.06), 2: (92.0, 85.0, 0.09, 0.07)},
    "weak": {0: (40.0, 30.0, 0.01, 0.01), 1: (41.0, 31.0, 0.01, 0.01), 2: (42.0, 32.0, 0.01, 0.01)},
}


def run_base(method: str, seed: int) -> dict:
    """The record columns of one run's deformations records."""
    run = f"{method}-s{seed}"
    return {
        "run": run,
        "checkpoint": f"runs/{run}/model.safetensors",
        "model": "smallnet",
        "method": method,
        "method_settings": {},
        "train_seed": seed,
        "data": "digits",
        "n": 100,
        "eval_seed": 0,
        "evaluator": "deformations",
        "settings": {"grid": "table4"},
    }


def write(root, isotonic=False):
    """The runs' records; with ``isotonic`` a second calibrator whose calibrated NLLs are twice temperature's."""
    for method, seeds in VALUES.items():
        for seed, (clean, rot, ece_raw, ece_cal) in seeds.items():
            run, base = f"{method}-s{seed}", run_base(method, seed)
            cal = {
                "calibrator": "temperature",
                "calibrator_fit_images": 50,
                "calibrator_params": {"temperature": 1 + seed},
            }
            rows = [
                record(base, "clean", "acc", clean, "Clean"),
                record(base, "clean", "ece", 0.3, "Clean"),
                record(base, "clean", "ece", 0.02 + seed / 1000, "Clean", **cal),
                record(base, "clean", "nll", 0.3, "Clean"),
                record(base, "clean", "nll", 0.02 + seed / 1000, "Clean", **cal),
                record(base, "rotation20", "acc", rot, "Rotation"),
                record(base, "rotation20", "ece", ece_raw, "Rotation"),
                record(base, "rotation20", "ece", ece_cal, "Rotation", **cal),
                record(base, "rotation20", "nll", ece_raw, "Rotation"),
                record(base, "rotation20", "nll", ece_cal, "Rotation", **cal),
            ]
            if isotonic:
                iso = {**cal, "calibrator": "isotonic", "calibrator_params": {}}
                rows += [
                    record(base, "clean", "nll", 2 * (0.02 + seed / 1000), "Clean", **iso),
                    record(base, "rotation20", "nll", 2 * ece_cal, "Rotation", **iso),
                ]
            write_records(specs(rows, "deformations"), root / run / "deformations")
    return root


def test_calibrated_rows_are_rows_of_their_own_beside_the_raw_ones(tmp_path):
    records = load_results([write(tmp_path / "res")]).rows
    frame = records_frame(records, {r["run"]: r["method"] for r in records})
    assert set(frame["calibrator"]) == {"none", "temperature"}
    table = aggregate(records, "vanilla")
    labels = [table.rows[i].label for i in main_rows(table)]
    # the clean ECE, then the same after temperature scaling, right below it
    k = labels.index("Clean: ECE")
    assert labels[k + 1] == "Clean: ECE, temperature scaled"
    rot = {
        table.rows[i].calibrator: i
        for i, r in enumerate(table.rows)
        if r.condition == "rotation20" and r.metric == "ece"
    }
    assert set(rot) == {"none", "temperature"}
    assert table.cells[rot["none"], "vanilla"].mean == 0.21 and math.isclose(
        table.cells[rot["temperature"], "vanilla"].mean, 0.16 / 3
    )


def test_a_score_is_not_called_best_for_a_column_far_below_in_accuracy(tmp_path):
    records = load_results([write(tmp_path / "res")]).rows
    table = aggregate(records, "vanilla")
    i = next(
        i
        for i, r in enumerate(table.rows)
        if r.condition == "rotation20" and r.metric == "ece" and r.calibrator == "none"
    )
    assert table.best(i) == {"weak"}  # the lowest ECE belongs to a column 52 points behind in accuracy
    assert accuracy_gated(table, i) == {"weak"}
    main = main_table(table, {}, "vanilla", comparisons(table, "vanilla", {}, {}), Primary())
    row = next(r for r in main["rows"] if r["label"] == "Clean: ECE, temperature scaled")
    cells = dict(zip(main["columns"], row["cells"]))
    assert cells["weak"]["text"].endswith(" ‡") and not cells["weak"]["best"]
    assert (
        "‡: the best value of its row, not bolded" in main["caption"] and "more than 5 points below" in main["caption"]
    )


def test_the_calibration_sentence_counts_and_intervals_by_hand(tmp_path):
    records = load_results([write(tmp_path / "res")]).rows
    table = aggregate(records, "vanilla")
    sentences = verdicts_of(table)
    assert not any("ECE" in s.split(":")[0] for s in sentences)  # ECE never decides a calibration verdict
    got = [s for s in sentences if s.startswith("deformations, NLL: manifold_mixup")]
    # method claims over seeds (no per-image data): raw NLL differences by seed −0.10, −0.11, −0.12 -> mean −0.11,
    # sd 0.01, t(2) 4.303 · 0.01/√3 = 0.0248, p = 0.0027, Holm × 4 (the section's raw and calibrated NLL of two
    # columns) = 0.011: holds; calibrated: 0, 0, +0.02 -> mean +0.0067, sd 0.0115, half-width 0.0287: does not
    assert len(got) == 1
    s = got[0]
    assert "lower than vanilla under 1 of 1 raw, 0 of those after temperature scaling" in s
    assert "−0.1100 [−0.1348, −0.0852] raw" in s and "+0.0067 [−0.0220, +0.0354] after" in s
    assert s.endswith("(method claims, 3 seed pairs).") and s.facts["raw"] == 1 and s.facts["after"] == 0
    # the calibration gap (raw − scaled) by seed: manifold 0.05, 0.05, 0.02; vanilla 0.15, 0.16, 0.16 -> differences
    # −0.10, −0.11, −0.14: mean −0.1167, sd 0.0208, half-width 4.303 · 0.0208/√3 = 0.0517; p = 0.0105, Holm × 1 (weak's
    # p is smaller): smaller for manifold_mixup, better calibrated as temperature scaling measures it
    assert "calibration gap smaller under 1, larger under 0" in s and s.facts["smaller"] == 1
    assert "Rotation, −0.1167 [−0.1684, −0.0650]" in s


def test_the_report_shows_the_sentences_and_the_calibration_figure(tmp_path):
    out = build_report([write(tmp_path / "res")], tmp_path / "rep", baseline="vanilla")
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Calibration under shift, raw and calibrated, against vanilla" in summary
    assert (tmp_path / "rep" / "plots" / "deformations-calibration.png").stat().st_size > 1000
    assert "Calibration under shift" in (tmp_path / "rep" / "report.html").read_text() and out


def test_an_ensemble_column_is_compared_with_the_baselines_ensemble(tmp_path):
    root = write(tmp_path / "res")
    for method, acc in (("vanilla", 85.0), ("manifold_mixup", 88.0)):
        run = f"{method}-ensemble"
        base = {
            "run": run,
            "checkpoint": "a, b, c",
            "model": "smallnet",
            "method": method,
            "method_settings": {"ensemble_members": 3},
            "train_seed": None,
            "data": "digits",
            "n": 100,
            "eval_seed": 0,
            "evaluator": "deformations",
            "settings": {"grid": "table4"},
            "method_label": f"{method} ensemble of 3",
        }
        rows = [record(base, "clean", "acc", acc + 5, "Clean"), record(base, "rotation20", "acc", acc, "Rotation")]
        write_records(specs(rows, "deformations"), root / run / "deformations")
    table = aggregate(load_results([root]).rows, "vanilla")
    from mmix_eval.report.compare import paired_differences, reference

    assert reference(table, "manifold_mixup ensemble of 3", "vanilla") == "vanilla ensemble of 3"
    assert reference(table, "manifold_mixup", "vanilla") == "vanilla"
    assert table.runs["manifold_mixup ensemble of 3"] == {
        "ensemble": "manifold_mixup-ensemble"
    }  # one "seed" of its own
    i = next(i for i, r in enumerate(table.rows) if r.condition == "rotation20" and r.metric == "acc")
    diffs = paired_differences(table, "vanilla")
    assert diffs[i, "manifold_mixup ensemble of 3"][:3] == (3.0, None, 1)  # one pair: 88 − 85, no interval
    found = comparisons(table, "vanilla", {}, {})
    assert {c.against for c in found if c.column == "manifold_mixup ensemble of 3"} == {"vanilla ensemble of 3"}
    assert not any(c.column == "vanilla ensemble of 3" for c in found)  # the reference is not compared with itself
    # an ensemble has no training seeds: no method claim, and never in the primary family
    assert all(c.method is None and not c.primary for c in found if c.column == "manifold_mixup ensemble of 3")
    from mmix_eval.report.view_cost import cost_table

    costs = {f"{m}-s{s}": {"train_wall_time_s": 3.0} for m in VALUES for s in VALUES[m]}
    cost = cost_table(table, costs)
    assert dict((r["label"], r["cells"][2]) for r in cost["rows"])["manifold_mixup ensemble of 3"] == "n/a"
    assert cost["caption"].endswith(
        "A deep ensemble trains nothing of its own: n/a, its members' cost is in their method's row."
    )


def test_a_nan_accuracy_or_calibrated_score_neither_crashes_nor_gates_nor_makes_a_claim(tmp_path):
    root = write(tmp_path / "res")
    base = {
        "run": "weak-s0",
        "checkpoint": "x",
        "model": "smallnet",
        "method": "weak",
        "method_settings": {},
        "train_seed": 0,
        "data": "digits",
        "n": 100,
        "eval_seed": 0,
        "evaluator": "deformations",
        "settings": {"grid": "table4"},
    }
    nan = float("nan")
    rows = [
        record(base, "clean", "acc", 40.0, "Clean"),
        record(base, "rotation20", "acc", nan, "Rotation"),
        record(base, "rotation20", "ece", 0.01, "Rotation"),
        record(base, "rotation20", "ece", nan, "Rotation", calibrator="temperature", calibrator_fit_images=50),
        record(base, "rotation20", "nll", 0.01, "Rotation"),
        record(base, "rotation20", "nll", nan, "Rotation", calibrator="temperature", calibrator_fit_images=50),
    ]
    write_records(specs(rows, "deformations"), root / "weak-s0" / "deformations")  # replaces weak's seed 0
    table = aggregate(load_results([root]).rows, "vanilla")
    i = next(
        i
        for i, r in enumerate(table.rows)
        if r.condition == "rotation20" and r.metric == "ece" and r.calibrator == "none"
    )
    assert accuracy_gated(table, i) == set()  # weak's accuracy there is n/a: 80 and 84 are within 5 points
    weak = next(s for s in verdicts_of(table) if s.startswith("deformations, NLL: weak"))
    # raw: 0.01 against 0.20/0.22/0.21, an advantage; calibrated: one seed NaN, so no pair set, no interval, no claim
    assert "under 1 of 1 raw, 0 of those after temperature scaling" in weak
    assert "−0.2000 [−0.2248, −0.1752] raw, no interval after" in weak
    build_report([root], tmp_path / "rep", baseline="vanilla")
    assert "Calibration under shift" in (tmp_path / "rep" / "summary.md").read_text()


def test_several_calibrators_give_a_sentence_each_and_a_table_of_proper_scores_by_calibrator(tmp_path):
    from mmix_eval.report.calibrator_means import calibrator_means

    records = load_results([write(tmp_path / "res", isotonic=True)]).rows
    table = aggregate(records, "vanilla")
    sentences = [s for s in verdicts_of(table) if s.startswith("deformations, NLL: manifold_mixup")]
    assert [s.facts["calibrator"] for s in sentences] == ["temperature", "isotonic"]
    assert "after temperature scaling" in sentences[0] and "after isotonic scaling" in sentences[1]
    means = calibrator_means(table)
    assert [(m.section, m.metric, m.calibrators) for m in means] == [
        ("deformations", "nll", ["none", "temperature", "isotonic"])
    ]
    m = means[0]
    # one shifted condition (rotation20); manifold_mixup's seeds: raw 0.10, 0.11, 0.09; temperature 0.05, 0.06, 0.07;
    # isotonic twice that
    assert m.conditions == 1
    raw, temp, iso = (m.cells[c, "manifold_mixup"] for c in m.calibrators)
    assert raw[0] == pytest.approx(0.10, abs=1e-12) and raw[1] == pytest.approx(0.01, abs=1e-12) and raw[2] == 3
    assert temp[0] == pytest.approx(0.06, abs=1e-12) and temp[1] == pytest.approx(0.01, abs=1e-12)
    assert iso[0] == pytest.approx(0.12, abs=1e-12) and iso[1] == pytest.approx(0.02, abs=1e-12)
    build_report([tmp_path / "res"], tmp_path / "rep", baseline="vanilla")
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "| manifold_mixup, isotonic |" in summary and "### Proper scores under shift by calibrator" in summary
    # vanilla's isotonic NLLs 0.10, 0.12, 0.10: 0.1067 ± 0.0115
    assert m.text("isotonic", "vanilla") == "0.1067 ± 0.0115"
    row = "| isotonic | " + " | ".join(m.text("isotonic", c) for c in m.columns) + " |"
    assert row in summary and "0.1200 ± 0.0200" in row


def test_conformal_coverage_and_set_size_by_calibrator_clean_and_shifted(tmp_path):
    """Coverage rows of APS sets, raw and after temperature: the table's cells are the seed means by hand."""
    from mmix_eval.report.calibrator_means import conformal_means

    root = tmp_path / "res"
    write(root)
    for method, seeds in VALUES.items():
        for seed in seeds:
            run, base = f"{method}-s{seed}", run_base(method, seed)
            rows = []
            for cal in ("none", "temperature"):
                extra = {"calibrator": cal, "conformal_alpha": 0.1}
                shift = 10.0 if cal == "none" else 0.0  # temperature: 10 points more coverage under rotation
                rows += [
                    record(base, "clean", "coverage_aps", 90.0 + seed, "Clean", **extra),
                    record(base, "clean", "set_size_aps", 1.0 + seed / 10, "Clean", **extra),
                    record(base, "rotation20", "coverage_aps", 70.0 + seed - shift + 10, "Rotation", **extra),
                    record(base, "rotation20", "set_size_aps", 2.0, "Rotation", **extra),
                ]
            write_records(specs(rows, "deformations"), root / run / "conformal")
    table = aggregate(load_results([root]).rows, "vanilla")
    (t,) = conformal_means(table)
    assert (t.section, t.method, t.alpha, t.calibrators) == ("deformations", "aps", 0.1, ["none", "temperature"])
    # seeds 0, 1, 2: clean coverage 90, 91, 92 -> 91.0 %, size 1.0, 1.1, 1.2 -> 1.10; rotation raw 70, 71, 72 -> 71.0
    assert t.text(t.clean, "none", "vanilla") == "91.0 % (1.10)"
    assert t.text(t.shifted, "none", "vanilla") == "71.0 % (2.00)"
    assert t.text(t.shifted, "temperature", "vanilla") == "81.0 % (2.00)"
    build_report([root], tmp_path / "rep", baseline="vanilla")
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "deformations, APS sets (clean | shifted, mean over conditions):" in summary
    assert "| temperature | 91.0 % (1.10) \\| 81.0 % (2.00) |" in summary
