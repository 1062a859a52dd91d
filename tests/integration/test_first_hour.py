"""Issue 19: the first hour of a new user: thread counts, ε units, help and typos, a plugin from the current
directory, bench --dry-run, and a report that reads well."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import HELPERS, ROOT

from mmix_eval import threads
from mmix_eval.cli import main
from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import OptionError, get_evaluator
from mmix_eval.evaluate.evaluators.attacks.eps import parse_eps
from mmix_eval.evaluate.records import read_records

TRAIN = [
    "--data",
    "digits",
    "--train-limit",
    "200",
    "--test-limit",
    "60",
    "--epochs",
    "1",
    "--set",
    "model.kwargs={width: 4}",
    "--set",
    "train.device=cpu",
    "--no-progress",
]


# ---------------------------------------------------------------- threads


def test_thread_count_precedence_and_a_default_that_never_follows_the_load(monkeypatch):
    """Issue 43: the default is 1 thread per process whatever the machine's load (it changed trained weights by up
    to 0.02 when it followed the free cores); explicit counts win, in this order."""
    monkeypatch.delenv("MMIX_EVAL_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
    for busy in (0.0, 2.0, 9.0):  # idle, two busy cores, more busy than cores
        monkeypatch.setattr(threads, "other_runnable", lambda busy=busy: (busy, "test"))
        assert threads.resolve() == (1, "default") and threads.resolve(jobs=4) == (1, "default")
    assert threads.decide()[2] == {"usable_cores": "6", "busy_tasks": "9 (test)", "free_cores": "1"}  # provenance
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.resolve(jobs=2) == (2, "OMP_NUM_THREADS")
    monkeypatch.setenv("MMIX_EVAL_THREADS", "5")
    assert threads.resolve() == (5, "MMIX_EVAL_THREADS")
    assert threads.resolve(3) == (3, "--threads")
    with pytest.raises(UserError, match="MMIX_EVAL_THREADS: expected an integer >= 1 \\(CPU threads\\), got 'many'"):
        monkeypatch.setenv("MMIX_EVAL_THREADS", "many")
        threads.resolve()


def test_a_benchs_runs_at_a_time_follow_the_free_cores_capped_by_the_cgroup_quota(monkeypatch):
    """What the load may change is how many runs go side by side (no number depends on it)."""
    from mmix_eval.bench.launchers import auto_jobs
    from mmix_eval.bench.plan import load_bench

    monkeypatch.delenv("MMIX_EVAL_JOBS")  # set to 1 for every test by conftest.py
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
    bench = load_bench(ROOT / "configs" / "bench" / "digits-quick.yaml")
    monkeypatch.setattr(threads, "other_runnable", lambda: (2.0, "test"))  # two other tasks keep 2 cores busy
    assert auto_jobs(bench, "cpu") == (4, "4 of 6 cores free (2 (test))")
    monkeypatch.setattr(threads, "other_runnable", lambda: (9.0, "test"))  # more busy than cores: still one
    assert auto_jobs(bench, "cpu")[0] == 1
    monkeypatch.setattr(threads, "other_runnable", lambda: (0.0, "test"))
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 2.5)  # docker --cpus 2.5 on a 6-core mask: 3
    assert auto_jobs(bench, "cpu")[0] == 3
    monkeypatch.setenv("MMIX_EVAL_JOBS", "5")  # a scheduler's share of the node: wins over the free cores
    assert auto_jobs(bench, "cpu") == (5, "MMIX_EVAL_JOBS")
    monkeypatch.setenv("MMIX_EVAL_JOBS", "all")
    with pytest.raises(UserError, match="MMIX_EVAL_JOBS: expected an integer >= 1 \\(runs at a time\\), got 'all'"):
        auto_jobs(bench, "cpu")


def test_cgroup_quota_v1_and_v2(tmp_path):
    cg = tmp_path / "proc-self-cgroup"
    root = tmp_path / "cgroup"
    (root / "job" / "step").mkdir(parents=True)
    (root / "job" / "cpu.max").write_text("150000 100000\n")  # the parent's quota binds
    (root / "job" / "step" / "cpu.max").write_text("max 100000\n")
    cg.write_text("0::/job/step\n")
    assert threads.cgroup_quota(root, cg) == 1.5
    (root / "cpu" / "job").mkdir(parents=True)
    (root / "cpu" / "job" / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "cpu" / "job" / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    cg.write_text("4:cpu,cpuacct:/job\n")
    assert threads.cgroup_quota(root, cg) == 3.0
    cg.write_text("4:memory:/job\n")
    assert threads.cgroup_quota(root, cg) is None
    # unreadable values are no quota, never an error: garbage, NaN, inf, a zero period
    cg.write_text("0::/job/step\n")
    for text in ("lots 100000", "nan 100000", "inf 100000", "150000 0", "150000 nan", ""):
        (root / "job" / "cpu.max").write_text(text)
        assert threads.cgroup_quota(root, cg) is None, text
    assert threads.cgroup_quota(root, tmp_path / "absent") is None


def test_other_runnable_sees_a_spinning_process_and_not_this_ones_threads(tmp_path, monkeypatch):
    if not threads.LOADAVG.exists():
        pytest.skip("no /proc/loadavg")
    fake = tmp_path / "loadavg"
    monkeypatch.setattr(threads, "LOADAVG", fake)
    fake.write_text("0.50 0.40 0.30 1/200 12345\n")  # only the reading thread runs: nothing else
    assert threads.other_runnable() == (0.0, "/proc/loadavg running")
    # this process's own runnable threads are taken off: held at 1 and 2 here (under the slow lane's load another
    # thread of this test process was once runnable at the moment of the look: 2.0 seen where 3.0 was expected)
    fake.write_text("0.50 0.40 0.30 4/200 12345\n")
    for own, others in ((1, 3.0), (2, 2.0)):
        monkeypatch.setattr(threads, "_own_running", lambda own=own: own)
        assert threads.other_runnable(samples=2, gap=0.0) == (others, "/proc/loadavg running")
    monkeypatch.setattr(threads, "_own_running", lambda: 1)
    for garbage in ("", "0.5 0.4", "a b c x/y z"):  # unreadable: the 1-minute load average instead
        fake.write_text(garbage)
        monkeypatch.setattr(os, "getloadavg", lambda: (2.5, 1.0, 1.0))
        assert threads.other_runnable(gap=0.0) == (1.5, "1-minute load average"), garbage
    monkeypatch.undo()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        seen = 0.0
        for _ in range(20):  # give it time to be scheduled
            seen = threads.other_runnable()[0]
            if seen >= 1:
                break
        assert seen >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_openmp_spin_settings_are_set_before_torch_unless_the_user_set_them(monkeypatch):
    for var in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY", "MMIX_EVAL_OPENMP", threads.MARKER):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "_runtime", {})
    got = threads.configure_runtime()
    assert os.environ["GOMP_SPINCOUNT"] == "10000" and os.environ["KMP_BLOCKTIME"] == "1"
    assert got["GOMP_SPINCOUNT"].startswith("10000 (mmix-eval)")  # torch is loaded in this test process: said
    # a child process inherits them as mmix-eval's, not as the user's
    monkeypatch.setattr(threads, "_runtime", {})
    assert threads.configure_runtime()["GOMP_SPINCOUNT"] == "10000 (mmix-eval, inherited from its parent process)"
    monkeypatch.setattr(threads, "_runtime", {})
    monkeypatch.delenv(threads.MARKER)
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    assert threads.configure_runtime()["GOMP_SPINCOUNT"] == "300000 (set by the user)"
    for var in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        monkeypatch.delenv(var)
    monkeypatch.setattr(threads, "_runtime", {})
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a policy of the user's own: its spin is left to it
    assert threads.configure_runtime()["KMP_BLOCKTIME"] == "unset (OMP_WAIT_POLICY=ACTIVE set by the user)"
    assert "KMP_BLOCKTIME" not in os.environ
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(threads, "_runtime", {})
    monkeypatch.setenv("MMIX_EVAL_OPENMP", "default")
    assert threads.configure_runtime() == {"MMIX_EVAL_OPENMP": "default (the OpenMP runtime's own wait policy)"}
    assert "GOMP_SPINCOUNT" not in os.environ


def test_threads_are_applied_and_recorded_and_a_report_says_when_they_differ(tmp_path, capsys):
    """In subprocesses: each process decides its thread count once (this test process keeps its own)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MMIX_EVAL_THREADS", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", threads.MARKER)
    }

    def cli(*argv):
        return subprocess.run(
            [sys.executable, "-m", "mmix_eval", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    assert cli("train", "--threads", "1", "--out", str(tmp_path / "a"), *TRAIN).returncode == 0
    hw = json.loads((tmp_path / "a" / "model.json").read_text())["hardware"]
    assert (hw["torch_threads"], hw["threads_from"]) == ("1", "--threads")
    assert hw["threads_openmp"] == "GOMP_SPINCOUNT=10000 (mmix-eval); KMP_BLOCKTIME=1 (mmix-eval)"  # before torch
    r = subprocess.run(
        [sys.executable, "-m", "mmix_eval", "train", "--method", "vanilla", "--out", str(tmp_path / "b"), *TRAIN],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    hw = json.loads((tmp_path / "b" / "model.json").read_text())["hardware"]
    assert (hw["torch_threads"], hw["threads_from"]) == ("2", "OMP_NUM_THREADS")
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Runs were trained with different CPU thread counts (1, 2)" in md
    r = cli("train", "--threads", "0", "--out", str(tmp_path / "c"), *TRAIN)
    assert r.returncode == 2 and "--threads: expected an integer >= 1 (CPU threads), got 0" in r.stderr


# ---------------------------------------------------------------- ε units and attack names


def test_eps_units_fractions_and_the_ambiguous_bare_value():
    assert parse_eps("8/255,4") == [8.0, 4.0]
    assert parse_eps(["2/255", 1]) == [2.0, 1.0]
    assert parse_eps("0.03", unit="fraction") == [7.65]
    assert parse_eps("0, 1", unit="fraction") == [0.0, 255.0]
    with pytest.raises(
        OptionError,
        match=r"eps: 0.03 is ambiguous: 0.03/255 in /255 pixel units, or 0.03 of the pixel "
        r"range = 7.65/255; write 7.65/255 \(or 0.03/255\), or give eps_unit fraction",
    ):
        parse_eps("0.03")
    with pytest.raises(OptionError, match=r"expected fractions of the pixel range in \[0, 1\]"):
        parse_eps("8", unit="fraction")
    assert parse_eps("0.5", norm="L2") == [0.5]  # an L2 norm is a plain number
    fgsm = get_evaluator("fgsm")
    with pytest.raises(OptionError, match="eps_unit: expected one of 255, fraction, got 'percent'"):
        fgsm.options({"eps_unit": "percent"})


def test_pgd_results_are_named_by_attack_and_never_overwrite_fgsm(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), *TRAIN]) == 0
    common = ["--ckpt", str(tmp_path / "run"), "--limit", "30", "--out", str(tmp_path / "res"), "--no-progress"]
    assert main(["fgsm", "--eps", "2/255", *common]) == 0
    assert main(["fgsm", "--eps", "2", "--attack", "pgd", "--pgd-steps", "3", *common]) == 0
    fgsm = read_records(tmp_path / "res" / "run" / "fgsm.jsonl")
    pgd = read_records(tmp_path / "res" / "run" / "fgsm-pgd3.jsonl")
    assert {r["condition"] for r in fgsm} == {"clean", "eps2"} and {r["settings"]["attack"] for r in fgsm} == {"fgsm"}
    assert {r["condition"] for r in pgd} == {"clean", "pgd3-eps2"} and {r["settings"]["attack"] for r in pgd} == {
        "pgd3"
    }
    capsys.readouterr()
    assert main(["fgsm", "--eps", "0.03", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--eps: 0.03 is ambiguous" in err[0] and "7.65/255" in err[0]
    assert main(["fgsm", "--eps", "0.03", "--eps-unit", "fraction", *common]) == 0
    rows = read_records(tmp_path / "res" / "run" / "fgsm.jsonl")
    assert {r["settings"].get("eps_255") for r in rows if r["condition"] != "clean"} == {7.65}
    # the report keeps FGSM and PGD apart, as rows of their own
    assert main(["fgsm", "--eps", "2/255", *common]) == 0
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| FGSM ε = 2/255: accuracy (%) |" in md and "| PGD-3 ε = 2/255: accuracy (%) |" in md


# ---------------------------------------------------------------- the command line


def test_abbreviations_are_refused_and_typos_get_a_suggestion(capsys):
    for argv, message in [
        (["train", "--epoch", "1", "--out", "x"], "train: unknown option '--epoch' (did you mean '--epochs'?)"),
        (["train", "--epohcs", "1", "--out", "x"], "train: unknown option '--epohcs' (did you mean '--epochs'?)"),
        (["fgsm", "--ckpt", "a", "--eps-unt", "x"], "fgsm: unknown option '--eps-unt' (did you mean '--eps-unit'?)"),
        (["train", "--data", "CIFAR10", "--out", "x"], "unknown data set 'CIFAR10' (did you mean 'cifar10'?)"),
    ]:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors exit from inside the parser
            code = e.code
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_help_shows_defaults_and_each_command_its_own_examples():
    def help_of(*cmd):
        return subprocess.run(
            [sys.executable, "-m", "mmix_eval", *cmd, "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "200"},
        ).stdout

    train, fgsm, bench = help_of("train"), help_of("fgsm"), help_of("bench")
    assert "training epochs (default 30, or the --config file's)" in train
    assert "SGD learning rate (default 0.1" in train and "(default 100, or the --config file's)" in train
    assert "mmix-eval train --out runs/mm-s1 --resume" in train and "--eps 8/255" not in train
    assert "--eps 8/255 --attack pgd" in fgsm and "mmix-eval train --config" not in fgsm
    assert "--dry-run" in bench and "--threads N" in train and "--download" in fgsm


def test_a_plugin_in_the_current_directory_imports_without_pythonpath(tmp_path):
    (tmp_path / "my_regs.py").write_text((HELPERS / "noisy.py").read_text())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = Path(sys.executable).with_name("mmix-eval")
    cmd = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from mmix_eval.cli import main; raise SystemExit(main())"]
    )
    r = subprocess.run(
        [*cmd, "train", "--method", "my_regs:InputNoise", "--out", "run", *TRAIN],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*cmd, "train", "--method", "nothere:X", "--out", "run2", *TRAIN],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and f"looked in the current directory {tmp_path}" in r.stderr


def test_bench_yaml_errors_name_their_section_and_dry_run_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ntrain: {batchsize: 10}\nmethods: [vanilla]\n")
    assert main(["bench", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"bench config '{bad}': unknown key 'train.batchsize' (did you mean 'train.batch_size'?)" in err
    assert "methods[0]" not in err
    cfg = tmp_path / "b.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "dry",
                "data": {"name": "digits", "train_limit": 200},
                "model": {"name": "smallnet", "kwargs": {"width": 4}},
                "train": {"epochs": 2, "batch_size": 50, "device": "cpu"},
                "methods": ["vanilla", "manifold_mixup"],
                "seeds": [0],
                "evaluate": {"evaluators": ["calibration"], "limit": 50},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["bench", str(cfg), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "vanilla-s0: train, about" in text and "2 of 2 runs to train" in text and "nothing was written" in text
    assert not out.exists()
    assert main(["bench", str(cfg), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["bench", str(cfg), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "vanilla-s0: skip (finished and evaluated)" in text and "0 of 2 runs to train" in text


def test_resume_on_a_finished_run_says_so(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), *TRAIN]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--no-progress"]) == 0
    assert "already finished (1 of 1 epochs); nothing to train" in capsys.readouterr().err


# ---------------------------------------------------------------- the report as a reader meets it


def test_provenance_is_summarised_then_collapsed_and_few_seeds_are_said_in_words(tmp_path, capsys):
    for m in ("vanilla", "manifold_mixup"):
        for s in ("0", "1"):
            assert main(["train", "--method", m, "--seed", s, "--out", str(tmp_path / f"{m}-s{s}"), *TRAIN]) == 0
    assert (
        main(
            [
                "calibration",
                "--ckpt",
                *(str(p) for p in sorted(tmp_path.glob("*-s*"))),
                "--out",
                str(tmp_path / "res"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    summary = html[html.index("<h2>Provenance</h2>") : html.index("<details>")]
    assert "<th>data</th><td style='text-align:left'>digits; 200 training images, 300 evaluated</td>" in summary
    assert "<th>budget</th><td style='text-align:left'>1 epochs, batch 100, schedule step</td>" in summary
    assert "<th>seeds</th><td style='text-align:left'>0, 1 (2 methods, 4 runs)</td>" in summary
    assert html.index("<details>") > html.index("<h2>Provenance</h2>") and "</pre></details>" in html
    md = (tmp_path / "rep" / "report.md").read_text()
    assert (
        "Only 2 training seeds per method: a method claim uses t with 1 degree of freedom (12.7 × its standard error)"
        in md
    )


def test_the_console_summary_keeps_its_columns_apart():
    from mmix_eval.evaluate.console import summary_table

    rows = [
        {"bin": None, "condition": "test", "metric": m, "value": v, "format": f, "direction": "lower", "schema": 2}
        for m, v, f in (("brier", 12345.678901, ".4f"), ("temperature", 1.5, ".3f"))
    ]
    header, line = summary_table(rows).splitlines()
    assert header.split() == ["condition", "brier", "temperature"]
    assert line.split() == ["test", "12345.6789", "1.500"]
