"""Hostile strings in run names, method names, class names, condition names and config values: escaped in
HTML and Markdown, neutralised in CSV, never a path outside the output folder."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import yaml
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from reliability.util import cli, one_line_error

SCRIPT = "<script>alert(1)</script>"
ATTR = '" onmouseover="alert(1)'
FORMULA = '=HYPERLINK("http://evil.example","click")'
TRAVERSAL = "../../x"
HOSTILE = [SCRIPT, ATTR, FORMULA, TRAVERSAL, "+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0"]


def files_under(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


def assert_inside(root: Path, before: set[Path]) -> None:
    """Every file created since ``before`` lies inside ``root``."""
    created = {p.resolve() for p in files_under(root.parent)} - before
    outside = [p for p in created if root.resolve() not in p.parents]
    assert outside == []


def assert_safe_outputs(rep: Path) -> None:
    page = (rep / "report.html").read_text()
    assert "<script>" not in page and 'onmouseover="' not in page
    assert "&lt;script&gt;" in page  # present, escaped
    md = (rep / "report.md").read_text()
    assert "<script>" not in md
    assert "<script>" not in (rep / "summary.md").read_text()
    tex = (rep / "report.tex").read_text()
    user = tex.replace(">{\\raggedright\\arraybackslash}", "").replace(
        ">{\\raggedleft\\arraybackslash}", ""
    )  # the layout's own ">"
    assert "<" not in user and ">" not in user  # every user string goes through tex(): '<' as \\textless{}
    for name in ("table.csv", "records.csv"):
        cells = [c for row in csv.reader((rep / name).read_text().splitlines()) for c in row]
        assert not any(c.startswith(("=", "+", "@")) for c in cells), name


def test_hostile_names_through_evaluate_and_report(checkpoint, tmp_path, capsys):
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    meta["method"]["name"] = SCRIPT + ATTR
    meta["data"]["classes"] = [*HOSTILE, *[f"c{i}" for i in range(len(meta["data"]["classes"]) - len(HOSTILE))]]
    meta.pop("data_sha256")
    runs = []
    for i, name in enumerate([FORMULA, SCRIPT, "...", "x/../../y"]):
        folder = tmp_path / "ckpts" / str(i) / name.replace("/", "_")
        folder.mkdir(parents=True)
        meta["train"]["seed"] = i  # four seeds of one method (one method and seed twice is a duplicate run)
        (folder / "model.safetensors").write_bytes(
            st_save(load_file(checkpoint), metadata={"mmix_eval": json.dumps(meta)})
        )
        runs.append(str(folder / "model.safetensors"))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump([{"name": h, "rotation": 10 + i} for i, h in enumerate(HOSTILE)]))
    # the data's classes are digits '0'..'9'; the checkpoint now names them otherwise: map them by name
    class_map = tmp_path / "classes.yaml"
    class_map.write_text(yaml.safe_dump({str(i): c for i, c in enumerate(meta["data"]["classes"])}))
    work = tmp_path / "work"
    work.mkdir()
    before = {p.resolve() for p in files_under(tmp_path)}
    code, _, err = cli(
        [
            "evaluate",
            "--ckpt",
            *runs,
            "--out",
            str(work / "res"),
            "--limit",
            "30",
            "--device",
            "cpu",
            "--grid",
            str(grid),
            "--eps",
            "2",
            "--class-map",
            str(class_map),
        ],
        capsys,
    )
    assert code == 0, err
    code, _, err = cli(["report", str(work / "res"), "--out", str(work / "rep"), "--title", SCRIPT + FORMULA], capsys)
    assert code == 0, err
    assert_inside(work, before)
    assert sorted(p.name for p in (work / "res").iterdir()) == [
        "HYPERLINK_http___evil.example_click",
        "run",
        "script_alert_1__script",
        "x_.._.._y",
    ]
    assert_safe_outputs(work / "rep")


def test_hostile_bench_labels_stay_inside_the_bench_folder(tmp_path, capsys):
    bench = {
        "name": SCRIPT,
        "data": {"name": "digits", "train_limit": 100, "test_limit": 40},
        "model": {"name": "smallnet", "kwargs": {"width": 4}},
        "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
        "methods": [{"name": "vanilla", "label": TRAVERSAL}, {"name": "input_mixup", "label": FORMULA}],
        "seeds": [0],
        "evaluate": {"eps": [2], "evaluators": ["fgsm", "calibration"]},
        "report": {"title": ATTR, "baseline": "vanilla"},
    }
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(bench))
    out = tmp_path / "work" / "b"
    before = {p.resolve() for p in files_under(tmp_path)}
    code, _, err = cli(["bench", str(cfg), "--out", str(out)], capsys)
    assert code == 0, err
    assert_inside(out, before)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["HYPERLINK_http_evil.example_click_-s0", "x-s0"]
    assert_safe_outputs(out)


def test_hostile_config_values_are_one_line_errors(tmp_path, capsys):
    cases = [
        (f"data.name={SCRIPT}", f"unknown data set '{SCRIPT}'"),
        (f"method.name={TRAVERSAL}", f"unknown method '{TRAVERSAL}'"),
        (f"model.name={FORMULA}", "cannot import module '=HYPERLINK(\"http'"),
        (f"train.schedule={ATTR}", f"'train.schedule' expected one of step, cosine, onecycle, constant, got '{ATTR}'"),
        ("train.lr=nan", "'train.lr' expected float, got 'nan'"),
        ("train.epochs=1e309", "'train.epochs' expected int, got '1e309'"),
    ]
    for flag, message in cases:
        code, _, err = cli(["train", "--data", "digits", "--set", flag, "--out", str(tmp_path / "o")], capsys)
        assert code == 2, (flag, err)
        assert message in one_line_error(err), (flag, err)
    assert not (tmp_path / "o").exists()
