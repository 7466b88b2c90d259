"""One registry for everything a user names: methods, backbones, datasets, protocols, experiments.

Each entry is declared where it is defined (`@METHODS.register("simclr")` above the class), so
`autossl list` and every "unknown name" error read the same table. A wrong name fails in one line
with the nearest valid name: `unknown method 'simclrr'; did you mean 'simclr'?`.
"""
from __future__ import annotations

import difflib
import sys
from typing import Any, Callable, Iterable, Iterator


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), sorted(set(choices)), n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ""


def _first_sentence(doc: str, width: int = 110) -> str:
    """The docstring's first sentence on one line, shortened to `width` characters."""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    if ". " in para:
        para = para[: para.index(". ") + 1]
    return para if len(para) <= width else para[: width - 3].rstrip() + "..."


class Registry:
    """Name -> object, with aliases (case-insensitive) and one-line errors."""

    def __init__(self, kind: str, hint: str = ""):
        self.kind, self.hint = kind, hint
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self._info: dict[str, str] = {}

    def register(self, name: str, obj: Any = None, *, aliases: Iterable[str] = (), info: str = "") -> Any:
        """`@REG.register("name")` as a decorator, or `REG.register("name", obj)`."""
        def add(o: Any) -> Any:
            key = name.lower()
            if key in self._entries and self._entries[key] is not o:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[key] = o
            module = sys.modules.get(getattr(o, "__module__", ""))  # a class without docstring: its module's
            doc = getattr(o, "__doc__", None) if isinstance(o, type) else None
            doc = doc or getattr(module, "__doc__", None) if isinstance(o, type) else doc
            self._info[key] = info or _first_sentence(doc or "")
            for a in aliases:
                self._aliases[a.lower()] = key
            return o
        return add if obj is None else add(obj)

    def canonical(self, name: str) -> str:
        key = str(name).lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise ValueError(f"unknown {self.kind} '{name}'{did_you_mean(key, self.names() + list(self._aliases))} "
                             f"(choose one of {', '.join(self.names())}{self.hint})")
        return key

    def get(self, name: str) -> Any:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        key = str(name).lower()
        return self._aliases.get(key, key) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._entries.items())

    def describe(self, name: str) -> str:
        return self._info.get(self.canonical(name), "")


METHODS = Registry("method")
BACKBONES = Registry("backbone", hint=", or any timm model name")
DATASETS = Registry("dataset")
PROTOCOLS = Registry("evaluation protocol")
EXPERIMENTS = Registry("experiment")
REGISTRIES: dict[str, Registry] = {"methods": METHODS, "backbones": BACKBONES, "datasets": DATASETS,
                                   "protocols": PROTOCOLS, "experiments": EXPERIMENTS}

