"""Name -> builder registries, in the style of mmengine and fairseq.

A config group option, its registry key and its ``name:`` field are the same string,
so ``model=vae`` on the command line finds ``MODELS["vae"]``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gentrain.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A typed mapping from names to builders that explains unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} available: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
OPTIMIZERS: Registry = Registry("optimizer")
LOGGERS: Registry = Registry("logger")
