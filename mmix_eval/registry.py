"""One registration mechanism for every kind of plugin: names to objects, lazily.

A registry is a table of name -> "package.module:attr" (the built-ins, declared in ``mmix_eval.catalog``),
each replaced by its object once imported. A "module:attr" entry is imported on
first use, as lm-evaluation-harness's registry does, so listing names and their help imports nothing.
Besides its own names, a registry resolves any ``"module:attr"`` import path (a user's own file, no
packaging) and an installed package's entry point in its group (``entry_points``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from mmix_eval.errors import UserError, unknown

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(
        self, kind: str, entry_points: str | None = None, builtin: Mapping[str, tuple[str, str]] | None = None
    ):
        self.kind = kind
        self.entry_points = entry_points  # package entry-point group, e.g. "mmix_eval.methods"
        self._table: dict[str, T | str] = {name: path for name, (path, _) in (builtin or {}).items()}
        self._help: dict[str, str] = {name: help for name, (_, help) in (builtin or {}).items()}

    def get(self, name: str) -> T:
        """The object of a registered name, a ``module:attr`` path or an installed entry point."""
        if name in self._table:
            obj = self._table[name]
            if isinstance(obj, str):  # a built-in not imported yet
                obj = self._table[name] = self.load(obj)
            return obj
        if ":" in name:
            return self.load(name)
        plugin = self.entry_point(name)
        if plugin is not None:
            return plugin
        raise unknown(self.kind, name, self.names())

    def _entry_points(self) -> list:
        if not self.entry_points:
            return []
        import importlib.metadata  # 16 ms: loaded when installed plugins are looked up, not for --help

        return list(importlib.metadata.entry_points(group=self.entry_points))

    def _entry_point_names(self) -> list[str]:
        return [ep.name for ep in self._entry_points()]

    def entry_point(self, name: str):
        """The object an installed package's entry point of this name gives, or None."""
        for ep in self._entry_points():
            if ep.name == name:
                try:
                    return ep.load()
                except Exception as e:  # a broken plugin package: say which
                    raise UserError(
                        f"{self.kind} '{name}': entry point {ep.value} failed to load ({type(e).__name__}: {e})"
                    ) from None
        return None

    def instance(self, name: str, base: type, expected: str):
        """An instance of ``base`` for a name whose object is a subclass (instantiated) or an instance of it;
        anything else is a one-line error saying what was ``expected``."""
        obj = self.get(name)
        if isinstance(obj, type) and issubclass(obj, base):
            obj = obj()
        if not isinstance(obj, base):
            raise UserError(f"{self.kind} '{name}': expected {expected}, got {type(obj).__name__}")
        return obj

    def load(self, path: str) -> T:
        """Import "module:attr", from the current directory too (as ``python -m`` would)."""
        module_name, _, attr = path.partition(":")
        cwd = os.getcwd()
        if "" not in sys.path and cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UserError(
                f"{self.kind} '{path}': cannot import module '{module_name}' ({e}; looked in the current "
                f"directory {cwd} and on the Python path)"
            ) from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise UserError(f"{self.kind} '{path}': module '{module_name}' has no attribute '{attr}'") from None

    def imports_code(self, name: str) -> bool:
        """Whether resolving ``name`` would import a module the name itself gives (a ``module:attr`` path), not a
        built-in nor an installed entry point. The trust boundary (docs/reliability.md): code is imported only
        from names the user gives; a name read from a checkpoint, a record or a run folder that this is true of
        is refused."""
        return isinstance(name, str) and ":" in name and not self.known(name)

    def known(self, name: str) -> bool:
        """A built-in name or an installed entry point's (resolving it imports only installed code)."""
        return name in self._table or name in self._entry_point_names()

    def builtin(self) -> list[str]:
        """The names in the table, in the order declared (built-ins first)."""
        return list(self._table)

    def names(self) -> list[str]:
        return sorted({*self._table, *self._entry_point_names()})

    def describe(self, name: str) -> str:
        return self._help.get(
            name, "(plugin, from an installed package's entry point)" if name not in self._table else ""
        )

    def __contains__(self, name: str) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
