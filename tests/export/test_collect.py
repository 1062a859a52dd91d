"""What an export sends, from the records alone: names, params, the training curve, the stable run id."""

from __future__ import annotations

import json
import math

import pytest

from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import read_records, write_records
from mmix_eval.export import collect, metric_name, run_folders
from mmix_eval.export.collect import flatten
from tests.builders import fake_results


def test_every_finite_record_becomes_one_named_metric(tmp_path):
    root = fake_results(tmp_path / "results")
    folders = run_folders(root)
    assert [f.name for f in folders] == ["manifold_mixup-s0", "manifold_mixup-s1", "vanilla-s0", "vanilla-s1"]
    run = collect(root / "vanilla-s1")
    assert run.metrics == {
        "deformations/clean/acc": 70.0,
        "deformations/clean/nll": pytest.approx(0.4),
        "deformations/clean/ece": 0.11,
        "deformations/rotation20/acc": 60.0,
        "fgsm/clean/acc": 70.0,
        "fgsm/eps8/acc": 40.0,
    }
    assert run.params["method"] == "vanilla" and run.params["train_seed"] == 1
    assert run.params["method_settings.loss"] == "bce_softmax" and run.curve == []  # no run folder: no curve
    # Stable: the same records give the same id and content; another run, another id.
    again = collect(root / "vanilla-s1")
    assert (again.run_id, again.content) == (run.run_id, run.content)
    assert collect(root / "vanilla-s0").run_id != run.run_id


def test_names_calibrators_bins_and_what_is_left_out(tmp_path):
    root = fake_results(tmp_path / "results")
    stem = root / "vanilla-s0" / "deformations"
    rows = read_records(stem.with_suffix(".jsonl"))
    rows.append({**rows[2], "calibrator": "temperature", "value": 0.05})
    rows.append({**rows[2], "metric": "bin_acc", "bin": 3, "value": 0.5})
    rows.append({**rows[1], "condition": "ood@pen ultimate", "value": math.nan})
    write_records(rows, stem)
    run = collect(root / "vanilla-s0")
    assert run.metrics["deformations/clean/ece/temperature"] == 0.05
    assert run.metrics["deformations/clean/bin_acc/bin3"] == 0.5
    assert run.non_finite == 1 and not any("ood" in k for k in run.metrics)
    assert (
        metric_name({"condition": "a@b", "metric": "auroc", "calibrator": "none", "bin": None}, "ood")
        == "ood/a_b/auroc"
    )
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": "null"}


def test_two_files_giving_one_name_two_values_are_refused(tmp_path):
    root = fake_results(tmp_path / "results")
    rows = read_records(root / "vanilla-s0" / "fgsm.jsonl")
    write_records(rows, root / "vanilla-s0" / "fgsm-copy")  # the same names under fgsm-copy/: no clash
    collect(root / "vanilla-s0")
    rows[0]["condition"] = "eps8"  # fgsm/eps8/acc now given twice, 60 and 30
    write_records(rows, root / "vanilla-s0" / "fgsm")
    with pytest.raises(UserError, match="both give metric 'fgsm/eps8/acc' of run 'vanilla-s0', with different values"):
        collect(root / "vanilla-s0")


def test_curve_from_log_jsonl_last_line_per_epoch(tmp_path):
    root = fake_results(tmp_path / "bench" / "results")
    run_dir = tmp_path / "bench" / "runs" / "vanilla-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "model.json").write_text(
        json.dumps({"config": {"train": {"epochs": 2, "lr": 0.1}}, "model": {"kwargs": {"width": 8}}})
    )
    lines = [{"epoch": 1, "step": 5, "train_loss": 2.0, "val_acc": 10.0}, {"epoch": 1, "step": 5, "train_loss": 1.9},
             {"epoch": 2, "step": 10, "train_loss": 1.5, "note": "x", "val_acc": float("nan")}]  # fmt: skip
    (run_dir / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + '\n{"epoch": 3, "tr')
    run = collect(tmp_path / "bench" / "results" / "vanilla-s0")
    assert run.curve == [(1, {"train/train_loss": 1.9}), (2, {"train/train_loss": 1.5})]
    assert run.params["train.epochs"] == 2 and run.params["model_kwargs.width"] == 8
    assert [f.name for f in run_folders(tmp_path / "bench")] == [f.name for f in run_folders(root)]


def test_bad_results_are_one_line(tmp_path):
    with pytest.raises(UserError, match="export: expected a results folder"):
        run_folders(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="expected records .* got none"):
        run_folders(tmp_path / "empty")
