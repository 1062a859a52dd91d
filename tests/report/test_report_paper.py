"""Issue 27: a report to paste into a paper. The compact main table (bold only where the interval against
the runner-up excludes 0, daggers after Holm), what holds in words, LaTeX that compiles, the cost table,
ten columns, the tidy DataFrame the table is built from, a section from one file, an unambiguous baseline."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import fake_results, specs
from conftest import ROOT, raises_as_shown

from mmix_eval.errors import UserError
from mmix_eval.evaluate.records import record, write_records
from mmix_eval.report import build_report
from mmix_eval.report.stats import holm

HOSTILE = r"a\b$c&d%e#f_g{h}i~j^k"


def ten_methods(root: Path, gap: float = 3.0) -> Path:
    """Ten columns (a three-value sweep included) x three seeds, accuracies spaced ``gap`` points apart, so the
    best is clear and every difference against vanilla is large relative to the seed noise."""
    names = ["vanilla", "input_mixup", "manifold_mixup", "cutmix", "label_smoothing", "regmixup", HOSTILE]
    columns = [(n, None) for n in names] + [("hidden_noise", p) for p in (0.1, 0.5, 0.9)]
    for k, (method, prob) in enumerate(columns):
        for seed in (0, 1, 2):
            run = f"c{k}-s{seed}"
            base = {
                "run": run,
                "checkpoint": f"nowhere/{run}/model.safetensors",
                "model": "smallnet",
                "method": method,
                "method_settings": {"prob": prob} if prob is not None else {},
                "sweep": {"prob": prob} if prob else None,
                "train_seed": seed,
                "data": "digits",
                "n": 100,
                "eval_seed": 0,
                "evaluator": "deformations",
                "settings": {"grid": "table4"},
            }
            acc = 50.0 + gap * k + 0.3 * seed * (1 + 0.1 * k)  # seed noise that differs by method
            rows = [
                record(base, "clean", "acc", acc + 10, label="Clean"),
                record(base, "clean", "ece", 0.1 - 0.005 * k + 0.001 * seed),
                record(base, "rotation20", "acc", acc, label="Rotation U(−20°, 20°)"),
            ]
            write_records(specs(rows, "deformations"), root / run / "deformations")
    return root


def test_holm_by_hand():
    # p sorted: 0.01, 0.02, 0.04, 0.3 -> 4·0.01 = 0.04, 3·0.02 = 0.06, 2·0.04 = 0.08, 1·0.3 = 0.3 (monotone)
    assert holm([0.04, 0.01, 0.3, 0.02]) == pytest.approx([0.08, 0.04, 0.3, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1 and never decreasing
    assert holm([]) == []


def test_main_table_marks_best_only_where_the_interval_excludes_0(tmp_path):
    # two seeds: vanilla 50, 60 and manifold 54, 62 -> paired differences 4, 2: t interval 3 ± 12.7 includes 0
    res = build_report([fake_results(tmp_path / "res")], tmp_path / "rep", baseline="vanilla")
    main = res["view"]["main"]
    rot = next(r for r in main["rows"] if r["label"].startswith("Rotation"))
    assert [c["text"] for c in rot["cells"]] == ["55.00 ± 7.07", "58.00 ± 5.66"]  # n once, in the caption
    assert not any(c["best"] or c["dagger"] for c in rot["cells"])  # the best mean, but no interval excludes 0
    assert "n = 2 per cell" in main["caption"] and "Holm" in main["caption"]
    summary = (tmp_path / "rep" / "claims.md").read_text()  # the sentences, condition by condition
    assert (
        "manifold_mixup − vanilla, Rotation U(−20°, 20°): +3.00 points. Method claim (primary; the training run as the "
        "unit): +3.00 [−9.71, +15.71], p = 0.205, Holm-adjusted p = 0.819 (2 seed pairs, no per-image data): does not "
        "hold."
    ) in summary


def test_ten_columns_one_page_summary_latex_and_daggers(tmp_path):
    res = build_report(
        [ten_methods(tmp_path / "res")],
        tmp_path / "rep",
        baseline="vanilla",
        order=[
            "vanilla",
            "input_mixup",
            "manifold_mixup",
            "cutmix",
            "label_smoothing",
            "regmixup",
            HOSTILE,
            "hidden_noise",
        ],
    )
    view = res["view"]
    assert len(view["methods"]) == 10 and view["methods"][-3:] == [
        "hidden_noise prob=0.1",
        "hidden_noise prob=0.5",
        "hidden_noise prob=0.9",
    ]
    rot = next(r for r in view["main"]["rows"] if r["label"].startswith("Rotation"))
    # every method is about 3k points above vanilla over 3 seeds: paired t-tests hold after Holm
    assert [c["dagger"] for c in rot["cells"]] == [False] + [True] * 9
    assert [c["best"] for c in rot["cells"]] == [False] * 9 + [True]  # 27 points vs 24, the interval excludes 0
    ece = next(r for r in view["main"]["rows"] if r["label"].endswith("ECE"))
    # the last column has the lowest ECE by far, but a calibration error is descriptive: never bold, never marked
    assert ece["direction"] == "lower" and not any(c["best"] or c["mark"] for c in ece["cells"])
    # what holds, in words, at the top of the report
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.index("### What holds against vanilla") < md.index("### Main table") < md.index("### Comparison")
    assert (
        "- hidden_noise prob=0.9 (method claims, 3 seed pairs): better than vanilla under 2 of 2: Clean +27.27; "
        "Rotation U(−20°, 20°) +27.27; worse under none"
    ) in md
    # one row per method x condition in the differences: readable at ten columns
    assert "| hidden_noise prob=0.9 − vanilla | Rotation U(−20°, 20°): accuracy (%) |" in md
    # LaTeX: booktabs, ± and bold and daggers, every hostile character escaped
    tex = (tmp_path / "rep" / "report.tex").read_text()
    assert tex.startswith("\\documentclass{article}") and tex.rstrip().endswith("\\end{document}")
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") >= 2 and "\\toprule" in tex
    assert "$\\pm$" in tex and "\\textbf{" in tex and "$^\\dagger$" in tex
    assert r"a\textbackslash{}b\$c\&d\%e\#f\_g\{h\}i\textasciitilde{}j\textasciicircum{}k" in tex
    assert HOSTILE not in tex
    if shutil.which("pdflatex"):  # compile it for real where the machine has LaTeX
        r = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
            cwd=tmp_path / "rep",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout[-2000:]
        assert (tmp_path / "rep" / "report.pdf").stat().st_size > 10_000
    # plots also as PDF
    assert {p.suffix for p in (tmp_path / "rep" / "plots").iterdir()} == {".png"}  # PDFs on request only
    build_report([tmp_path / "res"], tmp_path / "rep2", baseline="vanilla", pdf_plots=True)
    assert {p.suffix for p in (tmp_path / "rep2" / "plots").iterdir()} == {".png", ".pdf"}


def test_results_load_is_the_frame_the_table_is_built_from(tmp_path):
    from mmix_eval import results

    res_dir = ten_methods(tmp_path / "res")
    build_report([res_dir], tmp_path / "rep", baseline="vanilla")
    df = results.load(res_dir)
    assert list(df.columns) == results.COLUMNS + results.COST  # the documented columns, in that order
    assert len(df[(df.condition == "clean") & (df.metric == "acc")]) == 30  # one clean per checkpoint
    means = df.groupby(["column", "condition", "metric"])["value"].mean()
    table = list(csv.DictReader((tmp_path / "rep" / "table.csv").open(encoding="utf-8")))
    compared = 0
    for row in table:
        for col in df["column"].unique():
            got = row.get(f"{col} mean")
            if got:
                assert float(got) == pytest.approx(means[col, row["condition"], row["metric"]], rel=1e-12, abs=1e-12)
                compared += 1
    assert compared >= 30
    # the report's own records read back to the same frame, and the bins are a frame of their own
    again = results.load(tmp_path / "rep" / "records.jsonl")
    assert again["value"].tolist() == df["value"].tolist()
    assert results.load_bins(res_dir).empty


def test_a_section_from_one_file_of_the_users_own(tmp_path, monkeypatch):
    (tmp_path / "my_sections.py").write_text(
        "from mmix_eval.report.sections import ReportSection\n"
        "class Loud(ReportSection):\n"
        "    def notes(self, ctx):\n"
        "        return [f'{self.evaluator}: {len(ctx.table.methods)} columns seen by my section']\n"
        "NOT_A_SECTION = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    res = fake_results(tmp_path / "res")
    build_report([res], tmp_path / "rep", baseline="vanilla", sections={"deformations": "my_sections:Loud"})
    assert "deformations: 2 columns seen by my section" in (tmp_path / "rep" / "report.md").read_text()
    with pytest.raises(UserError, match="expected a ReportSection subclass"):
        build_report([res], tmp_path / "rep2", sections={"deformations": "my_sections:NOT_A_SECTION"})
    # the same from the command line, and a malformed --section is one line, exit 2
    from mmix_eval.cli import main

    assert (
        main(["report", str(res), "--out", str(tmp_path / "rep3"), "--section", "deformations=my_sections:Loud"]) == 0
    )
    assert "columns seen by my section" in (tmp_path / "rep3" / "report.md").read_text()
    assert main(["report", str(res), "--out", str(tmp_path / "rep4"), "--section", "my_sections.Loud"]) == 2
    assert not (tmp_path / "rep4").exists()


def test_a_swept_baseline_must_name_its_value(tmp_path):
    res = ten_methods(tmp_path / "res")
    with pytest.raises(
        UserError, match=r"baseline 'hidden_noise': expected one column, got 3 .*\"hidden_noise prob=0.5\""
    ):
        build_report([res], tmp_path / "rep", baseline="hidden_noise")
    assert not (tmp_path / "rep").exists()  # nothing half-written
    out = build_report([res], tmp_path / "rep", baseline="hidden_noise prob=0.5")
    assert out["view"]["baseline"] == "hidden_noise prob=0.5"
    with pytest.raises(UserError, match="baseline 'nope': expected one of the columns"):
        build_report([res], tmp_path / "rep3", baseline="nope")


def test_the_temperature_label_holds_no_runs_value(tmp_path):
    """Records written before the fix carried one run's T in a label every run shares; they read without it."""
    from mmix_eval.evaluate.records import TEMPERATURE_LABEL, upgrade

    r = record(
        {"run": "a", "method": "vanilla", "evaluator": "calibration"},
        "temperature_scaled",
        "nll",
        1.0,
        "Test images, temperature scaled (T = 0.502)",
    )
    assert upgrade(r)["label"] == TEMPERATURE_LABEL and "0.502" not in TEMPERATURE_LABEL


def test_a_check_naming_no_column_is_refused_before_anything_is_written(tmp_path):
    res = fake_results(tmp_path / "res")
    with raises_as_shown(
        UserError,
        match=r"--check 'nope.rotation20 >= 1': method 'nope' expected one column of the "
        r"report \(vanilla, manifold_mixup\), got none",
    ):
        build_report([res], tmp_path / "rep", baseline="vanilla", checks=["nope.rotation20 >= 1"])
    assert not (tmp_path / "rep").exists()


def test_a_bench_missing_a_methods_runs_still_writes_its_report_and_fails_the_check(tmp_path):
    """The bench checked its checks against its methods before training; when all runs of one failed, the
    report of the others is written and that method's check fails (strict_checks=False, as bench passes)."""
    res = fake_results(tmp_path / "res")
    out = build_report(
        [res], tmp_path / "rep", baseline="vanilla", checks=["cutmix.rotation20 >= 1"], strict_checks=False
    )
    assert out["checks"] == [
        ("cutmix.rotation20 >= 1", False, "method 'cutmix' expected one of vanilla, manifold_mixup")
    ]
    assert (tmp_path / "rep" / "report.html").exists()


def test_an_unwritable_output_is_one_line(tmp_path):
    res = fake_results(tmp_path / "res")
    (tmp_path / "file").write_text("x")
    with raises_as_shown(UserError, match="--out .*expected a folder the report can be written to"):
        build_report([res], tmp_path / "file" / "rep", baseline="vanilla")


def test_outcomes_give_per_image_claims(tmp_path):
    """With per-image outcomes the method claim counts the test images as a sample too, and a network claim (the
    sign-flip test, an image as the unit) stands beside it, labelled as about these networks."""
    from mmix_eval.evaluate.outcomes import write_outcomes

    res = fake_results(tmp_path / "res")
    rng = np.random.default_rng(0)
    for run, p in (("vanilla-s0", 0.5), ("vanilla-s1", 0.5), ("manifold_mixup-s0", 0.9), ("manifold_mixup-s1", 0.9)):
        per = {"clean": rng.random(100) < p, "rotation20": rng.random(100) < p}
        write_outcomes(res / run / "deformations.outcomes.npz", per, np.arange(100))
    found = build_report([res], tmp_path / "rep", baseline="vanilla")["comparisons"]
    rot = next(
        c for c in found if c.column == "manifold_mixup" and c.network is not None and c.network[6] == "sign-flip"
    )
    assert rot.method.images == 100 and rot.method.pairs == 2
    summary = (tmp_path / "rep" / "claims.md").read_text()
    assert "Network claim (these trained networks, per image):" in summary and "sign-flip test p" in summary


START, END = (
    "<!-- generated by mmix-eval report: the main table and what holds -->",
    "<!-- end of the generated summary -->",
)


def _block(text: str) -> str:
    return text[text.index(START) : text.index(END) + len(END)]


def _blocks(text: str) -> list[str]:
    out, i = [], text.find(START)
    while i >= 0:
        out.append(text[i : text.index(END, i) + len(END)])
        i = text.find(START, i + 1)
    return out


STUDY = ["reports/digits-loss-study/bce_softmax", "reports/digits-loss-study/soft_ce"]


@pytest.mark.parametrize(
    "readme, reports",
    [
        ("README.md", ["reports/digits-loss-study/bce_softmax"]),
        ("reports/cifar10-smallnet/README.md", ["reports/cifar10-smallnet"]),
        ("reports/digits-loss-study/README.md", STUDY),
        ("reports/digits-calibration/README.md", ["reports/digits-calibration"]),
        ("reports/digits-calibrators/README.md", ["reports/digits-calibrators"]),
        ("reports/digits-ood/README.md", ["reports/digits-ood"]),
        ("reports/cifar10-smallnet-ood/README.md", ["reports/cifar10-smallnet-ood"]),
    ],
)
def test_the_readmes_show_the_generated_summary_verbatim(readme, reports):
    """Each generated block of a README, in order, is the summary.md of the report it names."""
    summaries = [_block((ROOT / r / "summary.md").read_text(encoding="utf-8")) for r in reports]
    assert _blocks((ROOT / readme).read_text(encoding="utf-8")) == summaries


@pytest.mark.slow
@pytest.mark.parametrize(
    "report, title",
    [
        ("cifar10-smallnet", "mmix-eval bench: cifar10-smallnet-calibration"),
        ("digits-loss-study/bce_softmax", "Loss study on the embedded digits: bce_softmax"),
        ("digits-loss-study/soft_ce", "Loss study on the embedded digits: soft_ce"),
        ("digits-calibration", "Calibration under shift on the embedded digits, with deep ensembles"),
        ("digits-calibrators", "Seven post-hoc calibrators and conformal sets under shift on the embedded digits"),
        (
            "digits-ood",
            "Out-of-distribution detection from the logits and from the features, layer by layer, on the "
            "embedded digits",
        ),
        (
            "cifar10-smallnet-ood",
            "Out-of-distribution detection from the logits and from the features, layer by layer: CIFAR-10, small "
            "CNN, CPU budget",
        ),
    ],
)
def test_the_committed_summary_is_what_the_records_give_today(tmp_path, report, title):
    """Rebuilt from the committed records and outcomes alone, the summary and the claims are the committed files,
    and the table, the LaTeX, the Markdown report and the outcomes have the SHA-256 the committed manifest gives
    (table, LaTeX and Markdown are not kept in git: a rebuild regenerates them; built without the plots, which
    none of these files reads)."""
    import hashlib
    import json

    rep = ROOT / "reports" / report
    build_report([rep / "records.jsonl.gz"], tmp_path / "rep", baseline="vanilla", title=title, plots=False)
    assert not (tmp_path / "rep" / "plots").exists()
    for name in ("summary.md", "claims.md"):
        assert (tmp_path / "rep" / name).read_text(encoding="utf-8") == (rep / name).read_text(encoding="utf-8"), name
    manifest = json.loads((rep / "report-manifest.json").read_text(encoding="utf-8"))["files"]
    for name in ("table.csv", "report.tex", "report.md", "outcomes.npz", "summary.md", "claims.md"):
        if name in manifest or name != "outcomes.npz":  # the OOD study has no per-image outcomes
            assert hashlib.sha256((tmp_path / "rep" / name).read_bytes()).hexdigest() == manifest[name], name
    if "outcomes.npz" in manifest:
        assert hashlib.sha256((rep / "outcomes.npz").read_bytes()).hexdigest() == manifest["outcomes.npz"]
    else:
        assert not (tmp_path / "rep" / "outcomes.npz").exists() and not (rep / "outcomes.npz").exists()


@pytest.mark.slow
def test_the_same_records_give_the_same_table_whatever_the_hash_seed(tmp_path):
    """Corruption errors summed over a set of (corruption, severity) once took the set's hash order, which
    changes between processes: the last digits of CE moved from one rebuild to the next."""
    from mmix_eval.evaluate.base import get_evaluator
    from mmix_eval.evaluate.records import with_specs

    rng = np.random.default_rng(0)
    corruptions = [f"c{k}" for k in range(12)]
    for method in ("vanilla", "manifold_mixup"):
        base = {
            "run": f"{method}-s0",
            "checkpoint": "x",
            "model": "smallnet",
            "method": method,
            "method_settings": {},
            "train_seed": 0,
            "data": "cifar10",
            "n": 100,
            "eval_seed": 0,
            "evaluator": "corruptions",
            "settings": {"source": "generated"},
        }
        rows = [record(base, "clean", "acc", 90.0)]
        rows += [
            record(base, f"{c}-{s}", "acc", float(100 - rng.uniform(10, 60)), corruption=c, severity=s)
            for c in corruptions
            for s in range(1, 6)
        ]
        write_records(with_specs(rows, get_evaluator("corruptions")), tmp_path / "res" / base["run"] / "corruptions")
    tables = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "mmix_eval",
                "report",
                str(tmp_path / "res"),
                "--out",
                str(tmp_path / seed),
                "--baseline",
                "vanilla",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        tables.append((tmp_path / seed / "table.csv").read_bytes())
    assert tables[0] == tables[1] == tables[2]


def test_the_report_package_has_no_import_circle():
    """Every first-party import in mmix_eval/report (at the top or inside a function), as a graph: no cycle."""
    import ast

    pkg = ROOT / "mmix_eval" / "report"
    files = {
        ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f for f in pkg.rglob("*.py")
    }
    graph = {}
    for name, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmix_eval.report"):
                # 'from package import submodule' depends on the submodule; 'from module import name' on the module
                for a in node.names:
                    deps.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("mmix_eval.report")}
        graph[name] = {d for d in deps if d in files and d != name}
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(m) :] + [m]))
        if m in seen:
            return
        stack.append(m)
        for d in sorted(graph[m]):
            visit(d)
        stack.pop()
        seen.add(m)

    for m in sorted(graph):
        visit(m)
    assert len(graph) >= 15


def test_a_section_from_an_installed_packages_entry_point(tmp_path, monkeypatch):
    import importlib.metadata

    from mmix_eval.report.sections import ReportSection, section_for

    (tmp_path / "pkg_sections.py").write_text(
        "from mmix_eval.report.sections import ReportSection\n"
        "class Occlusion(ReportSection):\n"
        "    def notes(self, ctx):\n"
        "        return ['occlusion section from an entry point']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(
        name="occlusion", value="pkg_sections:Occlusion", group="mmix_eval.report_sections"
    )
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group=None: [ep] if group == "mmix_eval.report_sections" else []
    )
    assert type(section_for("occlusion")).__name__ == "Occlusion"
    assert type(section_for("something_else")) is ReportSection  # the generic section
    assert type(section_for("corruptions")).__name__ == "CorruptionsSection"  # a built-in, imported on first use


def test_paired_t_p_equals_scipys_paired_t_test():
    from scipy.stats import ttest_rel

    from mmix_eval.report.stats import paired_t_p

    a, b = [61.2, 58.4, 60.9, 63.0], [57.0, 57.9, 55.1, 60.2]
    assert paired_t_p([x - y for x, y in zip(a, b)]) == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-12)
    assert paired_t_p([1.0]) is None and paired_t_p([2.0, 2.0, 2.0]) is None  # one pair; no spread


def test_results_load_of_nothing_is_one_line(tmp_path):
    from mmix_eval import results

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="expected mmix-eval record files .*found none"):
        results.load(tmp_path / "empty")


def test_a_nan_value_is_n_a_and_makes_no_claim(tmp_path):
    res = fake_results(tmp_path / "res")
    rows = [r for r in (res / "manifold_mixup-s1" / "deformations.jsonl").read_text().splitlines()]
    rows = [r.replace('"value": 62.0', '"value": null') for r in rows]  # rotation20 of seed 1 lost (NaN)
    (res / "manifold_mixup-s1" / "deformations.jsonl").write_text("\n".join(rows) + "\n")
    view = build_report([res], tmp_path / "rep", baseline="vanilla")["view"]
    rot = next(r for r in view["main"]["rows"] if r["label"].startswith("Rotation"))
    assert (
        rot["cells"][1]["text"] == "n/a (1 of 2 non-finite)"
        and not rot["cells"][1]["dagger"]
        and not rot["cells"][1]["best"]
    )
    # no claim for that row (a NaN difference tests nothing), the other rows keep theirs
    sentences = [s for _, ss in view["verdicts"]["by_condition"] for s in ss]
    assert not any("− vanilla, Rotation" in s for s in sentences) and any("− vanilla, Clean" in s for s in sentences)


def test_an_unreadable_cost_file_is_listed_and_the_report_still_builds(tmp_path):
    res = fake_results(tmp_path / "res")
    build_report([res], tmp_path / "a", baseline="vanilla")
    (tmp_path / "a" / "cost.json").write_text("[1, 2")
    out = build_report([tmp_path / "a" / "records.jsonl"], tmp_path / "b", baseline="vanilla")
    assert [(Path(p).name, why) for p, why in out["bad"]] == [
        ("cost.json", "unreadable training costs (JSONDecodeError)")
    ]
    assert out["view"]["cost"] is None


def test_a_check_on_an_unquoted_label_with_dots_says_to_quote_it(tmp_path):
    res = ten_methods(tmp_path / "res")
    with pytest.raises(UserError, match=r"quote a column label holding spaces, dots or operators"):
        build_report([res], tmp_path / "rep", baseline="vanilla", checks=["hidden_noise prob=0.5.rotation20 >= 1"])
    with pytest.raises(
        UserError, match=r"a column label with spaces or dots is quoted: .*write '\"LABEL\".rotation20'"
    ):
        build_report([res], tmp_path / "rep", baseline="vanilla", checks=["hidden_noise prob 0.5.rotation20 >= 1"])
    out = build_report(
        [res], tmp_path / "rep", baseline="vanilla", checks=['"hidden_noise prob=0.5".rotation20 >= 1'], plots=False
    )
    assert out["checks"][0][1]


def test_a_sections_own_title_heads_its_table_and_a_neutral_note_is_not_drawn_as_a_failure(tmp_path, monkeypatch):
    (tmp_path / "titled.py").write_text(
        "from mmix_eval.report.sections import Note, ReportSection\n"
        "class Titled(ReportSection):\n"
        "    title = 'Deformations, as my paper calls them'\n"
        "    def notes(self, ctx):\n"
        "        return [Note('a neutral statement', 'info'), 'a problem']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from report.test_report_calibrated import write  # records with a deformations section of their own

    build_report(
        [write(tmp_path / "res")],
        tmp_path / "rep",
        baseline="vanilla",
        sections={"deformations": "titled:Titled"},
        plots=False,
    )
    md = (tmp_path / "rep" / "report.md").read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "### Deformations, as my paper calls them" in md
    assert "> a neutral statement" in md and "> **a problem**" in md
    assert "<p class='note'>a neutral statement</p>" in html and "<p class='fail'>a problem</p>" in html


def test_the_documented_report_section_runs_and_a_broken_one_is_one_line(tmp_path, monkeypatch):
    """docs/report-sections.md's example, as written, on records of a 'occlusion' evaluator; then sections that raise
    or return the wrong type (issue 44: a traceback after writing) fail before anything is written."""
    import re
    from types import SimpleNamespace

    from builders import specs as _specs  # noqa: F401  (the builders module is on the path)

    from mmix_eval.evaluate.base import SHIFT_METRICS
    from mmix_eval.evaluate.records import with_specs

    text = (ROOT / "docs" / "report-sections.md").read_text(encoding="utf-8")
    (tmp_path / "my_sections.py").write_text(
        re.search(r"```python title=my_sections.py\n(.*?)```", text, re.S).group(1)
    )
    (tmp_path / "broken_sections.py").write_text(
        "from mmix_eval.report.sections import ReportSection\n"
        "class Raises(ReportSection):\n"
        "    def notes(self, ctx):\n"
        "        raise KeyError('oops')\n"
        "class WrongType(ReportSection):\n"
        "    def notes(self, ctx):\n"
        "        return 'not a list'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_sections", raising=False)  # another test's my_sections.py
    for method, acc in (("vanilla", 60.0), ("manifold_mixup", 70.0)):
        base = {
            "run": f"{method}-s0",
            "model": "m",
            "method": method,
            "method_settings": {},
            "train_seed": 0,
            "data": "d",
            "n": 10,
            "evaluator": "occlusion",
            "settings": {},
        }
        rows = [record(base, "clean", "acc", acc + 10, label="Clean")] + [
            record(base, f"patch{p}", "acc", acc - p, label=f"Patch {p}", patch=p) for p in (4, 8)
        ]
        write_records(
            with_specs(rows, SimpleNamespace(name="occlusion", metrics=SHIFT_METRICS)),
            tmp_path / "res" / base["run"] / "occlusion",
        )
    build_report(
        [tmp_path / "res"], tmp_path / "rep", baseline="vanilla", sections={"occlusion": "my_sections:OcclusionSection"}
    )
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "> occlusion: 2 columns compared on the same occluded images" in md
    assert (tmp_path / "rep" / "plots" / "occlusion-by-patch.png").stat().st_size > 1000
    for cls, message in (
        ("Raises", r"report section broken_sections:Raises \(notes, evaluator 'occlusion'\): failed \(KeyError"),
        ("WrongType", "expected a list of strings, got str"),
    ):
        with pytest.raises(UserError, match=message):
            build_report([tmp_path / "res"], tmp_path / f"bad{cls}", sections={"occlusion": f"broken_sections:{cls}"})
        assert not (tmp_path / f"bad{cls}").exists()


def test_a_sweep_value_is_chosen_on_held_out_validation_and_the_others_are_exploratory(tmp_path):
    """Issue 42: sweep values were chosen on the test set. The report picks each swept method's value by its runs'
    held-out validation NLL (model.json's, kept in cost.json), marks it, and leaves the other values' comparisons
    out of the primary family; without validation numbers it says that any choice would be one on the test set."""
    import json

    res = ten_methods(tmp_path / "res")
    first = build_report([res], tmp_path / "rep", baseline="vanilla", plots=False)
    assert any("not chosen on held-out data" in n["text"] for n in first["view"]["notes"])
    sweep_cols = {k: f"c{k}" for k in (7, 8, 9)}  # hidden_noise prob = 0.1, 0.5, 0.9
    costs = {f"c{k}-s{s}": {"val_nll": {7: 0.9, 8: 0.5, 9: 0.7}[k] + 0.01 * s} for k in sweep_cols for s in (0, 1, 2)}
    (tmp_path / "rep" / "cost.json").write_text(json.dumps(costs))
    out = build_report([tmp_path / "rep" / "records.jsonl"], tmp_path / "rep2", baseline="vanilla", plots=False)
    notes = [n for n in out["view"]["notes"] if "chosen on the held-out validation NLL" in n["text"]]
    assert len(notes) == 1 and "hidden_noise prob=0.5 chosen" in notes[0]["text"] and notes[0]["cls"] == "note"
    prim = {c.column for c in out["comparisons"] if c.primary}
    assert "hidden_noise prob=0.5" in prim and not {"hidden_noise prob=0.1", "hidden_noise prob=0.9"} & prim
    md = (tmp_path / "rep2" / "report.md").read_text()
    assert "[chosen on validation]" in md.split("### Sweep over prob")[1]


def test_the_committed_reports_stay_under_10_mb_without_derived_files():
    """Issue 43: what a rebuild regenerates is not kept in git (reports/README.md says which files those are), no
    PDF figure is, and the committed reports weigh at most 10 MB in all (5 MB until issue 46's calibrator study,
    3.3 MB of it: seven calibrators' rows and bootstrap replicates under every condition), no file over 2 MB."""
    files = [p for p in (ROOT / "reports").rglob("*") if p.is_file()]
    derived = [
        p
        for p in files
        if p.name
        in ("report.html", "report.md", "report.tex", "table.csv", "records.csv", "records.jsonl", "index.html")
        or p.suffix == ".pdf"
    ]
    assert not derived, derived
    assert sum(p.stat().st_size for p in files) <= 10_000_000
    assert not [p for p in files if p.stat().st_size > 2_000_000]  # large binaries belong outside git
