"""Static guard: no code path calls torch.load without weights_only=True."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "mmix_eval"


def test_every_torch_load_passes_weights_only_true():
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{path.name}:{node.lineno}", ok))
    assert calls, "expected at least the resume path to call torch.load"
    assert [c for c, ok in calls if not ok] == []


def test_result_records_import_no_torch():
    import subprocess
    import sys

    code = "import sys, mmix_eval.evaluate.records; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert r.returncode == 0, r.stderr


def test_evaluators_do_not_import_the_training_code():
    for path in (PACKAGE / "evaluate").glob("*.py"):
        text = path.read_text()
        assert "mmix_eval.training" not in text and "mmix_eval.methods" not in text, path.name
