"""A report section's methods, called and checked: what a plugin section returns or raises is one line naming it,
before anything is written. Its own module so that the figure renderer (``report/plots.py``), which makes a
section's figures in a worker process, and ``report/build.py`` share it without an import circle."""

from __future__ import annotations

from matplotlib.figure import Figure

from mmix_eval.errors import UserError


def call_section(section, name: str, ctx, kind: type):
    """A section's ``add_rows`` / ``notes`` (a list of strings) or ``figures`` (a dict of name -> matplotlib figure),
    checked: a plugin section that raises or returns another type is one line naming it, before anything is written."""
    where = f"report section {type(section).__module__}:{type(section).__qualname__} ({name}, evaluator '{section.evaluator}')"
    try:
        got = getattr(section, name)(ctx)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{where}: failed ({type(e).__name__}: {str(e)[:200]})") from None
    if kind is list and not (isinstance(got, list) and all(isinstance(n, str) for n in got)):
        raise UserError(f"{where}: expected a list of strings, got {type(got).__name__}")
    if kind is dict and not (
        isinstance(got, dict) and all(isinstance(k, str) and isinstance(v, Figure) for k, v in got.items())
    ):
        raise UserError(f"{where}: expected a dict of name -> matplotlib figure, got {type(got).__name__}")
    return got
