"""The first layouts, read in one place. Version 1 kept a method's alpha, eligible and loss as keys of their own
(in the configuration's ``method`` section, a bench's method entries, a checkpoint's method record and each
result record); everything now keeps a method's settings together (``method.kwargs``, ``settings``,
``method_settings``) whatever the method. Imports no torch."""

from __future__ import annotations

# Version 1's method keys, with the value that meant "the method's default" (dropped when read).
V1_METHOD_KEYS = {"alpha": None, "eligible": None, "loss": "bce_softmax"}


def method_record(m: dict) -> dict:
    """A checkpoint's method record in the current layout: the first layout kept the settings beside the
    name ({name, loss, alpha, ...}); now they are under 'settings'."""
    if not isinstance(m, dict) or "settings" in m:
        return m
    return {
        "name": m.get("name"),
        "settings": {k: v for k, v in m.items() if k not in ("name", "source_sha256")},
        **({"source_sha256": m["source_sha256"]} if "source_sha256" in m else {}),
    }


def record_method_settings(row: dict) -> dict:
    """A version-1 result record's flat method columns as its ``method_settings``."""
    return {k: row[k] for k in V1_METHOD_KEYS if row.get(k) is not None}
