"""The one exception type users see: a bad input, reported as one line with exit code 2."""

from __future__ import annotations

import difflib
import re
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


# A parameter mentioned inside a message: the library shows its name, the command line its flag (cli/flags.py).
_MENTION_OPEN, _MENTION_CLOSE = "\ue000", "\ue001"
_MENTIONED = re.compile(f"{_MENTION_OPEN}([a-z][a-z0-9_]*){_MENTION_CLOSE}")


def mention(param: str) -> str:
    """A parameter named inside a ``ParamError`` message (``f"pass {mention('download')} to fetch them"``)."""
    return f"{_MENTION_OPEN}{param}{_MENTION_CLOSE}"


class UserError(Exception):
    """A bad input: the message names the input, what was expected and what was given. Always one line,
    whatever the input held."""

    exit_code = 2

    def __init__(self, message: str = ""):
        self.template = str(message)
        super().__init__(one_line(self.render(str)))

    def __reduce__(self):
        # rebuilt whole in a parent process (a bench worker's error): its parameters, not only its library text
        return (_restore, (type(self), self.args, dict(self.__dict__)))

    def render(self, name_of) -> str:
        """The message with each parameter it mentions (``mention``) shown as ``name_of(param)``: the library
        shows parameter names, the command line its flags (``mmix_eval/cli/flags.py``)."""
        return self.body(name_of)

    def body(self, name_of=str) -> str:
        """The message, each well-formed mention shown as ``name_of(param)``; any other text (a path that happens to
        hold the marker characters) exactly as given."""
        return _MENTIONED.sub(lambda m: name_of(m.group(1)), self.template)


def _restore(cls, args: tuple, state: dict) -> UserError:
    e = Exception.__new__(cls)
    e.args = args
    e.__dict__.update(state)
    return e


class ParamError(UserError):
    """A bad value of one named parameter. ``param``: its name (``ckpt``; two as ``mean/std``), ``value``: the value
    given, shown quoted after it (optional), ``message``: what was expected and what was got, mentioning other
    parameters with ``mention``. The library shows parameter names (``ckpt 'x.pt': expected ...``); the command
    line shows its flags (``--ckpt 'x.pt': expected ...``), mapped in one place (``mmix_eval/cli/flags.py``)."""

    def __init__(self, param: str, message: str, value: object = None):
        self.param, self.value = param, value
        super().__init__(message)

    def render(self, name_of) -> str:
        """The message with each parameter (this one and those mentioned) shown as ``name_of(param)``."""
        head = "/".join(name_of(p) for p in self.param.split("/"))
        if self.value is not None:
            head += f" '{self.value}'"
        return f"{head}: {self.body(name_of)}"

    @property
    def detail(self) -> str:
        return self.body()


def did_you_mean(given: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close (case aside: CIFAR10 -> cifar10)."""
    choices = list(choices)
    same = [c for c in choices if str(c).lower() == str(given).lower()]
    close = same or difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, given: str, choices: Iterable[str]) -> UserError:
    choices = sorted(choices)
    return UserError(f"unknown {kind} '{given}'{did_you_mean(given, choices)}; available: {', '.join(choices)}")
