"""Issue 44, the critical item: a name read from a file never imports code (docs/reliability.md, "Trust boundary").

Each disguise plants a ``module:attr`` name in a file mmix-eval reads (a checkpoint's metadata, a run folder's
config.yaml, a results folder's records) pointing at a module of the test's own whose import writes a marker
file: the marker must never appear. Where the name would be resolved, the command is refused with one line
naming the flag through which the user can give it; where the name is only a label, the command succeeds.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from reliability.test_untrusted_checkpoints import _rewrite, _set, run_ckpt
from reliability.util import cli, one_line_error

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")


def load(arg, root, download):
    raise SystemExit("called")


def factory(**kw):
    raise SystemExit("called")


class Method:
    pass
"""


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A module 'evil_trust_mod' on the path (and in the current directory, where the registry also looks) whose
    import creates ``marker``; returns the marker's path."""
    marker = tmp_path / "IMPORTED"
    pkg = tmp_path / "mods"
    pkg.mkdir()
    (pkg / "evil_trust_mod.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.chdir(pkg)
    sys.modules.pop("evil_trust_mod", None)
    yield marker
    sys.modules.pop("evil_trust_mod", None)


VICTIM = "victim-folder"

# (what, the metadata change, the flag the one-line refusal names)
RESOLVED = [
    ("data.spec runs a module's function", _set("data.spec", "evil_trust_mod:load"), "--data"),
    ("data.spec as shutil:rmtree on a folder", _set("data.spec", f"shutil:rmtree:{VICTIM}"), "--data"),
    ("data.spec pickles through joblib", _set("data.spec", "joblib:load:payload.pkl"), "--data"),
    (
        "no data.spec, config.data.name names the module",
        lambda m: (
            m["data"].__setitem__("spec", None),
            m.setdefault("config", {}).setdefault("data", {}).__setitem__("name", "evil_trust_mod:load"),
        ),
        "--data",
    ),
    ("model.name names a factory", _set("model.name", "evil_trust_mod:factory"), "--trust-model-import"),
]


@pytest.mark.parametrize("what, change, flag", RESOLVED, ids=[r[0] for r in RESOLVED])
def test_a_name_in_checkpoint_metadata_that_would_import_code_is_refused(
    what, change, flag, checkpoint, evil, tmp_path, capsys, no_hang
):
    victim = evil.parent / "mods" / VICTIM
    victim.mkdir()
    (victim / "keep.txt").write_text("still here")
    bad = _rewrite(checkpoint, tmp_path, change)
    for cmd in ("calibration", "evaluate", "deformations"):
        code, _, err = run_ckpt(cmd, bad, tmp_path, capsys)
        line = one_line_error(err)
        assert code == 2, line
        assert "module:attr" in line and flag in line, line
        assert not evil.exists() and (victim / "keep.txt").exists()
        assert not (tmp_path / "res").exists()  # nothing written


def test_the_same_data_spec_given_on_the_command_line_is_the_users_choice(checkpoint, evil, tmp_path, capsys):
    """The control: the user naming the module with --data imports it (and its function runs), so the refusal
    above is the trust boundary, not a broken resolver."""
    bad = _rewrite(checkpoint, tmp_path, _set("data.spec", "evil_trust_mod:load"))
    with pytest.raises(SystemExit, match="called"):
        run_ckpt("calibration", bad, tmp_path, capsys, "--data", "evil_trust_mod:load")
    assert evil.exists()


LABELS = [
    ("method.name", _set("method.name", "evil_trust_mod:Method")),
    (
        "config.method.name",
        lambda m: m.setdefault("config", {}).setdefault("method", {}).__setitem__("name", "evil_trust_mod:Method"),
    ),
    ("method.settings.loss", _set("method.settings.loss", "evil_trust_mod:load")),
]


@pytest.mark.parametrize("what, change", LABELS, ids=[r[0] for r in LABELS])
def test_method_and_loss_names_in_metadata_are_labels_never_imported(what, change, checkpoint, evil, tmp_path, capsys):
    bad = _rewrite(checkpoint, tmp_path, change)
    code, _, err = run_ckpt("calibration", bad, tmp_path, capsys)
    assert code == 0, err
    assert not evil.exists()
    rows = [json.loads(x) for x in next((tmp_path / "res").glob("*/calibration.jsonl")).read_text().splitlines()]
    if what != "config.method.name":  # the name is carried as a label in every record
        assert any("evil_trust_mod" in json.dumps(r) for r in rows)


def _run_folder(checkpoint, tmp_path, change):
    run = tmp_path / "run"
    run.mkdir()
    cfg = yaml.safe_load((checkpoint.parent / "config.yaml").read_text())
    change(cfg)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


RESUMED = [
    ("method", lambda c: c["method"].__setitem__("name", "evil_trust_mod:Method"), "--method"),
    ("model", lambda c: c["model"].__setitem__("name", "evil_trust_mod:factory"), "--model"),
    ("data", lambda c: c["data"].__setitem__("name", "evil_trust_mod:load"), "--data"),
    ("loss", lambda c: c["method"].setdefault("kwargs", {}).__setitem__("loss", "evil_trust_mod:load"), "--loss"),
]


@pytest.mark.parametrize("what, change, flag", RESUMED, ids=[r[0] for r in RESUMED])
def test_a_run_folders_config_naming_a_module_is_not_imported_on_resume(
    what, change, flag, checkpoint, evil, tmp_path, capsys
):
    run = _run_folder(checkpoint, tmp_path, change)
    code, _, err = cli(["train", "--out", str(run), "--resume"], capsys)
    line = one_line_error(err)
    assert (
        code == 2 and f"names {'data source' if what == 'data' else what} 'evil_trust_mod:" in line and flag in line
    ), line
    assert not evil.exists()


def test_records_naming_a_module_as_evaluator_are_only_labels_in_a_report(evil, tmp_path, capsys):
    """A results folder is data: an evaluator name 'module:Class' in its records and meta files picks no report
    section by import (sections come from the built-ins, installed entry points and --section)."""
    from builders import fake_results

    res = fake_results(tmp_path / "res")
    for path in res.rglob("deformations.jsonl"):
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "evaluator": "evil_trust_mod:Method"}) + "\n" for r in rows))
        (path.parent / "deformations.meta.json").write_text(json.dumps({"evaluator": "evil_trust_mod:Method"}))
    code, _, err = cli(["report", str(res), "--out", str(tmp_path / "rep"), "--no-plots"], capsys)
    assert code == 0, err
    assert not evil.exists()
    assert "evil_trust_mod:Method" in (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")


def test_a_bench_yaml_vouches_for_the_plugins_it_names_and_no_others(evil, tmp_path):
    """The bench YAML being run is the user's: its runs' checkpoints may name its own plugin data source and
    model (they are passed on as trusted), and a checkpoint naming another module is still refused."""
    from mmix_eval.bench.plan import load_bench
    from mmix_eval.evaluate.target import eval_data
    from mmix_eval.options import OptionError

    bench = tmp_path / "b.yaml"
    bench.write_text("methods: [vanilla]\ndata: {name: 'evil_trust_mod:load'}\nmodel: {name: smallnet}\n")
    trusted = load_bench(bench).options.trusted
    assert set(trusted) == {"evil_trust_mod:load", "smallnet"}
    meta = {"data": {"spec": "evil_trust_mod:load"}}
    with pytest.raises(SystemExit, match="called"):  # trusted: the source is imported and called
        eval_data(meta, None, None, None, 0, trusted=trusted)
    with pytest.raises(OptionError, match="names data source 'evil_trust_mod:other'"):
        eval_data({"data": {"spec": "evil_trust_mod:other"}}, None, None, None, 0, trusted=trusted)


@pytest.mark.parametrize(
    "spec, code",
    [
        ("digits", False),
        ("imagefolder:/x/y?image_size=16", False),
        ("tinyimagenet:/d", False),
        ("cifar10.1:/d", False),
        ("evil_trust_mod:load", True),
        ("shutil:rmtree:/x", True),
        ("os:system", True),
        ("no_colon_unknown", False),
    ],
)
def test_which_data_specs_import_code(spec, code):
    """Built-in names with any argument resolve inside mmix-eval; any other NAME:ARG would import NAME."""
    from mmix_eval.trust import data_imports_code

    assert data_imports_code(spec) is code
