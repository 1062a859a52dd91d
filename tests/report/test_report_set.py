"""Issue 44 item 6: a report's files are one build's set. A full disk leaves the old report as it was; a build
killed mid-swap, or a file from another build, is refused by the reader instead of being read as a mixed set."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys

import pytest
from builders import fake_results
from conftest import raises_as_shown

from mmix_eval.errors import UserError
from mmix_eval.report import build, build_report, reportset
from mmix_eval.report.load import load_results


def _digests(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _other_results(tmp_path):
    return fake_results(tmp_path / "res2", methods={"vanilla": {0: 40.0, 1: 45.0}, "input_mixup": {0: 41.0, 1: 47.0}})


def test_a_full_disk_while_writing_leaves_the_old_report_as_it_was(tmp_path, monkeypatch):
    """It wrote a new report.html, report.md, ... and then failed: beside the old records (1,173 rows of a method
    in one file, 0 in the other). Now nothing is replaced, and the error is one line."""
    out = tmp_path / "rep"
    build_report([fake_results(tmp_path / "res")], out)
    before = _digests(out)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build, "write_records", full)  # after report.html, report.md, ... were written
    with raises_as_shown(
        UserError,
        match=r"--out '.*rep': expected room to write the report, got OSError: No space left "
        r"on device; nothing was replaced",
    ):
        build_report([_other_results(tmp_path)], out)
    assert _digests(out) == before
    assert not list(out.glob(f"{reportset.STAGE_PREFIX}*"))


def test_a_build_killed_mid_swap_is_refused_by_the_reader(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    build_report([fake_results(tmp_path / "res")], out)
    moved = []

    class KilledAfterThree:  # the swap's renames only (reportset's own os): the staging writes run as usual
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            if len(moved) == 3:
                raise KeyboardInterrupt  # stands in for kill -9 between two renames
            moved.append(dst)
            os.replace(src, dst)

    monkeypatch.setattr(reportset, "os", KilledAfterThree())
    with pytest.raises(KeyboardInterrupt):
        build_report([_other_results(tmp_path)], out)
    monkeypatch.setattr(reportset, "os", os)
    assert (out / reportset.MARKER).exists() and len(moved) == 3
    with pytest.raises(UserError, match="a report interrupted while its files were swapped in"):
        load_results([out / "records.jsonl"])
    build_report([_other_results(tmp_path)], out)  # the next build completes the set and lifts the marker
    assert not (out / reportset.MARKER).exists()
    assert {r["method"] for r in load_results([out / "records.jsonl"]).rows} == {"vanilla", "input_mixup"}


def test_a_file_from_another_build_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_report([fake_results(tmp_path / "res")], a)
    build_report([_other_results(tmp_path)], b)
    assert len(load_results([a / "records.jsonl"]).rows) > 0
    manifest = json.loads((a / reportset.MANIFEST).read_text())
    assert manifest["files"]["report.html"] == hashlib.sha256((a / "report.html").read_bytes()).hexdigest()
    for name in ("records.jsonl", "cost.json", "outcomes.npz"):
        if not (b / name).exists():
            continue
        saved = (a / name).read_bytes() if (a / name).exists() else None
        (a / name).write_bytes((b / name).read_bytes())
        with pytest.raises(UserError, match=f"'{name}' is not the file of the build its manifest describes"):
            load_results([a / "records.jsonl"])
        (a / name).write_bytes(saved) if saved is not None else (a / name).unlink()
    assert len(load_results([a / "records.jsonl"]).rows) > 0
    (a / reportset.MANIFEST).unlink()  # a report written before manifests: read as before
    (a / "records.jsonl").write_bytes((b / "records.jsonl").read_bytes())
    assert {r["method"] for r in load_results([a / "records.jsonl"]).rows} == {"vanilla", "input_mixup"}


def test_staging_folders_of_dead_builds_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f"{reportset.STAGE_PREFIX}deadbeef-{int(dead.stdout)}"
    live = out / f"{reportset.STAGE_PREFIX}cafecafe-{os.getppid()}"  # the test runner's parent: alive
    for d in (stale, live):
        (d / "plots").mkdir(parents=True)
        (d / "report.html").write_text("half")
    build_report([fake_results(tmp_path / "res")], out)
    assert not stale.exists() and live.exists()
    assert not [d for d in out.glob(f"{reportset.STAGE_PREFIX}*") if d != live]


def test_a_full_disk_while_an_evaluation_writes_is_one_line(tmp_path, capsys, monkeypatch):
    """It was an OSError traceback from deep inside the writer."""
    from mmix_eval.cli import main
    from mmix_eval.evaluate import runner

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
    capsys.readouterr()

    def full(path, *_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner, "write_records", full)
    assert main(["calibration", "--ckpt", str(run), "--out", str(tmp_path / "ev"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mmix-eval: error:")]
    assert (
        len(errors) == 1
        and errors[0].startswith("mmix-eval: error: could not write '")
        and "No space left on device" in errors[0]
        and "Traceback" not in err
    ), err
