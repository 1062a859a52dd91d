"""Library errors name parameters; the command line shows its flags, mapped in one place (cli/flags.py)."""

from __future__ import annotations

import ast
import pickle
import re

from conftest import ROOT

from mmix_eval.cli.flags import as_flags, flag
from mmix_eval.errors import ParamError, UserError, mention
from mmix_eval.options import OptionError

FLAG = re.compile(r"--[a-z][a-z-]*")


def raises_naming_a_flag(package) -> list[str]:
    """Every raise outside cli/ whose expression's source holds a flag (``--name``)."""
    found = []
    for f in sorted(package.rglob("*.py")):
        if f.relative_to(package).parts[0] == "cli":
            continue
        src = f.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(src)):
            if (
                isinstance(node, ast.Raise)
                and node.exc is not None
                and FLAG.search(ast.get_source_segment(src, node.exc))
            ):
                found.append(f"{f.relative_to(package)}:{node.lineno}")
    return found


def test_no_raise_outside_the_command_line_names_a_flag(tmp_path):
    assert raises_naming_a_flag(ROOT / "mmix_eval") == []
    (tmp_path / "pkg" / "cli").mkdir(parents=True)  # the check finds one, and leaves cli/ alone
    (tmp_path / "pkg" / "lib.py").write_text("def f(p):\n    raise ValueError(f'--ckpt {p}: bad')\n")
    (tmp_path / "pkg" / "cli" / "c.py").write_text("def g():\n    raise SystemExit('--ckpt: bad')\n")
    assert raises_naming_a_flag(tmp_path / "pkg") == ["lib.py:2"]


def test_a_parameter_error_reads_with_names_in_the_library_and_flags_on_the_command_line():
    e = ParamError("ckpt", f"expected a state dict file; pass {mention('data_root')} or {mention('download')}", "x.pt")
    assert str(e) == "ckpt 'x.pt': expected a state dict file; pass data_root or download"
    assert as_flags(e) == "--ckpt 'x.pt': expected a state dict file; pass --data-root or --download"
    assert e.param == "ckpt" and e.detail == "expected a state dict file; pass data_root or download"
    assert (
        as_flags(ParamError("mean/std", "expected both or neither, got one"))
        == "--mean/--std: expected both or neither, got one"
    )
    assert as_flags(OptionError("image_size", "expected an integer")) == "--image-size: expected an integer"
    assert str(UserError(f"raise {mention('limit')}")) == "raise limit" and flag("batch_size") == "--batch-size"
    assert "\n" not in as_flags(ParamError("out", "a\nb", "x\ny"))  # one line, whatever the value holds


def test_errors_keep_their_parameters_through_a_process_boundary():
    """A bench worker's error is pickled to the parent, which shows it with flags."""
    for e in (
        ParamError("resume", f"pass {mention('overwrite')}", "runs/a"),
        OptionError("seed", "bad"),
        UserError(f"give {mention('limit')}"),
    ):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and as_flags(back) == as_flags(e)
    assert as_flags(pickle.loads(pickle.dumps(ParamError("resume", "x", "r")))) == "--resume 'r': x"


def test_text_that_merely_holds_the_marker_characters_is_shown_as_given():
    """A path may hold the private-use characters that mark a mentioned parameter: only a well-formed mention of a
    parameter name is rendered; any other text is kept, character for character, both ways."""
    for path in ["/tmp/a\ue000b c\ue001d", "x\ue000unclosed", "\ue001\ue000", "\ue000\ue001", "\ue000Upper\ue001"]:
        e = UserError(f"data root '{path}': expected the files there")
        assert str(e) == as_flags(e) == f"data root '{path}': expected the files there"
    e = ParamError("ckpt", f"pass {mention('data_root')} (in '/x\ue000y z\ue001')", "/x\ue000")
    assert str(e) == "ckpt '/x\ue000': pass data_root (in '/x\ue000y z\ue001')"
    assert as_flags(e) == "--ckpt '/x\ue000': pass --data-root (in '/x\ue000y z\ue001')"
