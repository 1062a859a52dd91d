from __future__ import annotations

import csv
import io
import json
import os

import pytest
from conftest import ROOT

from mmix_eval.bench import load_bench
from mmix_eval.cli import main
from mmix_eval.errors import UserError

ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

TINY = """
name: tiny
data: {name: digits, val_size: 100}
model: {name: smallnet, kwargs: {width: 4}}
train: {epochs: 2, batch_size: 100, schedule: cosine, crop_padding: 1, device: cpu}
methods: [vanilla, {name: manifold_mixup, alpha: 2.0}]
seeds: [0, 1]
evaluate: {limit: 100, eps: [2, 8], device: cpu}
report: {baseline: vanilla, checks: ["vanilla.clean >= 5"]}
ensembles: true
"""


@pytest.mark.slow
def test_bench_runs_then_skips_what_is_done_and_resumes_a_lost_checkpoint(tmp_path, capsys):
    cfg = tmp_path / "b.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "bench"
    assert main(["bench", str(cfg), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "PASS: vanilla.clean >= 5" in text and "report:" in text
    assert {p.name for p in (out / "runs").iterdir()} == {
        "vanilla-s0",
        "vanilla-s1",
        "manifold_mixup-s0",
        "manifold_mixup-s1",
    }
    table = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert {r["vanilla n"] for r in table if r["metric"] == "acc"} == {"2"}
    # ensembles: true: each method's two seeds as one more column, a single "seed" of its own
    assert {r["manifold_mixup ensemble of 2 n"] for r in table if r["metric"] == "acc"} == {"1"}
    assert "vanilla-ensemble: 2 members evaluated as one ensemble" in text
    ens_before = (out / "results" / "manifold_mixup-ensemble" / "fgsm.meta.json").read_text()
    # The bench root works as report input too: training logs are not mistaken for broken records.
    assert main(["report", str(out), "--out", str(tmp_path / "again")]) == 0
    assert "skipped unreadable" not in capsys.readouterr().err
    meta_before = (out / "results" / "vanilla-s0" / "fgsm.meta.json").read_text()
    sha_before = json.loads((out / "runs" / "manifold_mixup-s1" / "model.json").read_text())["data_sha256"]

    (out / "runs" / "manifold_mixup-s1" / "model.safetensors").unlink()  # as if killed before the final write
    assert main(["bench", str(cfg), "--out", str(out), "--no-progress"]) == 0
    log = capsys.readouterr().out
    assert "vanilla-s0: done already" in log and "manifold_mixup-s1: resumed" in log
    assert (out / "results" / "vanilla-s0" / "fgsm.meta.json").read_text() == meta_before  # not re-evaluated
    assert (out / "results" / "manifold_mixup-ensemble" / "fgsm.meta.json").read_text() == ens_before  # same members
    assert json.loads((out / "runs" / "manifold_mixup-s1" / "model.json").read_text())["data_sha256"] == sha_before


@pytest.mark.parametrize(
    "text,match",
    [
        ("methods: [vanilla]\nsedes: [0]\n", "unknown key 'sedes' (did you mean 'seeds'?)"),
        ("methods: []\n", "'methods' expected a non-empty list"),
        ("methods: [vanilla]\nseeds: [-1]\n", "'seeds' expected a non-empty list of integers >= 0"),
        ("methods: [vanila]\n", "unknown method 'vanila' (did you mean 'vanilla'?)"),
        ("methods: [{name: manifold_mixup, alpha: -1}]\n", "alpha: expected a finite number > 0, got -1"),
        (
            "methods: [vanilla]\nevaluate: {eps: [1], bins: 15, gird: table4}\n",
            "unknown key 'gird' (did you mean 'grid'?)",
        ),
        ("methods: [vanilla, vanilla]\n", "two runs are both named 'vanilla-s0'; give one method a 'label'"),
        ("methods: [vanilla]\ntrain: {epoch: 3}\n", "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
        ("methods: [vanilla]\nensembles: yes please\n", "'ensembles' expected true or false, got 'yes please'"),
        (
            "methods: [vanilla]\nseeds: [0]\nensembles: true\n",
            "'ensembles' expected at least 2 seeds per method to ensemble, got 1",
        ),
        (
            "methods: [vanilla]\nevaluate: {calibrator: temprature}\n",
            "unknown calibrator 'temprature' (did you mean 'temperature'?)",
        ),
        (
            "methods: [vanilla]\nevaluate: {calibration_split: 0}\n",
            "'calibration_split': expected an integer from 1 to 1,000,000,000, got 0",
        ),
    ],
)
def test_bench_config_errors(tmp_path, text, match):
    cfg = tmp_path / "b.yaml"
    cfg.write_text(text)
    with pytest.raises(UserError) as e:
        load_bench(cfg)
    assert match in str(e.value)


def test_shipped_bench_configs_load():
    for path in sorted((ROOT / "configs" / "bench").glob("*.yaml")):
        bench = load_bench(path)
        assert len(bench.runs) >= 6 and len({r.cfg.train.seed for r in bench.runs}) >= 2, path.name


@pytest.mark.slow
def test_cpu_sized_cifar10_bench_end_to_end(tmp_path, capsys, monkeypatch, shared_decode_cache):
    """As a user runs it: the default launcher, one worker process per free core (conftest's MMIX_EVAL_JOBS=1 off)."""
    monkeypatch.delenv("MMIX_EVAL_JOBS")
    if not ARCHIVE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{ARCHIVE} is missing: CI runs with ../shared beside the clone")
        pytest.skip("../shared/data not found")
    os.chdir(ROOT)  # the config names the data relative to the repository root
    out = tmp_path / "bench"
    code = main(["bench", "configs/bench/cifar10-cpu.yaml", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    table = {(r["condition"], r["metric"]): r for r in csv.DictReader(io.StringIO((out / "table.csv").read_text()))}
    for m in ("vanilla", "input_mixup", "manifold_mixup"):
        assert table["clean", "acc"][f"{m} n"] == "2"
        assert float(table["clean", "acc"][f"{m} mean"]) > 25.0  # chance is 10 %
        assert float(table["rotation40", "acc"][f"{m} mean"]) < float(table["rotation20", "acc"][f"{m} mean"])
    page = (out / "report.html").read_text()
    assert "Differences against vanilla" in page and "data:image/png;base64," in page
    assert (out / "plots" / "reliability.png").stat().st_size > 1000


@pytest.mark.slow
def test_an_evaluator_that_cannot_take_an_ensemble_is_skipped_for_it_and_a_dropped_evaluator_leaves_the_report(
    tmp_path, capsys
):
    """Issue 42: `ensembles: true` with spectra trained every run and then exited 2 with no report (the Ensemble has
    no stages); now the preflight finds it, the ensembles skip spectra and the report says so. Then, with spectra
    taken out of the YAML, its stored records are left out of the report, said at its top."""
    cfg = tmp_path / "b.yaml"
    cfg.write_text(
        TINY.replace(
            "evaluate: {limit: 100, eps: [2, 8], device: cpu}",
            "evaluate: {limit: 100, device: cpu, evaluators: [fgsm, spectra], fgsm: {eps: [2]}}",
        )
    )
    out = tmp_path / "bench"
    assert main(["bench", str(cfg), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert "spectra was not run on the deep ensembles: spectra: Ensemble has no numbered stages" in md
    assert (out / "results" / "vanilla-ensemble" / "fgsm.jsonl").exists()
    assert not (out / "results" / "vanilla-ensemble" / "spectra.jsonl").exists()
    assert (out / "results" / "vanilla-s0" / "spectra.jsonl").exists()
    cfg.write_text(
        TINY.replace(
            "evaluate: {limit: 100, eps: [2, 8], device: cpu}",
            "evaluate: {limit: 100, device: cpu, evaluators: [fgsm], fgsm: {eps: [2]}}",
        )
    )
    assert main(["bench", str(cfg), "--out", str(out), "--no-progress"]) == 0
    md = (out / "report.md").read_text()
    assert "Left out: the stored records of spectra (4 runs), an evaluator no longer in this bench" in md
    table = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert not any(r["evaluator"] == "spectra" for r in table)


def test_a_sweep_key_no_method_takes_names_a_plugins_arguments_not_an_unknown_method(tmp_path, monkeypatch):
    """Issue 42: with a plugin in the bench, a sweep-key typo said "unknown method 'input_noise'" (the plugin's own
    name looked up in the registry) instead of listing what each method takes."""
    from conftest import HELPERS

    monkeypatch.syspath_prepend(str(HELPERS))
    cfg = tmp_path / "b.yaml"
    cfg.write_text("methods: [vanilla, {name: 'noisy:InputNoise'}]\nsweep: {sgima: [0.1, 0.2]}\n")
    with pytest.raises(
        UserError,
        match=r"sweep 'sgima': expected a setting of one of the bench's methods .*"
        r"vanilla: loss; noisy:InputNoise: sigma, prob, loss",
    ):
        load_bench(cfg)


def test_run_one_refuses_an_unknown_stage_before_reading_anything(tmp_path):
    """The local launcher runs ``train`` and ``evaluate`` as two tasks; any other stage is a programming error,
    said before the config (here: not even there) is read."""
    from mmix_eval.bench import run_one

    with pytest.raises(ValueError, match="stage: expected one of all, train, evaluate, got 'eval'"):
        run_one(tmp_path / "missing.yaml", tmp_path / "out", "vanilla-s0", stage="eval")
