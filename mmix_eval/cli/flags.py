"""Library parameters as the command line's flags, in one place. The library names parameters (``ckpt``,
``image_size``); its errors carry them (``errors.ParamError``, ``errors.mention``); the command line shows the
same messages with its flags (``--ckpt``, ``--image-size``)."""

from __future__ import annotations

from mmix_eval.errors import UserError, one_line

# Where a flag is not the parameter's name with dashes.
FLAGS: dict[str, str] = {}


def flag(param: str) -> str:
    """The flag of a library parameter: ``image_size`` -> ``--image-size``."""
    return FLAGS.get(param) or "--" + param.replace("_", "-")


def as_flags(e: UserError) -> str:
    """A library error's message as the command line shows it: every parameter it names as its flag."""
    return one_line(e.render(flag))
