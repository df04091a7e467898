"""A name -> object registry (timm/USB style) whose failures name the culprit."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from ulfine.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, known: list[str]) -> str:
    """' (did you mean X?)' when a known name is close to ``name``, else ''."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps names to classes or functions; registering a name twice or asking for an
    unknown one raises, listing what exists, so a typo never fails silently."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{suggest(name, self.names())}; "
                f"known: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
