"""Issue 42, item 5: a report stays paper-sized at 20 columns and 7 evaluators: the main table holds the paper's rows
and one row per other evaluator, the ensembles sit in a table of their own, LaTeX splits wide tables into column
groups instead of shrinking them, summary.md stays under 32 KB and report.md under 1 MiB (every comparison in
claims.md), and report.main chooses the rows and columns."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import get_evaluator
from mmix_eval.evaluate.records import record, with_specs, write_records
from mmix_eval.report import build_report
from mmix_eval.report.render_latex import TEX_GROUP

METHODS = [
    "vanilla",
    "input_mixup",
    "manifold_mixup",
    "cutmix",
    "label_smoothing",
    "regmixup",
    "mixup_a",
    "mixup_b",
    "mixup_c",
    "my_regs:Noisy",
]
SHIFTS = {
    "deformations": [
        "rotation20",
        "rotation40",
        "shear28.6",
        "shear57.3",
        "zoom_in60",
        "zoom_in80",
        "zoom_out120",
        "zoom_out140",
    ],
    "fgsm": ["eps1", "eps2", "eps4", "eps8"],
    "attack": ["pgd2", "pgd4"],
}


def twenty_columns(root):
    """10 methods x 3 seeds and each method's ensemble: 20 columns, 7 evaluators, calibrated rows everywhere."""
    rng = np.random.default_rng(0)
    for k, method in enumerate(METHODS):
        for seed in ("0", "1", "2", "ensemble"):
            run = f"m{k}-{'ensemble' if seed == 'ensemble' else 's' + seed}"
            settings = {"ensemble_members": 3} if seed == "ensemble" else {}
            base = {
                "run": run,
                "checkpoint": "x",
                "model": "smallnet",
                "method": method,
                "method_settings": settings,
                "train_seed": None if seed == "ensemble" else int(seed),
                "data": "digits",
                "n": 300,
                "eval_seed": 0,
                "method_label": f"{method} ensemble of 3" if seed == "ensemble" else None,
            }
            acc = 80 + k + rng.normal(0, 1)
            cal = {"calibrator": "temperature", "calibrator_fit_images": 200}
            for ev, conds in SHIFTS.items():
                b = {**base, "evaluator": ev, "settings": {}}
                rows = [record(b, "clean", "acc", acc, label="Clean test images")]
                for j, c in enumerate(conds):
                    strength = {"eps_255": float(j + 1)} if ev != "deformations" else {}
                    rows.append(record(b, c, "acc", acc - 5 * (j + 1) + rng.normal(0, 1), label=c, **strength))
                    for metric in ("nll", "ece", "brier"):
                        v = float(rng.uniform(0.1, 1.0))
                        rows += [
                            record(b, c, metric, v, label=c, **strength),
                            record(b, c, metric, v * 0.8, label=c, **strength, **cal),
                        ]
                for metric in ("nll", "ece", "brier"):
                    rows += [
                        record(b, "clean", metric, 0.3, label="Clean test images"),
                        record(b, "clean", metric, 0.2, label="Clean test images", **cal),
                    ]
                write_records(with_specs(rows, get_evaluator(ev)), root / run / ev)
            b = {**base, "evaluator": "calibration", "settings": {}}
            write_records(
                with_specs(
                    [
                        record(b, "test", "acc", acc, label="Test images"),
                        record(b, "test", "nll", 0.3, label="Test images"),
                    ],
                    get_evaluator("calibration"),
                ),
                root / run / "calibration",
            )
            b = {**base, "evaluator": "ood", "settings": {}}
            rows = [
                record(b, f"{src}/{sc}", m, float(rng.uniform(0.4, 1.0)), f"{src}, {sc} score", ood=src, score=sc)
                for src in ("noise:gaussian", "noise:uniform", "noise:blobs")
                for sc in ("msp", "max_logit", "energy")
                for m in ("auroc", "aupr_in", "aupr_out", "fpr95")
            ]
            write_records(with_specs(rows, get_evaluator("ood")), root / run / "ood")
            b = {**base, "evaluator": "spectra", "settings": {}}
            rows = [
                record(b, str(layer), m, float(rng.uniform(0, 1)), f"layer {layer}", layer=str(layer))
                for layer in (1, 2, 3)
                for m in ("top_share", "dirs90", "dirs99", "eff_rank", "within_between")
            ]
            write_records(with_specs(rows, get_evaluator("spectra")), root / run / "spectra")
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("twenty")
    out = build_report([twenty_columns(root / "res")], root / "rep", baseline="vanilla", plots=False)
    return root, out


def test_twenty_columns_fit_the_size_limits(report):
    root, _ = report
    assert (root / "rep" / "summary.md").stat().st_size <= 32 * 1024
    assert (root / "rep" / "report.md").stat().st_size <= 1024 * 1024
    assert (root / "rep" / "claims.md").stat().st_size > (root / "rep" / "report.md").stat().st_size / 4  # moved there


def test_the_main_table_has_the_papers_rows_one_row_per_other_evaluator_and_the_ensembles_apart(report):
    _, out = report
    main = out["view"]["main"]
    assert len(main["columns"]) == 10 and not any("ensemble" in c for c in main["columns"])
    assert len(main["ensembles"]["columns"]) == 10 and all("ensemble" in c for c in main["ensembles"]["columns"])
    labels = [r["label"] for r in main["rows"]]
    # clean + 8 deformations + 4 FGSM accuracies, one row each for attack, ood and spectra, the clean scores raw and
    # calibrated (NLL, ECE, Brier): 30 rows at most, where the whole comparison holds 50+
    assert sum("AUROC" in lab for lab in labels) == 1 and sum(lab.startswith("layer") for lab in labels) == 1
    assert len(labels) <= 30


def test_latex_splits_wide_tables_into_column_groups_never_shrinks_them(report):
    root, _ = report
    tex = (root / "rep" / "report.tex").read_text()
    assert "resizebox" not in tex
    for spec in re.findall(r"\\begin\{tabular\}\{.*?p\{4.2cm\}(r*)\}\n", tex):
        assert 1 <= len(spec) <= TEX_GROUP  # a label column and at most TEX_GROUP value columns per tabular
    main = tex[tex.index(r"\label{tab:main}") : tex.index(r"\end{table}", tex.index(r"\label{tab:main}"))]
    assert main.count(r"\begin{tabular}") == -(-10 // TEX_GROUP)  # 10 columns in groups
    assert r"\begin{longtable}" in tex  # an evaluator's hundreds of rows break across pages (a float cannot)
    if shutil.which("pdflatex"):  # compiled for real where the machine has LaTeX (twice: longtable settles widths)
        for _ in range(2):
            r = subprocess.run(
                ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                cwd=root / "rep",
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert r.returncode == 0, r.stdout[-2000:]
        log = (root / "rep" / "report.log").read_text(errors="replace")
        widths = [float(w) for w in re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)]
        assert max(widths, default=0) < 50  # nothing runs far into the margin


def test_report_main_chooses_rows_and_columns(report, tmp_path):
    root, _ = report
    out = build_report(
        [root / "res"],
        tmp_path / "rep",
        baseline="vanilla",
        plots=False,
        main={"columns": ["vanilla", "manifold_mixup", "my_regs:Noisy"], "rows": ["clean", "zoom_*", "eps8"]},
    )
    main = out["view"]["main"]
    assert main["columns"] == ["vanilla", "manifold_mixup", "my_regs:Noisy"] and "ensembles" not in main
    assert [r["label"] for r in main["rows"]] == [
        "Clean test images: accuracy (%)",
        "zoom_in60: accuracy (%)",
        "zoom_in80: accuracy (%)",
        "zoom_out120: accuracy (%)",
        "zoom_out140: accuracy (%)",
        "eps8: accuracy (%)",
    ]
    with pytest.raises(UserError, match=r"main.rows: \['nothing'\] match none of the report's rows"):
        build_report([root / "res"], tmp_path / "bad", plots=False, main={"rows": ["nothing"]})
    with pytest.raises(UserError, match="main: expected a mapping with 'columns' and/or 'rows'"):
        build_report([root / "res"], tmp_path / "bad", plots=False, main={"colums": ["vanilla"]})
