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


def unknown_name_message(kind: str, name: object, names: list[str]) -> str:
    """``unknown model 'vaeg' — did you mean 'vae'? available: gan, vae, vaegan``."""
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} available: {', '.join(names)}"


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
        return unknown_name_message(self.kind, name, self.names())

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
