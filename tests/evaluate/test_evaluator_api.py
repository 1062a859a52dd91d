"""Issue 12: evaluators as plugins (the docs' worked example from outside the package), typed options,
calibration under every shift, per-image outcomes and the paired statistics built on them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, make_data, tiny_config

from mmix_eval.cli import main
from mmix_eval.errors import UserError
from mmix_eval.evaluate import SHIFT_METRICS, Evaluator, MetricSpec, get_evaluator
from mmix_eval.evaluate.base import PROBABILITY_METRICS, OptionError
from mmix_eval.evaluate.evaluators.attacks.fgsm import evaluate_fgsm
from mmix_eval.evaluate.evaluators.deformations.evaluator import evaluate_deformations
from mmix_eval.evaluate.evaluators.deformations.geometry import load_grid, sample_matrices, warp
from mmix_eval.evaluate.outcomes import pack, read_outcomes, write_outcomes
from mmix_eval.evaluate.records import read_records
from mmix_eval.evaluate.target import target_from_module
from mmix_eval.report import build_report
from mmix_eval.report.stats import mcnemar_exact, paired_image_bootstrap
from mmix_eval.training import train


def docs_module(tmp_path: Path, monkeypatch) -> Path:
    """my_evals.py exactly as docs/evaluators.md writes it, importable from a folder outside the package."""
    text = (ROOT / "docs" / "evaluators.md").read_text(encoding="utf-8")
    code = re.search(r"```python title=my_evals.py\n(.*?)```", text, re.S).group(1)
    folder = tmp_path / "user_project"
    folder.mkdir()
    (folder / "my_evals.py").write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("my_evals", None)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny methods x one seed, trained on the same synthetic data."""
    root = tmp_path_factory.mktemp("runs")
    data = make_data(n_train=240, n_test=80, size=12, val=40)
    out = {}
    for method in ("vanilla", "input_mixup"):
        train(tiny_config(method, epochs=3), root / f"{method}-s0", progress=False, data=data)
        out[method] = root / f"{method}-s0" / "model.safetensors"
    return out, data


@pytest.fixture
def data_from_tiny(runs, monkeypatch):
    """load_target reads the checkpoint's data set; point 'synthetic' at the tiny one."""
    import mmix_eval.evaluate.target as tg

    _, data = runs
    monkeypatch.setattr(tg, "load_data_cached", lambda *a, **k: data)


def test_docs_plugin_evaluates_from_outside_the_package_and_gets_its_report_section(
    runs, data_from_tiny, tmp_path, monkeypatch, capsys
):
    docs_module(tmp_path, monkeypatch)
    ckpts, _ = runs
    res = tmp_path / "res"
    assert (
        main(
            [
                "evaluate",
                "--ckpt",
                str(ckpts["vanilla"]),
                str(ckpts["input_mixup"]),
                "--out",
                str(res),
                "--evaluators",
                "deformations,my_evals:Occlusion",
                "--set",
                "my_evals:Occlusion.patch=4",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = read_records(res / "vanilla-s0" / "occlusion.jsonl")
    occ = [r for r in rows if r["condition"] == "occlusion4"]
    assert {r["metric"] for r in occ} == {"acc", "rel_acc", *PROBABILITY_METRICS}
    assert {r["settings"]["patch"] for r in rows} == {4} and {r["schema"] for r in rows} == {2}
    acc = next(r for r in occ if r["metric"] == "acc")
    assert acc["direction"] == "higher" and acc["headline"] is True and acc["label"] == "Grey 4x4 square"
    # the per-image outcomes beside the records agree with the accuracy
    indices, outcomes = read_outcomes(res / "vanilla-s0" / "occlusion.outcomes.npz")
    assert list(indices) == list(range(80)) and 100.0 * outcomes["occlusion4"].mean() == pytest.approx(acc["value"])
    assert main(["report", str(res), "--out", str(tmp_path / "rep"), "--baseline", "vanilla"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### occlusion: every metric per condition" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| Grey 4x4 square: accuracy (%) |") and "(n=" in ln)
    means = {
        m: next(
            r["value"]
            for r in read_records(res / f"{m}-s0" / "occlusion.jsonl")
            if r["condition"] == "occlusion4" and r["metric"] == "acc"
        )
        for m in ("vanilla", "input_mixup")
    }
    best = max(means, key=means.get)
    cells = [c.strip() for c in line.strip("|").split("|")[1:3]]  # columns: vanilla, input_mixup
    # bold only for the best, and only where its per-image interval against the other excludes 0 (one seed each)
    assert all(m == best for c, m in zip(cells, ("vanilla", "input_mixup")) if c.startswith("**"))
    # ECE is a calibration error: descriptive, never bold
    line = next(ln for ln in md.splitlines() if ln.startswith("| Grey 4x4 square: ECE |") and "(n=" in ln)
    cells = [c.strip() for c in line.strip("|").split("|")[1:3]]
    assert not any(c.startswith("**") for c in cells)


def test_every_deformation_and_fgsm_condition_carries_acc_nll_ece_brier_and_they_are_right(runs):
    from mmix_eval.checkpoint import load_checkpoint

    ckpts, data = runs
    model, _ = load_checkpoint(ckpts["vanilla"])
    t = target_from_module(model.eval(), data.test.x, data.test.y)
    rows = evaluate_deformations(t, batch_size=32, progress=False) + evaluate_fgsm(
        t, eps=[2], batch_size=32, progress=False
    )
    for r in rows:
        assert r["direction"] == SHIFT_METRICS[r["metric"]].direction
    for cond in ["rotation20", "zoom_out140", "eps2"]:
        assert {r["metric"] for r in rows if r["condition"] == cond} == {"acc", "rel_acc", *PROBABILITY_METRICS}
    # NLL and Brier of one deformation, recomputed independently from the same warped images
    d = next(x for x in load_grid("table4")[1] if x.name == "rotation40")
    x = data.test.x.float() / 255
    with torch.no_grad():
        logits = model(warp(x, sample_matrices(d, len(x), 0), "nearest")).double()
    y = data.test.y
    got = {r["metric"]: r["value"] for r in rows if r["condition"] == "rotation40"}
    assert got["nll"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    p = logits.softmax(1)
    assert got["brier"] == pytest.approx(float(((p - F.one_hot(y, 4)) ** 2).sum(1).mean()), rel=1e-6)
    clean = next(r["value"] for r in rows if r["condition"] == "clean" and r["metric"] == "acc")
    assert got["rel_acc"] == pytest.approx(100 * got["acc"] / clean)


def test_options_are_typed_and_checked_once_with_the_parameter_named():
    ev = get_evaluator("fgsm")
    assert ev.options({"eps": "1,2,8"}).eps == [1.0, 2.0, 8.0]
    assert ev.options({"eps": [1, 2]}).eps == [1.0, 2.0]
    with pytest.raises(UserError, match=r"^eval: unknown option 'epz' \(did you mean 'eps'\?\)"):
        ev.options({"epz": [1]}, "eval")
    with pytest.raises(UserError, match=r"^pgd_steps: expected an integer, got 'many'"):
        ev.options({"pgd_steps": "many"})
    with pytest.raises(UserError, match=r"^interpolation: expected one of nearest, bilinear, got 'cubic'"):
        get_evaluator("deformations").options({"interpolation": "cubic"})


def test_options_cannot_change_after_they_are_made_on_every_built_in():
    """Every built-in's options are frozen: resolve returns a new value, validate cannot assign (issue 47)."""
    import dataclasses

    from mmix_eval.evaluate.base import BUILTIN, EvalOptions

    assert len(BUILTIN) == 8
    for name in BUILTIN:
        ev = get_evaluator(name)
        opts = ev.options(
            {"ood": ["noise:uniform"]}
            if name == "ood"
            else {"sets": ["cifar10.1"]}
            if name == "shift"
            else {"source": "generated"}
            if name == "corruptions"
            else {}
        )
        assert ev.Options.__dataclass_params__.frozen, name
        field = dataclasses.fields(opts)[0].name if dataclasses.fields(opts) else None
        if field is not None:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(opts, field, getattr(opts, field))
    ev = get_evaluator("corruptions")
    raw = ev.Options()
    assert ev.options({"corruptions": "benchmark", "severities": [3, 1, 3]}) != raw  # resolve: a new value ...
    assert raw.corruptions == ["benchmark"] and raw.severities == [1, 2, 3, 4, 5]  # ... the given one unchanged
    common = EvalOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        common.seed = 3
    with pytest.raises(OptionError, match="^seed: expected an integer from 0"):  # checked when made, copies too
        dataclasses.replace(common, seed=-1)


def test_a_plugin_whose_validate_changes_its_options_is_refused_naming_it():
    from dataclasses import dataclass

    @dataclass
    class Opts:  # a plugin's options need not be frozen ...
        patch: int = 8

    class Sloppy(Evaluator):
        name = "sloppy"
        Options = Opts

        def validate(self, options):  # ... but validate must not change them
            options.patch = min(options.patch, 4)

    with pytest.raises(
        UserError, match=r"^evaluator 'sloppy': validate\(\) changed option\(s\) patch; expected it to "
    ):
        Sloppy().options({"patch": 6})
    assert Sloppy().options({"patch": 3}).patch == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--evaluators", "deformation"], "unknown evaluator 'deformation' (did you mean 'deformations'?)"),
        (["--evaluators", "test_evaluator_api:NotAnEvaluator"], "expected a mmix_eval.evaluate.Evaluator subclass"),
        (["--set", "fgsm.epz=1"], "unknown option 'epz' (did you mean 'eps'?)"),
        (["--set", "fgsm.pgd_steps=x"], "expected an integer, got 'x'"),
        (["--interpolation", "cubic"], "--interpolation: expected one of nearest, bilinear, got 'cubic'"),
        (["--bins", "0"], "--bins: expected an integer from 1 to 10,000, got 0"),
        (["--set", "nodot=1"], "--set: expected EVALUATOR.OPTION=VALUE"),
    ],
)
def test_bad_evaluator_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path, capsys, argv, message):
    ckpts, _ = runs
    code = main(["evaluate", "--ckpt", str(ckpts["vanilla"]), "--out", str(tmp_path / "r"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


class NotAnEvaluator:
    pass


class NoSpec(Evaluator):
    name = "nospec"
    metrics = {"acc": MetricSpec("accuracy (%)", "higher", ".2f")}

    def run(self, target, options, common):
        from mmix_eval.evaluate import record

        return [record({**target.base, "evaluator": self.name}, "c", "mystery", 1.0)]


class Raises(Evaluator):
    name = "raises"

    def run(self, target, options, common):
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "plugin, message",
    [
        ("NoSpec", "evaluator 'nospec': emitted metric 'mystery' without a MetricSpec; declared: acc"),
        ("Raises", "evaluator 'raises' failed on run 'vanilla-s0': RuntimeError: boom"),
    ],
)
def test_a_failing_plugin_writes_nothing_of_its_own_and_keeps_the_others(
    runs, data_from_tiny, tmp_path, capsys, plugin, message
):
    ckpts, _ = runs
    code = main(
        [
            "evaluate",
            "--ckpt",
            str(ckpts["vanilla"]),
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
            "--device",
            "cpu",
            "--evaluators",
            f"calibration,test_evaluator_api:{plugin}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err
    files = sorted(p.name for p in (tmp_path / "r" / "vanilla-s0").iterdir())
    log = ["raises.error.log"] if plugin == "Raises" else []  # the traceback, for the plugin's author (issue 32)
    # the calibration evaluator stores its per-image outcomes and bootstrap replicates (issue 26)
    assert files == ["calibration.csv", "calibration.jsonl", "calibration.meta.json", "calibration.outcomes.npz", *log]
    if log:
        tb = (tmp_path / "r" / "vanilla-s0" / "raises.error.log").read_text()
        assert 'raise RuntimeError("boom")' in tb and "test_evaluator_api.py" in tb
        assert f"(traceback: {tmp_path / 'r' / 'vanilla-s0' / 'raises.error.log'})" in err


def test_ls_evaluators_and_generated_help(capsys):
    assert main(["ls", "evaluators"]) == 0
    out = capsys.readouterr().out
    assert "deformations  accuracy and calibration under the paper's rotations" in out
    assert "    eps = [1.0, 2.0, 4.0, 8.0]  epsilons: /255 pixel units for Linf (1,2,4,8 or 8/255" in out
    with pytest.raises(SystemExit):
        main(["fgsm", "--help"])
    out = capsys.readouterr().out
    assert "--pgd-steps PGD_STEPS" in out and "(default 7)" in out and "--grid GRID" not in out


def test_generated_help_and_ls_evaluators_import_no_torch():
    import subprocess

    code = (
        "import sys; from mmix_eval.cli import build_parser, main; build_parser(); main(['ls', 'evaluators']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "fgsm  accuracy and calibration under white-box FGSM" in r.stdout


def test_bench_yaml_takes_one_section_per_evaluator_and_refuses_unknown_keys(tmp_path, monkeypatch):
    from mmix_eval.bench import load_bench

    docs_module(tmp_path, monkeypatch)
    base = "methods: [vanilla]\nseeds: [0]\ntrain: {epochs: 1}\n"
    path = tmp_path / "b.yaml"
    path.write_text(
        base + "evaluate:\n  limit: 50\n  fgsm: {eps: [2, 8], attack: pgd, pgd_steps: 3}\n"
        '  "my_evals:Occlusion": {patch: 6}\n'
    )
    bench = load_bench(path)
    plan = {ev.name: opts for ev, opts in bench.plan}
    assert list(plan) == ["deformations", "fgsm", "calibration", "occlusion"]
    assert plan["fgsm"].eps == [2.0, 8.0] and plan["fgsm"].pgd_steps == 3 and plan["occlusion"].patch == 6
    assert bench.options.limit == 50
    path.write_text(base + "evaluate:\n  grid: table9\n  eps: [1]\n")  # the first version's flat keys still read
    plan = {ev.name: opts for ev, opts in load_bench(path).plan}
    assert plan["deformations"].grid == "table9" and plan["fgsm"].eps == [1.0]
    for text, message in [
        ("  fgsm: {epz: [1]}\n", "unknown option 'epz'"),
        ("  fgsm: {pgd_steps: many}\n", "pgd_steps: expected an integer, got 'many'"),
        ("  limt: 5\n", "unknown key 'limt' (did you mean 'limit'?)"),
        ("  evaluators: [deformations, nope]\n", "unknown evaluator 'nope'"),
        ("  evaluators: [calibration]\n  fgsm: {eps: [2]}\n", "options given for evaluator 'fgsm', which is not run"),
    ]:
        path.write_text(base + "evaluate:\n" + text)
        with pytest.raises(UserError, match=re.escape(message)):
            load_bench(path)


def test_outcomes_are_compact_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    correct = rng.random(10_000) < 0.7
    indices = np.sort(rng.permutation(50_000)[:10_000])
    blob = pack({"clean": correct}, indices)
    write_outcomes(tmp_path / "o.npz", {"clean": correct, "eps8": ~correct}, indices)
    got_idx, got = read_outcomes(tmp_path / "o.npz")
    assert (
        np.array_equal(got_idx, indices)
        and np.array_equal(got["clean"], correct)
        and np.array_equal(got["eps8"], ~correct)
    )
    # ≤ 10 KB per condition per 10,000 images: 1,250 packed bytes per condition (plus the indices, once)
    one, two = len(blob), (tmp_path / "o.npz").stat().st_size
    assert two - one <= 10_000 and np.packbits(correct).nbytes == 1250


def test_mcnemar_exact_by_hand_and_against_scipy():
    # b = 1, c = 6: p = 2 · P(X <= 1), X ~ Bin(7, 1/2) = 2 · (1 + 7) / 128 = 0.125
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    from scipy.stats import binomtest

    assert mcnemar_exact(13, 30) == pytest.approx(binomtest(13, 43, 0.5).pvalue, rel=1e-12)


def test_paired_bootstrap_matches_plain_image_resampling():
    rng = np.random.default_rng(1)
    n = 2000
    base = rng.random((1, n)) < 0.6
    method = base.copy()
    flip = rng.random((1, n)) < 0.1
    method[flip] = ~method[flip]
    method[:, :60] = True  # a real difference
    diff, lo, hi = paired_image_bootstrap(method, base)
    d = method[0].astype(float) - base[0].astype(float)
    assert diff == pytest.approx(100 * d.mean())
    # an independent, plain bootstrap: resample image indices with replacement
    idx = np.random.default_rng(2).integers(0, n, (4000, n))
    plain = 100 * d[idx].mean(1)
    plo, phi = np.percentile(plain, [2.5, 97.5])
    assert lo == pytest.approx(plo, abs=0.15) and hi == pytest.approx(phi, abs=0.15)
    # and the normal approximation of the same interval
    half = 1.96 * 100 * d.std(ddof=1) / np.sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.08)


def test_one_seed_bench_gets_per_image_intervals_for_accuracy_and_probability_scores(runs, data_from_tiny, tmp_path):
    from mmix_eval.evaluate.base import EvalOptions
    from mmix_eval.evaluate.boot import BOOT_STATS
    from mmix_eval.evaluate.outcomes import read_outcome_file
    from mmix_eval.evaluate.runner import EvalJob, make_plan, run_evaluation

    ckpts, _ = runs
    run_evaluation(
        [ckpts["vanilla"], ckpts["input_mixup"]],
        make_plan(["fgsm"], {"fgsm": {"eps": [2]}}),
        tmp_path / "res",
        EvalOptions(device="cpu", progress=False),
        EvalJob(echo=lambda *_: None),
    )
    result = build_report([tmp_path / "res"], tmp_path / "rep", baseline="vanilla")
    md = (tmp_path / "rep" / "report.md").read_text()
    # one row per method x condition, the method claim and the network claim side by side
    assert (
        "| comparison | condition | family | method claim (training runs and images) | network claim (these networks, "
        "over images) |"
    ) in md
    line = next(
        ln for ln in md.splitlines() if ln.startswith("| input_mixup − vanilla | FGSM ε = 2/255: accuracy (%) |")
    )
    # no method claim from one seed; the images give a network claim
    assert "n/a (1 seed pair; a method claim needs 2 or more)" in line and "(80 images × 1 seed pair)" in line
    # with one seed pair the sign-flip test is McNemar's exact test, computed here by hand from the two outcome files
    _, a = read_outcomes(tmp_path / "res" / "input_mixup-s0" / "fgsm.outcomes.npz")
    _, b = read_outcomes(tmp_path / "res" / "vanilla-s0" / "fgsm.outcomes.npz")
    p = mcnemar_exact(int((a["eps2"] & ~b["eps2"]).sum()), int((~a["eps2"] & b["eps2"]).sum()))
    assert f"sign-flip test p = {p:.3g}" in line
    # the report keeps the outcomes, so a rebuild from its own records has the same intervals
    build_report([tmp_path / "rep" / "records.jsonl"], tmp_path / "rep2", baseline="vanilla")
    assert (tmp_path / "rep2" / "report.md").read_text() == md
    assert any(c.network is not None for c in result["comparisons"])
    # Issue 26, item 5: the NLL / Brier / ECE differences, raw and calibrated, get a paired interval over test
    # images too, equal to one computed by hand from the two outcome files (the difference of the records' values
    # ± 1.96 × the standard deviation of the replicates' differences), kept by the rebuild above.
    details = {
        m: read_outcome_file(tmp_path / "res" / f"{m}-s0" / "fgsm.outcomes.npz")[3] for m in ("vanilla", "input_mixup")
    }
    values = {
        (r["run"], r["condition"], r["calibrator"], r["metric"]): r["value"]
        for m in ("vanilla", "input_mixup")
        for r in read_records(tmp_path / "res" / f"{m}-s0" / "fgsm.jsonl")
    }
    checked = 0
    for metric, name in (("nll", "NLL"), ("brier", "Brier"), ("ece", "ECE")):
        for calibrator, suffix in (("none", ""), ("temperature", ", temperature scaled")):
            k = BOOT_STATS.index(metric)
            diff = (
                values["input_mixup-s0", "clean", calibrator, metric]
                - values["vanilla-s0", "clean", calibrator, metric]
            )
            reps = (
                details["input_mixup"]["clean", calibrator][0][:, k].astype(np.float64)
                - details["vanilla"]["clean", calibrator][0][:, k]
            )
            se = reps.std(ddof=1)
            lo, hi = diff - 1.959963984540054 * se, diff + 1.959963984540054 * se
            claims = (tmp_path / "rep" / "claims.md").read_text()  # every comparison (report.md: the primary ones)
            line = next(
                ln
                for ln in claims.splitlines()
                if ln.startswith(f"| input_mixup − vanilla | Clean test images: {name}{suffix} |")
            )
            shown = f"[{lo:+.4f}, {hi:+.4f}]".replace("-", "−")
            if metric == "ece":  # a calibration error: the same interval, descriptive, no test
                assert f"{shown} (80 images × 1 seed pair; descriptive)" in line, line
            else:
                assert f"{shown}, bootstrap z-test" in line and "(80 images × 1 seed pair)" in line, line
            checked += 1
    assert checked == 6
    # the per-condition reliability figure (raw and calibrated, with histograms) is drawn from the stored bins
    assert (tmp_path / "rep" / "plots" / "fgsm-reliability.png").is_file()
    assert "alt='fgsm-reliability" in (tmp_path / "rep" / "report.html").read_text()  # embedded in the report
    assert (tmp_path / "rep2" / "plots" / "fgsm-reliability.png").read_bytes() == (
        tmp_path / "rep" / "plots" / "fgsm-reliability.png"
    ).read_bytes()


def test_version_1_records_still_rebuild_with_the_same_numbers(tmp_path):
    """The first committed report's records (schema 1; tests/fixtures keeps them, without the reliability
    bins) rebuild, and every number of that report's table.csv is unchanged."""
    import csv
    import io

    fixtures = ROOT / "tests" / "fixtures"
    rows = [json.loads(line) for line in (fixtures / "records-v1.jsonl").read_text().splitlines()]
    assert rows[0].get("schema") is None and "higher_is_better" in rows[0]  # really the first version's format
    build_report([fixtures / "records-v1.jsonl"], tmp_path / "rep", baseline="vanilla")
    old = {
        (r["condition"], r["metric"]): r
        for r in csv.DictReader(io.StringIO((fixtures / "table-v1.csv").read_text(encoding="utf-8")))
    }
    new = {}
    for r in csv.DictReader(io.StringIO((tmp_path / "rep" / "table.csv").read_text(encoding="utf-8"))):
        new.setdefault((r["condition"], r["metric"]), r)
    assert old and set(old) <= set(new)
    for key, r in old.items():
        for col, v in r.items():
            if col.endswith((" mean", " std", " n")):
                assert new[key][col] == v, (key, col)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "rendered by mmix-eval 0.1" in md  # and the report says which rendering made those rows


def test_precision_follows_the_checkpoint_on_a_gpu_only_and_is_recorded(runs):
    from mmix_eval.checkpoint import load_checkpoint
    from mmix_eval.evaluate.target import Target

    ckpts, data = runs
    model, _ = load_checkpoint(ckpts["vanilla"])
    fp32 = evaluate_deformations(target_from_module(model.eval(), data.test.x, data.test.y), progress=False)
    assert {r["settings"]["precision"] for r in fp32} == {"fp32"}  # a CPU evaluates in fp32 whatever the training
    from mmix_eval.evaluate.images import Images

    bf16 = Target(model, Images(data.test.x, data.test.y), precision="bf16", base={"run": "b"})
    rows = evaluate_deformations(bf16, progress=False)  # the autocast path (bf16 on this CPU, slow but small)
    assert {r["settings"]["precision"] for r in rows} == {"bf16"}
    accs = lambda rs: [r["value"] for r in rs if r["metric"] == "acc"]
    assert max(abs(a - b) for a, b in zip(accs(rows), accs(fp32))) <= 5.0  # bf16 rounding flips a few images at most


def test_ckpt_takes_run_folders_and_quoted_globs(runs, data_from_tiny, tmp_path, capsys):
    ckpts, _ = runs
    folder = ckpts["vanilla"].parent
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(folder),
                str(folder.parent / "input_mixup-*" / "model.safetensors"),
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["input_mixup-s0", "vanilla-s0"]
    assert main(["calibration", "--ckpt", str(folder.parent / "nothing-*"), "--out", str(tmp_path / "x")]) == 2
    assert "--ckpt: expected checkpoint files, got a pattern that matches nothing" in capsys.readouterr().err


def test_evaluate_forwards_each_test_image_once_clean_and_fgsm_takes_it_from_its_gradient(
    runs, data_from_tiny, tmp_path, monkeypatch
):
    """The floor of issue 20, counted in images through the model: one pass whose forwards are both the clean
    logits and FGSM's input gradient, one per deformation and per ε, the validation split once, and the trap
    checks' probes; no separate clean pass. The shared clean logits are bitwise a plain inference loop's."""
    import mmix_eval.evaluate.target as tg
    from mmix_eval.evaluate.base import EvalOptions
    from mmix_eval.evaluate.runner import EvalJob, make_plan, run_evaluation

    ckpts, data = runs
    seen = {"grad": 0, "no_grad": 0}
    loaded = []
    real = tg.load_target

    def counting(*a, **k):
        t = real(*a, **k)
        t.model.register_forward_pre_hook(
            lambda m, args: seen.__setitem__(
                "grad" if torch.is_grad_enabled() else "no_grad",
                seen["grad" if torch.is_grad_enabled() else "no_grad"] + args[0].shape[0],
            )
        )
        loaded.append(t)
        return t

    monkeypatch.setattr(tg, "load_target", counting)
    plan = make_plan(["deformations", "fgsm", "calibration"], {"fgsm": {"eps": [1, 2, 4, 8]}})
    rows = run_evaluation(
        [ckpts["vanilla"]],
        plan,
        tmp_path / "out",
        EvalOptions(device="cpu", batch_size=32, progress=False),
        EvalJob(echo=lambda *a: None),
    )
    n, n_val, probe = len(data.test), len(data.val), min(64, len(data.test))
    assert seen["grad"] == n + probe  # FGSM's gradient pass over the test set, and the zero-gradient probe
    assert seen["no_grad"] == 8 * n + 4 * n + n_val + 2 * probe  # deformations, ε, validation, output checks
    (t,) = loaded
    model = t.model.eval()
    with torch.inference_mode():
        plain = torch.cat([model(t.test.batch(i, i + 32, "cpu")[0]) for i in range(0, n, 32)])
    assert torch.equal(t.clean, plain)
    clean = {(r["evaluator"], r["metric"]): r["value"] for r in rows if r["condition"] in ("clean", "test")}
    expected = 100.0 * float((plain.argmax(1) == t.test.y).double().mean())
    assert clean[("deformations", "acc")] == clean[("fgsm", "acc")] == clean[("calibration", "acc")] == expected
    assert {p.name for p in (tmp_path / "out" / "vanilla-s0").glob("*.jsonl")} == {
        "deformations.jsonl",
        "fgsm.jsonl",
        "calibration.jsonl",
    }


def test_a_plugin_evaluators_option_error_names_the_evaluator(tmp_path, monkeypatch, capsys):
    """Issue 42: 'patch: expected an integer >= 1, got 0' named no evaluator; the plugin's own option now says whose."""
    docs_module(tmp_path, monkeypatch)
    with pytest.raises(
        OptionError, match=r"^patch: expected an integer >= 1, got 0 \(an option of the occlusion evaluator\)$"
    ):
        get_evaluator("my_evals:Occlusion").options({"patch": 0})
    with pytest.raises(
        OptionError, match=r"patch: expected an integer, got 'x' \(an option of the occlusion evaluator\)"
    ):
        get_evaluator("my_evals:Occlusion").options({"patch": "x"})
