"""A small generic registry: names to factories, filled on import, with 'did you mean' errors.

Anything registered here can also be reached by a lazy ``"package.module:attr"`` import path,
so a user's own model or method needs no packaging (see ``Registry.get``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mmix_eval.errors import UserError, unknown

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_points: str | None = None):
        self.kind = kind
        self.entry_points = entry_points  # package entry-point group, e.g. "mmix_eval.methods"
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
        plugin = self._entry_point(name)
        if plugin is not None:
            return plugin
        raise unknown(self.kind, name, [*self._items, *self._entry_point_names()])

    def _entry_point_names(self) -> list[str]:
        if not self.entry_points:
            return []
        from importlib.metadata import entry_points

        return [ep.name for ep in entry_points(group=self.entry_points)]

    def entry_point(self, name: str):
        """The object an installed package's entry point of this name gives, or None."""
        return self._entry_point(name)

    def _entry_point(self, name: str):
        if not self.entry_points:
            return None
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_points):
            if ep.name == name:
                try:
                    return ep.load()
                except Exception as e:  # a broken plugin package: say which
                    raise UserError(f"{self.kind} '{name}': entry point {ep.value} failed to load ({type(e).__name__}: {e})") from None
        return None

    def _import(self, path: str) -> T:
        module_name, _, attr = path.partition(":")
        cwd = os.getcwd()
        if "" not in sys.path and cwd not in sys.path:  # the current directory, as `python -m` has it
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UserError(f"{self.kind} '{path}': cannot import module '{module_name}' ({e}; looked in the current "
                            f"directory {cwd} and on the Python path)") from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise UserError(f"{self.kind} '{path}': module '{module_name}' has no attribute '{attr}'") from None

    def names(self) -> list[str]:
        return sorted({*self._items, *self._entry_point_names()})

    def describe(self, name: str) -> str:
        return self._help.get(name, "(plugin, from an installed package's entry point)" if name not in self._items else "")

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
