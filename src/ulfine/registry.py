"""A name -> object registry (timm/USB style) whose failures name the culprit.

The component registries (methods, PEFT modules, strategies, datasets) are declared here, below
``config``, because ``config`` validates a component's options through the config dataclass its
registration declares. Each fills itself on first use by importing its package, whose
``__init__`` imports every module in it (``import_submodules``): adding a component is one new
file, with no import list to edit.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

from ulfine.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, known: list[str]) -> str:
    """' (did you mean X?)' when a known name is close to ``name``, else ''."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclasses.dataclass
class NoOptions:
    """The config of a component that declares none."""


def import_submodules(package: str) -> None:
    """Import every module of ``package`` (its ``__init__`` calls this), so each registers itself."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    """Maps names to classes or functions, each with the dataclass of its options; registering a
    name twice or asking for an unknown one raises, listing what exists, so a typo never fails
    silently. ``package``: the module whose import registers the entries (imported on first use).
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._configs: dict[str, type] = {}

    def register(self, name: str, config: type | None = None) -> Callable[[T], T]:
        """Decorator; ``config`` is the dataclass of the component's options (none: NoOptions)."""
        if config is not None and not dataclasses.is_dataclass(config):
            raise TypeError(f"{self.kind} '{name}': config must be a dataclass, got {config!r}")

        def decorator(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            self._configs[name] = config or NoOptions
            return obj

        return decorator

    def _load(self) -> None:
        if self.package is not None:
            importlib.import_module(self.package)

    def get(self, name: str) -> T:
        self._check(name)
        return self._items[name]

    def config(self, name: str) -> type:
        """The options dataclass of ``name``."""
        self._check(name)
        return self._configs[name]

    def _check(self, name: str) -> None:
        if name not in self._items:
            self._load()
        if name not in self._items:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{suggest(name, self.names())}; "
                f"known: {', '.join(self.names())}"
            )

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


# The registries whose entries carry options (see the module docstring).
METHODS: Registry[Any] = Registry("method", "ulfine.methods")
PEFT: Registry[Any] = Registry("peft", "ulfine.models.peft")
STRATEGIES: Registry[Any] = Registry("strategy", "ulfine.models.encoder")
DATASETS: Registry[Any] = Registry("dataset", "ulfine.data.datasets")
