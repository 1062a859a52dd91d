"""Helpers for the reliability suite: run the CLI in-process and read its one-line error."""

from __future__ import annotations


def cli(argv, capsys) -> tuple[int, str, str]:
    from mmix_eval.cli import main

    capsys.readouterr()
    code = main(
        [*argv, "--no-progress"]
        if argv[0] in ("train", "deformations", "fgsm", "calibration", "evaluate", "bench")
        else argv
    )
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The error line, asserting there is exactly one and no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("mmix-eval: error: ")]
    assert len(errors) == 1, err
    return errors[0]
