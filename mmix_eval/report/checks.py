"""The report's CI gate: checks like 'manifold_mixup.rotation20 >= vanilla.rotation20' on the table's means.
Imports no torch."""

from __future__ import annotations

import math

from mmix_eval.errors import ParamError, UserError, mention
from mmix_eval.report.table import Table

OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}


def parse_check(check: str) -> tuple[object, str, object]:
    """'manifold_mixup.rotation20 >= vanilla.rotation20' -> (side, op, side), a side being a number or
    (method, condition, metric); metric acc unless 'method.condition:metric'. A method (or label) holding dots,
    spaces or operators is quoted: '"manifold_mixup α=0.2".rotation20 >= vanilla.rotation20' (double or single
    quotes). Syntax only: what the methods and conditions are is checked against the results (or, by bench,
    against its methods)."""
    expected = (
        f"{mention('check')} '{check}': expected 'LEFT OP RIGHT' with OP one of >=, <=, >, <, == (quote a column label "
        f"holding spaces, dots or operators: '\"my method α=0.2\".rotation20 >= vanilla.rotation20')"
    )
    i, quote, found = 0, None, None
    while i < len(check):  # the first operator outside quotes
        c = check[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "<>=!":
            found = i
            break
        i += 1
    if quote or found is None:
        raise UserError(expected + ("" if not quote else f" (an unclosed {quote} quote)"))
    op = check[found : found + 2] if check[found : found + 2] in OPS else check[found]
    if op not in OPS or check[found + len(op) :].lstrip().startswith(("=", "<", ">")):
        raise UserError(expected)
    left, right = check[:found].strip(), check[found + len(op) :].strip()
    if not left or not right:
        raise UserError(expected)

    def side(text: str):
        try:
            return float(text)
        except ValueError:
            return parse_target(text, f"{mention('check')} '{check}'", "or a number ")

    return side(left), op, side(right)


def parse_target(text: str, where: str, alternative: str = "") -> tuple[str, str, str]:
    """'METHOD.CONDITION[:METRIC]' -> (method, condition, metric or 'acc'); a method holding dots, spaces or
    operators is quoted ('"manifold_mixup α=0.2".rotation20'). What a check's side and a primary comparison name."""
    text = text.strip()
    if text[:1] in "\"'":
        end = text.find(text[0], 1)
        if end < 0:
            raise UserError(f"{where}: an unclosed {text[0]} quote in '{text}'")
        method, rest = text[1:end], text[end + 1 :]
        dot = rest[:1] == "."
        rest = rest[1:]
    else:
        method, dot, rest = text.partition(".")
    condition, _, metric = rest.partition(":")
    if not dot or not condition or not method:
        raise UserError(
            f"{where}: expected METHOD.CONDITION[:METRIC] {alternative}, got '{text}' "
            f'(quote a method holding dots or spaces: "my method α=0.2".rotation20)'
        )
    return method, condition, metric or "acc"


def run_checks(table: Table, checks: list[str]) -> list[tuple[str, bool, str]]:
    """Evaluate gates like 'manifold_mixup.rotation20 >= vanilla.rotation20' (means; metric acc unless
    'method.condition:metric'; either side may be a number). Returns (check, passed, explanation)."""
    index: dict = {}
    for i, r in enumerate(table.rows):
        index.setdefault((r.condition, r.metric), i)

    def value(side, check: str) -> float:
        if isinstance(side, float):
            return side
        method, condition, metric = side
        matches = [m for m in table.methods if m == method] or [m for m in table.methods if table.info[m][0] == method]
        if len(matches) != 1:
            raise ParamError("check", f"method '{method}' expected one of {', '.join(table.methods)}", check)
        i = index.get((condition, metric))
        if i is None or (i, matches[0]) not in table.cells:
            known = ", ".join(dict.fromkeys(f"{r.condition}:{r.metric}" for r in table.rows))
            raise ParamError("check", f"no value for {condition}:{metric} of '{matches[0]}'; known: {known}", check)
        return table.cells[i, matches[0]].mean

    out = []
    for check in checks:
        left, op, right = parse_check(check)
        try:
            a, b = value(left, check), value(right, check)
        except UserError as e:  # a check that names nothing in these results fails; the report is still written
            out.append((check, False, e.detail if isinstance(e, ParamError) and e.param == "check" else str(e)))
            continue
        if not (math.isfinite(a) and math.isfinite(b)):  # a NaN compares false either way: say why it fails
            out.append((check, False, f"n/a: {a:.4f} {op} {b:.4f} compares a value that is not finite"))
            continue
        out.append((check, OPS[op](a, b), f"{a:.4f} {op} {b:.4f}"))
    return out


def check_columns(table: Table, checks: list[str]) -> None:
    """Every method a check names is exactly one column of the table (its label, or the method's name): a
    check naming no column, or several, is bad input, refused before anything is written."""
    for check in checks:
        for side in parse_check(check)[::2]:
            if isinstance(side, float):
                continue
            matches = [m for m in table.methods if m == side[0]] or [
                m for m in table.methods if table.info[m][0] == side[0]
            ]
            if len(matches) != 1:
                quote = (
                    f'; a column label with spaces or dots is quoted: "{side[0]}.{side[1]}" is read as column '
                    f"'{side[0]}', so write '\"LABEL\".{side[1].rsplit('.', 1)[-1]}'"
                    if not matches and (" " in side[0] or "." in side[1])
                    else ""
                )
                raise ParamError(
                    "check",
                    f"method '{side[0]}' expected one column of the report "
                    f"({', '.join(table.methods)}), got {'none' if not matches else 'several: ' + ', '.join(matches)}"
                    f"{quote}",
                    check,
                )
