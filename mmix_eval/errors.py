"""The one exception type users see: a bad input, reported as one line with exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# C0 and C1 controls (0x85 is a line break to str.splitlines, 0x9B a terminal's escape introducer) and the
# Unicode line and paragraph separators.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
MAX_MESSAGE = 2000  # characters: an echoed hostile value never floods a terminal or a log


def one_line(text: str) -> str:
    """Control characters (newlines, terminal escapes) shown as escapes; long text cut with a mark."""
    text = str(text).translate(_CONTROL)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + f"… ({len(text) - MAX_MESSAGE} more characters)"


class UserError(Exception):
    """A bad input: the message names the input, what was expected and what was given. Always one line,
    whatever the input held."""

    exit_code = 2

    def __init__(self, message: str = ""):
        super().__init__(one_line(message))


def did_you_mean(given: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close (case aside: CIFAR10 -> cifar10)."""
    choices = list(choices)
    same = [c for c in choices if str(c).lower() == str(given).lower()]
    close = same or difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, given: str, choices: Iterable[str]) -> UserError:
    choices = sorted(choices)
    return UserError(
        f"unknown {kind} '{given}'{did_you_mean(given, choices)}; available: {', '.join(choices)}"
    )
