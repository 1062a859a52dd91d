"""The one exception type users see: a bad input, reported as one line with exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A bad input: the message names the input, what was expected and what was given."""

    exit_code = 2


def did_you_mean(given: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(given, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, given: str, choices: Iterable[str]) -> UserError:
    choices = sorted(choices)
    return UserError(
        f"unknown {kind} '{given}'{did_you_mean(given, choices)}; available: {', '.join(choices)}"
    )
