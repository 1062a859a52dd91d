"""The report layer from fixed, hand-written records: numbers, escaping, determinism, gates."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from builders import fake_results, specs
from conftest import ROOT

from mmix_eval.cli import main
from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import record, with_specs, write_records
from mmix_eval.report import build_report


def test_cells_differences_and_best_by_hand(tmp_path):
    res = build_report([fake_results(tmp_path / "res")], tmp_path / "rep", baseline="vanilla")
    md = (tmp_path / "rep" / "report.md").read_text()
    # rotation20: vanilla 50, 60 -> 55.00 ± 7.07; manifold 54, 62 -> 58.00 ± 5.66, the best mean but not bold: its
    # interval against the runner-up, [−9.71, +15.71] below, includes 0 (issue 42: no bold without a test)
    assert "| Rotation U(−20°, 20°): accuracy (%) | 55.00 ± 7.07 (n=2) | 58.00 ± 5.66 (n=2) |" in md
    # a method claim from paired differences 4 and 2 (no per-image data): mean 3, sd √2, se 1, t(0.975, 1) = 12.706 ->
    # [−9.71, +15.71]; p = 1 − 2 atan(3) / π = 0.205; four primary comparisons (clean, rotation and FGSM accuracy,
    # clean NLL; the ECE is descriptive), this the smallest p: Holm 4 × 0.2048 = 0.819
    assert (
        "| manifold_mixup − vanilla | Rotation U(−20°, 20°): accuracy (%) | primary | +3.00 [−9.71, +15.71], p = 0.205, "
        "Holm-adjusted p = 0.819 (2 seed pairs, no per-image data) |"
    ) in md
    claims = (tmp_path / "rep" / "claims.md").read_text()  # every comparison, exploratory ones included
    assert (
        "| manifold_mixup − vanilla | clean: ECE | clean (exploratory) | descriptive (a calibration error: no test) |"
        in claims
    )
    assert "clean (exploratory)" not in md  # report.md: the primary family only
    # ECE is descriptive: never bold, though vanilla and manifold tie at the lowest, 0.105
    assert md.count("0.1050 ± 0.0071 (n=2)") == 2 and "**0.1050" not in md
    table = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "table.csv").read_text())))
    rot = next(r for r in table if r["condition"] == "rotation20")
    assert float(rot["vanilla mean"]) == 55.0 and float(rot["manifold_mixup n"]) == 2
    assert res["table"].methods == ["vanilla", "manifold_mixup"]


def test_report_is_byte_identical_when_rebuilt(tmp_path):
    res = fake_results(tmp_path / "res")
    build_report([res], tmp_path / "a")
    build_report([res], tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {"report.html", "report.md", "table.csv", "records.csv", "records.jsonl"} <= {str(f) for f in files}
    assert any(str(f).startswith("plots/") for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_missing_values_show_as_na(tmp_path):
    build_report([fake_results(tmp_path / "res", drop={("manifold_mixup", "fgsm")})], tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| FGSM ε = 8/255: accuracy (%) | 35.00 ± 7.07 (n=2) | n/a |" in md  # (50 - 20, 60 - 20)
    assert "<td class='na'>n/a</td>" in (tmp_path / "rep" / "report.html").read_text()


def test_hostile_names_are_escaped_in_html_and_neutralised_in_csv(tmp_path):
    evil = '<script>alert(1)</script>" onmouseover="x'
    formula = '=HYPERLINK("http://evil","x")'
    res = fake_results(tmp_path / "res", methods={"vanilla": {0: 50.0}, evil: {0: 52.0}, formula: {0: 51.0}})
    build_report([res], tmp_path / "rep", title="<b>title</b>")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&#34; onmouseover=&#34;x" in page
    assert "<b>title</b>" not in page and "&lt;b&gt;title&lt;/b&gt;" in page
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    for name in ("table.csv", "records.csv"):
        text = (tmp_path / "rep" / name).read_text()
        cells = [c for row in csv.reader(text.splitlines()) for c in row]
        assert not any(c.startswith(("=", "+", "@")) for c in cells), name
        assert any(c.startswith("'=HYPERLINK") for c in cells), name


def test_emphasis_and_code_spans_in_names_are_neutralised_in_markdown(tmp_path):
    """Issue 32: `**` and backticks in a method name turned the rest of a Markdown row bold or into code."""
    res = fake_results(tmp_path / "res", methods={"vanilla": {0: 50.0}, "**bold** `code`": {0: 52.0}})
    build_report([res], tmp_path / "rep", baseline="vanilla")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "\\*\\*bold\\*\\* \\`code\\`" in md
    assert " **bold** `" not in md and "`code`" not in md  # never as written (the legend's own **bold** is ours)


def test_paper_numbers_appear_only_where_the_setting_matches(tmp_path):
    res = fake_results(tmp_path / "res", data="cifar100", model="preactresnet34")
    build_report([res], tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert (
        "<th>paper: vanilla</th>" in page
        and "<td class='paper'>52.96</td>" in page
        and "<td class='paper'>60.08</td>" in page
    )
    build_report([fake_results(tmp_path / "res2")], tmp_path / "rep2")
    assert "paper:" not in (tmp_path / "rep2" / "report.html").read_text()


def test_table7_sits_beside_the_fgsm_reading_that_was_run_and_says_which(tmp_path):
    """Pixel reading: beside eps8. The official code's FGSM: beside official-eps0.03 only, never 0.01."""
    res = fake_results(tmp_path / "res", data="cifar10", model="preactresnet18")
    build_report([res], tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<td class='paper'>36.32</td>" in page and "<td class='paper'>77.50</td>" in page
    assert "8/255 in pixels or the official code&#39;s FGSM at ε = 0.03 normalised" in page
    for run in ("vanilla-s0", "vanilla-s1", "manifold_mixup-s0", "manifold_mixup-s1"):  # the official reading only
        (res / run / "fgsm.jsonl").unlink()
        (res / run / "fgsm.outcomes.npz").unlink(missing_ok=True)
        (res / run / "fgsm.meta.json").unlink(missing_ok=True)
        method, seed = run.rsplit("-s", 1)
        settings = (
            {"alpha": 2.0, "eligible": [0, 1, 2], "loss": "bce_softmax"}
            if "mixup" in method
            else {"loss": "bce_softmax"}
        )
        f = {
            "run": run,
            "checkpoint": f"runs/{run}/model.safetensors",
            "model": "preactresnet18",
            "method": method,
            "method_settings": settings,
            "train_seed": int(seed),
            "data": "cifar10",
            "n": 100,
            "eval_seed": 0,
            "evaluator": "fgsm",
            "settings": {"attack": "fgsm_official"},
        }
        rows = [
            record(f, "clean", "acc", 70.0),
            record(f, "official-eps0.01", "acc", 50.0, label="official code's FGSM ε = 0.01", eps=0.01, strength=0.01),
            record(f, "official-eps0.03", "acc", 30.0, label="official code's FGSM ε = 0.03", eps=0.03, strength=0.03),
        ]
        write_records(specs(rows, "fgsm"), res / run / "fgsm-fgsm_official")
    build_report([res], tmp_path / "rep2")
    md_rows = [line for line in (tmp_path / "rep2" / "report.html").read_text().splitlines()]
    page = "\n".join(md_rows)
    assert page.count("<td class='paper'>36.32</td>") == 1 and page.count("<td class='paper'>77.50</td>") == 1
    at = page.index("official code&#39;s FGSM ε = 0.03", page.index("<h2>Comparison</h2>"))  # the detailed table
    assert page.index("<td class='paper'>36.32</td>", at) < page.index("</tr>", at)  # on that row


def test_the_fgsm_plot_draws_one_line_per_attack_along_its_own_strengths(tmp_path):
    """Pixel FGSM and the official code's FGSM in one folder: two lines per method, x in /255 for both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmix_eval.report.plots import line_or_bars

    res = fake_results(tmp_path / "res")
    for run in ("vanilla-s0", "vanilla-s1", "manifold_mixup-s0", "manifold_mixup-s1"):
        method, seed = run.rsplit("-s", 1)
        settings = (
            {"alpha": 2.0, "eligible": [0, 1, 2], "loss": "bce_softmax"}
            if "mixup" in method
            else {"loss": "bce_softmax"}
        )
        f = {
            "run": run,
            "checkpoint": f"runs/{run}/model.safetensors",
            "model": "smallnet",
            "method": method,
            "method_settings": settings,
            "train_seed": int(seed),
            "data": "digits",
            "n": 100,
            "eval_seed": 0,
            "evaluator": "fgsm",
            "settings": {"attack": "fgsm_official"},
        }
        # per-model values (each run's gradients and normalisation) must not split the runs into groups
        rows = [
            record(f, "clean", "acc", 70.0),
            record(
                f,
                "official-eps0.03",
                "acc",
                30.0,
                label="official 0.03",
                eps=0.03,
                strength=1.9,
                eps_255_per_channel=[1.9 + int(seed)],
                pixels_outside_01=10.0 + len(method) + int(seed),
            ),
            record(
                f,
                "official-eps0.01",
                "acc",
                50.0,
                label="official 0.01",
                eps=0.01,
                strength=0.6,
                eps_255_per_channel=[0.6 + int(seed)],
                pixels_outside_01=9.0 + len(method) + int(seed),
            ),
        ]
        write_records(specs(rows, "fgsm"), res / run / "fgsm-fgsm_official")
    table = build_report([res], tmp_path / "rep")["table"]  # one report, not "groups that cannot be compared"
    idx = [i for i, r in enumerate(table.rows) if r.section == "comparison" and r.evaluator == "fgsm"]
    fig, ax = plt.subplots()
    line_or_bars(ax, table, idx, plt.get_cmap("tab10").colors, "accuracy", "fgsm")
    labels = ax.get_legend_handles_labels()[1]
    assert sorted(labels) == [
        "manifold_mixup (fgsm)",
        "manifold_mixup (fgsm_official)",
        "vanilla (fgsm)",
        "vanilla (fgsm_official)",
    ]
    xs = {c.get_label(): [float(v) for v in c.lines[0].get_xdata()] for c in ax.containers}
    assert xs["vanilla (fgsm_official)"] == [0.6, 1.9] and xs["vanilla (fgsm)"] == [8.0]  # sorted by strength
    plt.close(fig)


def test_corrupt_result_files_are_listed_not_fatal(tmp_path):
    res = fake_results(tmp_path / "res")
    (res / "broken").mkdir()
    (res / "broken" / "fgsm.jsonl").write_text("{not json\n")
    (res / "broken" / "deformations.jsonl").write_text('{"run": "x"}\n')
    out = build_report([res], tmp_path / "rep")
    assert len(out["bad"]) == 2 and "broken/fgsm.jsonl" in (tmp_path / "rep" / "report.html").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.jsonl").write_text("garbage\n")
    with pytest.raises(UserError, match="found only unreadable ones"):
        build_report([empty], tmp_path / "rep3")


def test_check_gate_exit_codes(tmp_path, capsys):
    res = str(fake_results(tmp_path / "res"))
    out = str(tmp_path / "rep")
    assert main(["report", res, "--out", out, "--check", "manifold_mixup.rotation20 >= vanilla.rotation20"]) == 0
    assert "PASS: manifold_mixup.rotation20 >= vanilla.rotation20  (58.0000 >= 55.0000)" in capsys.readouterr().out
    assert main(["report", res, "--out", out, "--check", "manifold_mixup.clean:nll > 0.9"]) == 1
    assert "FAIL: manifold_mixup.clean:nll > 0.9" in capsys.readouterr().out
    # a check naming a column the results do not have is bad input (issue 27): exit 2, one line, nothing written
    # (a bench, whose checks were checked against its methods before training, still writes its report and
    # fails the check when that method's runs are missing: tests/test_report_paper.py)
    fresh = tmp_path / "rep2"
    assert main(["report", res, "--out", str(fresh), "--check", "cutmix.rotation20 >= 1"]) == 2
    assert (
        "--check 'cutmix.rotation20 >= 1': method 'cutmix' expected one column of the report (vanilla, "
        "manifold_mixup), got none"
    ) in capsys.readouterr().err
    assert not fresh.exists()
    assert main(["report", res, "--out", out, "--check", "vanilla.rotation99 >= 1"]) == 1
    assert "FAIL: vanilla.rotation99 >= 1  (no value for rotation99:acc" in capsys.readouterr().out
    # a syntax error is bad input: exit 2, nothing written
    assert main(["report", res, "--out", str(tmp_path / "rep3"), "--check", "vanilla.rotation20 ~ 1"]) == 2
    assert not (tmp_path / "rep3").exists()


@pytest.mark.slow
def test_report_package_imports_no_torch(tmp_path):
    res = fake_results(tmp_path / "res")
    code = (
        "import sys; from mmix_eval.report import build_report; "
        f"build_report([{str(res)!r}], {str(tmp_path / 'rep')!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "rep" / "records.jsonl").read_text().splitlines()[0])["run"]


def test_an_evaluator_the_report_never_heard_of_gets_its_own_section(tmp_path):
    """Records of an evaluator nobody can import here: the report still shows them, from their specs alone."""
    from mmix_eval.evaluate.base import MetricSpec

    metrics = {
        "score": MetricSpec("score", "lower", ".1f", headline=True),
        "width": MetricSpec("width (px)", None, ".0f"),
        "rank": MetricSpec("rank", "higher", ".3f"),
    }
    for method, score in (("vanilla", 3.0), ("manifold_mixup", 2.0)):
        base = {
            "run": f"{method}-s0",
            "model": "m",
            "method": method,
            "method_settings": {},
            "train_seed": 0,
            "data": "d",
            "n": 10,
            "evaluator": "mystery",
            "settings": {"knob": 3},
        }
        rows = [
            record(base, "c1", "score", score, label="Condition one"),
            record(base, "c1", "width", 7.0, label="Condition one"),
            record(base, "c1", "rank", 1 / score, label="Condition one"),
        ]
        write_records(
            with_specs(rows, SimpleNamespace(name="mystery", metrics=metrics)), tmp_path / "res" / f"{method}-s0" / "m"
        )
    build_report([tmp_path / "res"], tmp_path / "rep", baseline="vanilla")
    md = (tmp_path / "rep" / "report.md").read_text()
    # the headline metric in the comparison, lower is better: manifold_mixup's 2.0 is the best, not bold (one seed,
    # no per-image data: no interval)
    assert "| Condition one: score | 3.0 (n=1) | 2.0 (n=1) |" in md
    assert "### mystery: every metric per condition" in md
    assert "| Condition one: rank | 0.333 (n=1) | 0.500 (n=1) |" in md  # the best, untested: not bold
    assert "| Condition one: width (px) | 7 (n=1) | 7 (n=1) |" in md  # not a score: nothing marked
    assert "mystery: knob 3." in (tmp_path / "rep" / "report.html").read_text()  # its settings stated in the header


def test_gzipped_records_read_like_plain_ones_and_a_decompression_bomb_is_listed(tmp_path, monkeypatch):
    import gzip

    from mmix_eval.evaluate.records import read_jsonl
    from mmix_eval.report import load as load_module

    res = fake_results(tmp_path / "res")
    plain = build_report([res], tmp_path / "a")
    packed = tmp_path / "packed" / "records.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress((tmp_path / "a" / "records.jsonl").read_bytes(), mtime=0))
    again = build_report([packed], tmp_path / "b")
    assert (tmp_path / "b" / "table.csv").read_text() == (tmp_path / "a" / "table.csv").read_text()
    assert again["table"].methods == plain["table"].methods
    monkeypatch.setattr(load_module, "MAX_RESULT_FILE", 1000)  # far less than the records once decompressed
    bomb = tmp_path / "bomb" / "x.jsonl.gz"
    bomb.parent.mkdir()
    bomb.write_bytes(packed.read_bytes())
    with pytest.raises(UserError, match="found only unreadable ones"):
        build_report([bomb], tmp_path / "c")
    with pytest.raises(ValueError, match="more than 1000 bytes of records once decompressed"):
        read_jsonl(bomb, 1000)


def test_table3_sits_beside_tinyimagenet_clean_accuracy_only_at_its_own_size(tmp_path):
    """Issue 31: the paper's Tiny-ImageNet numbers (top-1 / top-5) where data, architecture and alpha are Table 3's."""
    from mmix_eval.report.paper import published

    res = fake_results(tmp_path / "res", data="tinyimagenet:/data/tiny-imagenet-200.zip", model="preactresnet18")
    build_report([res], tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<td class='paper'>55.52</td>" in page and "<td class='paper'>48.14</td>" in page  # vanilla; manifold α = 2
    resized = fake_results(tmp_path / "res2", data="tinyimagenet:/x?image_size=32&resize=crop", model="preactresnet18")
    build_report([resized], tmp_path / "rep2")
    assert "paper:" not in (tmp_path / "rep2" / "report.html").read_text()
    assert published("tinyimagenet", "preactresnet18", "manifold_mixup", 0.2, "clean", "acc_top5") == 73.59
    assert published("tinyimagenet", "preactresnet18", "input_mixup", 0.5, "clean", "acc") == 55.49
    assert published("tinyimagenet", "preactresnet34", "input_mixup", 0.5, "clean", "acc") is None
