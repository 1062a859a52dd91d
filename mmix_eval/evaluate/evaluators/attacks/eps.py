"""Attack strengths as given (a list, or text like ``1,2,4,8`` or ``8/255``) to numbers in the attack's units."""

from __future__ import annotations

import math

from mmix_eval.options import OptionError

MAX_OFFICIAL_EPS = 10.0  # normalised units (data standard deviations); 0.03 is the official code's largest


def parse_eps(text, unit: str = "255", norm: str = "Linf") -> list[float]:
    """ε values in /255 pixel units, from a list or a comma-separated string. For Linf, an item may say its unit:
    ``8/255`` (the way RobustBench writes it) is 8 in /255 units whatever ``unit`` is; a bare number is in
    ``unit`` ('255': /255 pixel units, 'fraction': a fraction of the [0, 1] range, 0.1 = 25.5/255). A bare
    number strictly between 0 and 1 in /255 units is ambiguous (0.03 is far more often meant as 0.03 of the
    range than as 0.03/255): an error that shows both readings."""
    items = [s.strip() for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text or [])
    values = []
    for item in items:
        if isinstance(item, str) and "/" in item and norm == "Linf":
            num, _, den = item.partition("/")
            try:
                v = float(num) * 255.0 / float(den)
            except (ValueError, ZeroDivisionError):
                raise OptionError("eps", f"expected numbers or fractions like 8/255, got {item!r}") from None
        else:
            try:
                v = float(item)
            except (TypeError, ValueError):
                raise OptionError(
                    "eps", f"expected numbers in /255 units like 1,2,4,8 or fractions like 8/255, got {item!r}"
                ) from None
            if norm == "Linf" and unit == "fraction":
                if not 0 <= v <= 1:
                    raise OptionError(
                        "eps", f"expected fractions of the pixel range in [0, 1] (eps_unit fraction), got {v:g}"
                    )
                v = v * 255.0
            elif norm == "Linf" and 0 < v < 1:
                raise OptionError(
                    "eps",
                    f"{v:g} is ambiguous: {v:g}/255 in /255 pixel units, or {v:g} of the pixel "
                    f"range = {v * 255:g}/255; write {v * 255:g}/255 (or {v:g}/255), or give "
                    f"eps_unit fraction",
                )
        values.append(round(v, 10))
    bad = [v for v in values if not math.isfinite(v) or v < 0]
    if not values or bad:
        raise OptionError("eps", f"expected finite values >= 0 (in /255 pixel units), got {text!r}")
    return values


def parse_official_eps(text) -> list[float]:
    """ε values in the checkpoint's normalised units (the official code's 0.01, 0.03), from a list or a
    comma-separated string."""
    items = [s.strip() for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text or [])
    values = []
    for item in items:
        try:
            v = float(item)
        except (TypeError, ValueError):
            raise OptionError(
                "eps", f"expected numbers in normalised units like 0.01,0.03 for fgsm_official, got {item!r}"
            ) from None
        if not math.isfinite(v) or not 0 <= v <= MAX_OFFICIAL_EPS:
            raise OptionError(
                "eps",
                f"expected values in [0, {MAX_OFFICIAL_EPS:g}] (normalised units, data standard "
                f"deviations) for fgsm_official, got {item!r}",
            )
        values.append(round(v, 10))
    if not values:
        raise OptionError("eps", f"expected at least one value (normalised units) for fgsm_official, got {text!r}")
    return values
