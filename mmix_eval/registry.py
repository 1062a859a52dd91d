"""A small generic registry: names to factories, filled on import, with 'did you mean' errors.

Anything registered here can also be reached by a lazy ``"package.module:attr"`` import path,
so a user's own model or method needs no packaging (see ``Registry.get``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mmix_eval.errors import UserError, unknown

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return deco

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return self._import(name)
        raise unknown(self.kind, name, self._items)

    def _import(self, path: str) -> T:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UserError(f"{self.kind} '{path}': cannot import module '{module_name}' ({e})") from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise UserError(f"{self.kind} '{path}': module '{module_name}' has no attribute '{attr}'") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self, name: str) -> str:
        return self._help.get(name, "")

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
