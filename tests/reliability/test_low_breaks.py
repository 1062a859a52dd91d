"""Issue 44's low breaks, each now a one-line error or the right behaviour (each test failed before its fix)."""

from __future__ import annotations

import os
import textwrap
from types import SimpleNamespace

import pytest
from builders import fake_results, write_tree

from mmix_eval import results
from mmix_eval.cli import main
from mmix_eval.data import load_data
from mmix_eval.errors import UserError
from mmix_eval.report.load import load_results


def test_a_superscript_digit_as_image_size_is_one_line(tmp_path):
    """'²' is a digit to str.isdigit, not to int(): a ValueError traceback."""
    root = write_tree(tmp_path / "t")
    with pytest.raises(UserError, match=r"image_size expected an integer from 1 to 4096, got '²'"):
        load_data(f"imagefolder:{root}?image_size=²")


def test_the_same_record_file_given_twice_is_read_once(tmp_path):
    res = fake_results(tmp_path / "res")
    f = next(res.rglob("deformations.jsonl"))
    once = results.load([f])
    assert len(results.load([f, f])) == len(once) and len(
        results.load([f, str(f), res / ".." / res.name / f.relative_to(res)])
    ) == len(once)


def test_an_outcomes_file_that_is_a_fifo_is_named_not_dropped(tmp_path):
    res = fake_results(tmp_path / "res")
    f = next(res.rglob("deformations.jsonl"))
    os.mkfifo(f.with_suffix(".outcomes.npz"))
    got = load_results([res])
    assert any(
        p.endswith("deformations.outcomes.npz") and "expected a regular file, got a FIFO" in why for p, why in got.bad
    )
    assert got.rows  # the records themselves are read


def test_a_shift_set_of_another_shape_is_refused_before_a_bench_trains(tmp_path, capsys):
    small = write_tree(tmp_path / "small", size=16)  # 3 x 16 x 16; digits are 1 x 8 x 8
    cfg = tmp_path / "b.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
        methods: [vanilla]
        data: {{name: digits, train_limit: 100}}
        train: {{epochs: 1}}
        evaluate:
          shift: {{sets: ["imagefolder:{small}"]}}
        """)
    )
    assert main(["bench", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "expected images of the model's input, 1 x 8 x 8 (channels x height x width), got 3 x 16 x 16" in err[0]
    ), err
    assert not (tmp_path / "out" / "runs").exists()


def test_a_broken_evaluator_entry_point_is_listed_and_the_rest_still_are(monkeypatch, capsys):
    from mmix_eval.catalog import EVALUATORS

    def broken():
        raise ImportError("No module named 'gone'")

    ep = SimpleNamespace(name="broken_plugin", value="gone:Evaluator", load=broken)
    monkeypatch.setattr(EVALUATORS, "_entry_points", lambda: [ep])
    assert main(["ls", "evaluators"]) == 0
    out = capsys.readouterr().out
    assert "deformations" in out and "fgsm" in out
    assert (
        "broken_plugin  (unavailable: evaluator 'broken_plugin': entry point gone:Evaluator failed to load "
        "(ImportError: No module named 'gone'))" in out
    )


PLUGIN = """
from dataclasses import dataclass
from mmix_eval.evaluate.base import Evaluator, MetricSpec
from mmix_eval.evaluate.records import record


class Rows(Evaluator):
    name = "rows"
    help = "hand-built rows"
    metrics = {"acc": MetricSpec("accuracy (%)", "higher", ".2f", headline=True)}
    drop = ("bin",)

    @dataclass
    class Options:
        pass

    def run(self, target, options, common):
        r = record({**target.base, "evaluator": self.name, "n": len(target.test), "eval_seed": common.seed,
                    "settings": {}}, "clean", "acc", 50.0)
        for k in self.drop:
            del r[k]
        return [r]


class NoRun(Rows):
    name = "norun"
    drop = ("bin", "run")
"""


def test_plugin_rows_without_an_optional_field_are_filled_and_without_a_required_one_refused(
    tmp_path, capsys, monkeypatch
):
    """A row without 'bin' was written, then a KeyError traceback; the bench said '4 of 4 in the report'."""
    (tmp_path / "rowsplugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--out",
                str(run),
                "--set",
                "data.train_limit=100",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--ckpt",
                str(run),
                "--evaluators",
                "rowsplugin:Rows",
                "--out",
                str(tmp_path / "a"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = load_results([tmp_path / "a"]).rows
    assert [r["bin"] for r in rows] == [None] and rows[0]["value"] == 50.0
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--ckpt",
                str(run),
                "--evaluators",
                "rowsplugin:NoRun",
                "--out",
                str(tmp_path / "b"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == [
        "mmix-eval: error: evaluator 'norun' on run 'run': row 1 expected a record as evaluate.records.record "
        "builds it, got one where it lacks run"
    ], err
    assert not list((tmp_path / "b").rglob("norun*"))


def test_a_class_folder_named_in_another_encoding_is_one_line(tmp_path):
    """A Latin-1 folder name reached the cache key as surrogates: a UnicodeEncodeError traceback."""
    root = write_tree(tmp_path / "t")
    for split in ("train", "test"):
        os.rename(os.fsencode(root / split / "cat"), os.fsencode(root / split) + b"/c\xffat")
    with pytest.raises(UserError, match=r"expected UTF-8 file and folder names, got '(test|train)/c\\xffat'"):
        load_data(f"imagefolder:{root}")
